#!/usr/bin/env bash
# Every benchmark of docs/PERFORMANCE.md, one after the other (~8 minutes on the 2-core machine); JSON into docs/perf/.
# Needs: wrk (apt-get install -y wrk) and, for the LiteLLM-proxy rows, the benchmark venv (see docs/PERFORMANCE.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false
out="${1:-docs/perf}"
.venv/bin/python bench/overhead.py --json "$out/overhead.json"
.venv/bin/python bench/bench_routing.py --json "$out/routing.json"
.venv/bin/python bench/concurrency.py --json "$out/concurrency.json"
.venv/bin/python bench/store.py --json "$out/store.json"
.venv/bin/python bench/workers.py --quiet-wait 180 --json "$out/workers.json"
