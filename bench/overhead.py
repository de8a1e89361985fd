"""What the gateway adds to a call, beside LiteLLM's own proxy, against a zero-latency upstream; one run, one table.

    .venv/bin/python bench/overhead.py --json docs/perf/overhead.json

Starts on 127.0.0.1: the raw upstream (bench/raw_upstream.py), `autoroute serve` over bench/overhead.yaml, and
LiteLLM's proxy (`litellm --config`, from the benchmark venv given by --litellm, see docs/PERFORMANCE.md) forwarding to
the same upstream. Then, at each concurrency, for each target in turn and `--repeats` times over (interleaved, so a
burst of load elsewhere on the machine hits all targets alike): wrk posts chat completions for `--seconds` over
keep-alive connections. Targets: direct (wrk -> upstream), autoroute with model="auto" (default cascade on a mix of
prompts), autoroute with a named model, LiteLLM's proxy with a named model. Reported per target: p50/p99 latency,
added latency over direct, requests/s, and CPU ms per request of the server's process tree (from /proc).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

DEFAULT_LITELLM = Path("/tmp/autoroute-bench-venv/bin/litellm")
NAMED = "coder"
"""The named model of the autoroute and LiteLLM-proxy rows: the same LiteLLM model string (openai/coder) on both, as
LiteLLM's own cost per call depends on the name (its price-map lookups: openai/mini costs ~1.5x openai/coder)."""
PROMPTS = [
    "Write a Python function that merges two sorted lists.",
    "Why does my for loop never end? for i in range(10): i -= 1",
    "Solve 3x + 5 = 20 for x.",
    "Translate 'good morning, how are you?' into French.",
    "Summarize the plot of Hamlet in two sentences.",
    "What is the capital of Australia?",
    "Write a short poem about autumn leaves.",
    "Plan a three-day trip to Kyoto on a small budget.",
]
LITELLM_CONFIG = """model_list:
  - model_name: coder
    litellm_params: {{model: openai/coder, api_base: "{upstream}", api_key: "no-key"}}
general_settings:
  dangerously_permit_weak_or_unset_master_key: true
litellm_settings:
  telemetry: false
"""


def bodies(model: str) -> list[dict[str, Any]]:
    return [{"model": model, "messages": [{"role": "user", "content": p}]} for p in PROMPTS]


def measure(url: str, pid: int | None, upstream_pid: int, body: list[dict[str, Any]], connections: int,
            seconds: float, workdir: Path) -> dict[str, Any]:  # fmt: skip
    cpu0 = h.cpu_seconds(pid) if pid else 0.0
    up0 = h.cpu_seconds(upstream_pid)
    result = h.run_wrk(url, body, connections=connections, seconds=seconds, workdir=workdir)
    n = max(1, result["requests"])
    if pid:
        result["cpu_ms_per_req"] = (h.cpu_seconds(pid) - cpu0) / n * 1000
    result["upstream_cpu_ms_per_req"] = (h.cpu_seconds(upstream_pid) - up0) / n * 1000
    return result


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["errors"] = sum(r["errors"] for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    out["runs"] = runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per target and repeat")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each target's first run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--litellm", type=Path, default=DEFAULT_LITELLM, help="the `litellm` command of the bench venv")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not h.wrk_available():
        sys.exit("wrk is needed: apt-get install -y wrk")
    results: dict[str, Any] = {"machine": h.machine(), "settings": {k: str(v) for k, v in vars(args).items()}}

    with h.Servers() as servers:
        work = servers.workdir
        up_port, ar_port, ll_port = h.free_port(), h.free_port(), h.free_port()
        upstream = servers.start("upstream", [h.PYTHON, "bench/raw_upstream.py", "--port", str(up_port)], up_port, "/health")
        upstream_v1 = f"{upstream.url}/v1"
        config = work / "autoroute.yaml"
        config.write_text((h.REPO / "bench" / "overhead.yaml").read_text().replace("{UPSTREAM}", upstream_v1))
        data_dir = h.prepare_data_dir()
        started = time.perf_counter()
        gateway = servers.start(
            "autoroute",
            [h.PYTHON, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(ar_port), "--data-dir",
             str(data_dir), "--log-level", "warning", "--no-reload"],
            ar_port, "/health/readiness", ready=h.readiness_complete,
        )  # fmt: skip
        results["autoroute_ready_s"] = time.perf_counter() - started
        targets: list[tuple[str, str, int | None, list[dict[str, Any]]]] = [
            ("direct", f"{upstream_v1}/chat/completions", None, bodies(NAMED)),
            ("autoroute auto", f"{gateway.url}/v1/chat/completions", gateway.pid, bodies("auto")),
            ("autoroute named", f"{gateway.url}/v1/chat/completions", gateway.pid, bodies(NAMED)),
        ]
        if args.litellm.exists():
            litellm_config = work / "litellm.yaml"
            litellm_config.write_text(LITELLM_CONFIG.format(upstream=upstream_v1))
            litellm = servers.start(
                "litellm", [str(args.litellm), "--config", str(litellm_config), "--port", str(ll_port)], ll_port,
                "/health/liveliness", extra_env={"LITELLM_TELEMETRY": "False"},
            )  # fmt: skip
            targets.append(("litellm proxy", f"{litellm.url}/v1/chat/completions", litellm.pid, bodies(NAMED)))
        else:
            print(f"{args.litellm} not found: LiteLLM's proxy is left out (see docs/PERFORMANCE.md to install it)")
        for name, url, _, body in targets:  # every path answers, and answers 200, before anything is timed
            status, _, raw = h.http_post(url, body[0])
            if status != 200:
                raise RuntimeError(f"{name}: {status} {raw[:300]!r}")

        rows: dict[str, dict[str, Any]] = {}
        for connections in args.concurrency:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in targets}
            for name, url, _, body in targets:
                h.run_wrk(url, body, connections=connections, seconds=args.warmup, workdir=work)
            for _ in range(args.repeats):
                for name, url, pid, body in targets:
                    runs[name].append(measure(url, pid, upstream.pid, body, connections, args.seconds, work))
            for name in runs:
                rows[f"{name} c={connections}"] = median_of(runs[name])
        results["gateway_peak_rss_mb"] = h.peak_rss_mb(gateway.pid)
        results["layers"] = classification_layers(data_dir)
    results["rows"] = rows
    results["ratios"] = ratios(rows, args.concurrency)
    print(table(results, args.concurrency))
    h.write_json(args.json, results)


