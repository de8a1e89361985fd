"""A bounded schemathesis run over every operation of the gateway's own /openapi.json, every check on.

The gateway serves a registry whose backends all answer (on the fake upstream) and wants a client key, so: any 5xx
is the gateway's bug; a request the document calls valid must be accepted (or be a documented 404), an invalid one
refused with a 4xx; auth must be enforced where the document says so; an undocumented method is a 405 with `Allow`;
and every answer must have a documented status, media type, headers and body, each event of a stream included.

Schemathesis runs as its CLI, in a subprocess: its pytest integration (`schemathesis.pytest.from_fixture`) does not
work with pytest 9 (it reads `request.node._nodeid`), and the CLI is also what one runs by hand to hunt further:
AUTOROUTE_FUZZ_EXAMPLES=500 AUTOROUTE_FUZZ_SEED=7 pytest tests/faults/test_contract_openapi.py. Bounded by a fixed
seed and a number of examples per operation (about 10 s of requests on two cores, plus the gateway's start).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Figures, Gateway, Upstream

pytest.importorskip("schemathesis")

CLIENT_KEY = "fuzz-client-key"
MAX_EXAMPLES = int(os.environ.get("AUTOROUTE_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("AUTOROUTE_FUZZ_SEED", "13"))
TIMEOUT_S = 300

# One model is free, of top quality and with a window past any generated `max_tokens` (hypothesis draws integers
# up to 2**128), so no `autoroute` constraint or token count the document allows can leave a request without one.
REGISTRY = """
models:
  - name: all-rounder
    litellm_params: {model: openai/all-rounder, api_base: "{UPSTREAM}", timeout_s: 10}
    input_cost_per_mtok: 0
    output_cost_per_mtok: 0
    context_window: 1000000000000000000000000000000000000000000000
    supports_vision: true  # every capability: a request is refused only for what the document says
    quality: {default: 1.0}
  - name: mini
    litellm_params: {model: openai/mini, api_base: "{UPSTREAM}", timeout_s: 10}
    input_cost_per_mtok: 0.15
    output_cost_per_mtok: 0.6
    quality: {default: 0.7}
auth: {api_key_envs: [FUZZ_CLIENT_KEY]}
router:
  circuit_breaker: {enabled: false}
  classifier:
    transformer_knn: {enabled: false}
    torch_head: {enabled: false}
storage: {prompt_text: truncated, flush_interval_ms: 50}
"""

SCHEMATHESIS_CONFIG = f"""
seed = {SEED}
[cache]
enabled = false
[generation]
max-examples = {MAX_EXAMPLES}
database = "none"
[phases.stateful]
enabled = false
[auth.openapi.bearerAuth]
bearer = "{CLIENT_KEY}"
"""


@pytest.fixture(scope="module")
def fuzz_gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return start_gateway(REGISTRY.replace("{UPSTREAM}", f"{upstream.url}/v1"), env={"FUZZ_CLIENT_KEY": CLIENT_KEY})


def test_contract_openapi(fuzz_gateway: Gateway, tmp_path: Path, figures: Figures) -> None:
    """`/openapi.json` describes the real bodies of chat, feedback, models and health; a bounded schemathesis run
    over every operation, every check on, finds no 5xx and no answer the document does not describe."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
        f"{fuzz_gateway.url}/openapi.json", "--checks", "all", "--workers", "1", "--no-color",
        "--output-sanitize", "false", "--warnings", "off",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-12000:] + "\n-- gateway log --\n" + fuzz_gateway.log.read_text()[-4000:]
    assert "Tested: 6" in report, report[-3000:]
    generated = re.search(r"(\d+) generated", report)
    figures["operations"], figures["examples"] = 6, int(generated.group(1)) if generated else 0
    figures.summary = "{examples} generated requests over {operations} operations: 0 failures, no 5xx"