def classification_layers(data_dir: Path) -> dict[str, int]:
    """Which cascade layer decided the `auto` requests of the run (from the gateway's own records)."""
    try:
        conn = sqlite3.connect(f"file:{data_dir / 'autoroute.db'}?mode=ro", uri=True, timeout=5)
        rows = conn.execute(
            "SELECT classification_layer, COUNT(*) FROM routing_decisions WHERE requested_model = 'auto' GROUP BY 1"
        ).fetchall()
        conn.close()
    except sqlite3.Error as exc:
        return {"error": str(exc)}  # type: ignore[dict-item]
    return {layer: n for layer, n in rows}


def ratios(rows: dict[str, dict[str, Any]], levels: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in levels:
        direct, ll = rows.get(f"direct c={c}"), rows.get(f"litellm proxy c={c}")
        for name in ("autoroute auto", "autoroute named"):
            ar = rows.get(f"{name} c={c}")
            if ar is None or direct is None:
                continue
            ar["added_p50_ms"] = ar["p50_ms"] - direct["p50_ms"]
            ar["added_p99_ms"] = ar["p99_ms"] - direct["p99_ms"]
            if ll is None:
                continue
            ll["added_p50_ms"] = ll["p50_ms"] - direct["p50_ms"]
            ll["added_p99_ms"] = ll["p99_ms"] - direct["p99_ms"]
            out[f"{name} / litellm proxy c={c}"] = {
                "added_p50": ar["added_p50_ms"] / ll["added_p50_ms"],
                "added_p99": ar["added_p99_ms"] / ll["added_p99_ms"],
                "rps": ar["rps"] / ll["rps"],
                "cpu_per_req": ar["cpu_ms_per_req"] / ll["cpu_ms_per_req"],
            }
    return out


def table(r: dict[str, Any], levels: list[int]) -> str:
    m = r["machine"]
    lines = [
        f"zero-latency upstream, wrk -t1, {m['cpus']} CPUs, load average at start {m['load_avg_1m_at_start']:.2f}; "
        f"median of {r['settings']['repeats']} runs of {r['settings']['seconds']} s per row",
        f"{'target':<22}{'c':>4}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}{'+p99 ms':>9}{'CPU ms/req':>12}"
        f"{'errors':>8}",
    ]  # fmt: skip
    for c in levels:
        for key, row in r["rows"].items():
            if not key.endswith(f" c={c}"):
                continue
            name = key.rsplit(" c=", 1)[0]
            added = (f"{row['added_p50_ms']:>9.2f}{row['added_p99_ms']:>9.2f}" if "added_p50_ms" in row
                     else f"{'-':>9}{'-':>9}")  # fmt: skip
            cpu = f"{row['cpu_ms_per_req']:>12.2f}" if "cpu_ms_per_req" in row else f"{'-':>12}"
            lines.append(f"{name:<22}{c:>4}{row['rps']:>9.1f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{added}{cpu}"
                         f"{row['errors']:>8}")  # fmt: skip
    for key, q in r["ratios"].items():
        lines.append(f"{key}: added p50 {q['added_p50']:.2f}x, added p99 {q['added_p99']:.2f}x, req/s {q['rps']:.2f}x, "
                     f"CPU/req {q['cpu_per_req']:.2f}x")  # fmt: skip
    lines.append(f"auto requests by deciding classifier layer: {json.dumps(r['layers'])}; "
                 f"gateway peak RSS {r['gateway_peak_rss_mb']:.0f} MiB, ready in {r['autoroute_ready_s']:.1f} s")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
