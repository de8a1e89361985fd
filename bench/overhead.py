"""What the gateway adds to a call, beside LiteLLM's own proxy, against a zero-latency upstream, on real prompts.

    .venv/bin/python bench/overhead.py --json docs/perf/overhead.json

Starts on 127.0.0.1: the raw upstream (bench/raw_upstream.py), `autoroute serve` over bench/overhead.yaml, and
LiteLLM's proxy (`litellm --config`, from the benchmark venv given by --litellm, see docs/PERFORMANCE.md) forwarding to
the same upstream. The prompts are the real-traffic test split (bench/real_prompts.py: 906 prompts, 31 languages,
user requests and benchmark formats, as written), shuffled once with a fixed seed and cut into one disjoint slice per
concurrency, so no prompt is sent twice to the same server in a run and no cache answers a repeat. At each
concurrency every target gets the slice once (bench/_client.py: each body POSTed exactly once, a time cap per pass):
direct (client -> upstream), autoroute with model="auto", autoroute with a named model, LiteLLM's proxy with the same
named model; the bodies differ only in the model name. Reported per target: p50/p90/p99 latency, added latency over
direct, requests/s, errors, CPU ms per request of the server's process tree (from /proc); for `auto`, from the
gateway's own records, how many requests went past the cheap classifier layers and waited for the transformer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _client  # noqa: E402
import _harness as h  # noqa: E402
import real_prompts  # noqa: E402

DEFAULT_LITELLM = next((p for p in (Path(".venv/bin/litellm"), Path("/tmp/autoroute-bench-venv/bin/litellm")) if p.exists()),
                      Path(".venv/bin/litellm"))
"""The project venv has `litellm[proxy]` (the test extra), the same version the gateway uses."""
NAMED = "coder"
"""The named model of the autoroute and LiteLLM-proxy rows: the same LiteLLM model string (openai/coder) on both, as
LiteLLM's own cost per call depends on the name (its price-map lookups: openai/mini costs ~1.5x openai/coder)."""
SEED = 20261122
TRANSFORMER_LAYERS = frozenset({"transformer_knn", "torch_head"})
SKIPPED = "skipped: no embedding"
"""How a layer that needs the transformer embedding is recorded when the request went on without one."""
TARGETS = {"added_p50": 0.4, "rps": 2.0}
LITELLM_CONFIG = """model_list:
  - model_name: coder
    litellm_params: {{model: openai/coder, api_base: "{upstream}", api_key: "no-key"}}
general_settings:
  dangerously_permit_weak_or_unset_master_key: true
litellm_settings:
  telemetry: false
"""


def prompt_slices(levels: list[int], per_level: int | None) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """One disjoint slice of the shuffled test split per concurrency, and distinct train-split texts for warm-up."""
    rows = real_prompts.load("all")
    test = [r for r in rows if r["split"] == "test"]
    warm = [r["text"] for r in rows if r["split"] == "train"]
    random.Random(SEED).shuffle(test)
    random.Random(SEED).shuffle(warm)
    size = per_level or len(test) // len(levels)
    if size * len(levels) > len(test):
        sys.exit(f"--per-level {size} x {len(levels)} concurrencies needs more than the {len(test)} test prompts")
    return [test[i * size : (i + 1) * size] for i in range(len(levels))], warm


def mix(rows: list[dict[str, Any]]) -> dict[str, Any]:
    chars = [len(r["text"]) for r in rows]
    return {
        "prompts": len(rows), "distinct": len({r["text"] for r in rows}),
        "chars_mean": sum(chars) / len(chars), "chars_p50": h.percentile(chars, 50),
        "chars_p99": h.percentile(chars, 99), "chars_max": max(chars),
        "non_english": sum(r["language"] != "en" for r in rows),
        "languages": dict(Counter(r["language"] for r in rows).most_common()),
        "formats": dict(Counter(r["format"] for r in rows).most_common()),
        "tasks": dict(Counter(r["task"] for r in rows).most_common()),
    }  # fmt: skip


def bodies(model: str, texts: list[str]) -> list[dict[str, Any]]:
    return [{"model": model, "messages": [{"role": "user", "content": t}]} for t in texts]


def measure(url: str, pid: int | None, upstream_pid: int, body: list[dict[str, Any]], connections: int,
            time_cap_s: float) -> tuple[dict[str, Any], list[float | None], list[str | None]]:  # fmt: skip
    cpu0 = h.cpu_seconds(pid) if pid else 0.0
    up0 = h.cpu_seconds(upstream_pid)
    done = _client.run_once(url, body, connections=connections, time_cap_s=time_cap_s,
                            capture="x-autoroute-request-id")  # fmt: skip
    result = done.summary()
    n = max(1, result["requests"])
    if pid:
        result["cpu_ms_per_req"] = (h.cpu_seconds(pid) - cpu0) / n * 1000
    result["upstream_cpu_ms_per_req"] = (h.cpu_seconds(upstream_pid) - up0) / n * 1000
    return result, done.latency_ms, done.headers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--per-level", type=int, help="test prompts per concurrency (default: the split shared out)")
    parser.add_argument("--warmup", type=int, default=64, help="train-split prompts per target before each level")
    parser.add_argument("--time-cap", type=float, default=120.0, help="seconds at most per target and level")
    parser.add_argument("--litellm", type=Path, default=DEFAULT_LITELLM, help="the `litellm` command of the bench venv")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    slices, warm = prompt_slices(args.concurrency, args.per_level)
    command = shlex.join([".venv/bin/python", "bench/overhead.py", *sys.argv[1:]])
    revision = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=h.REPO, capture_output=True, text=True, check=False
    )
    results: dict[str, Any] = {"command": command, "revision": revision.stdout.strip(), "machine": h.machine(),
                               "settings": {k: str(v) for k, v in vars(args).items()},
                               "prompt_mix": {"all": mix([r for s in slices for r in s])}}  # fmt: skip
    for c, chosen in zip(args.concurrency, slices, strict=True):
        results["prompt_mix"][f"c={c}"] = mix(chosen)
    wall = time.perf_counter()

    with h.Servers() as servers:
        work = servers.workdir
        up_port, ar_port, ll_port = h.free_port(), h.free_port(), h.free_port()
        upstream = servers.start(
            "upstream", [h.PYTHON, "bench/raw_upstream.py", "--port", str(up_port)], up_port, "/health"
        )
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
        chat = "/v1/chat/completions"
        targets: list[tuple[str, str, int | None, str]] = [
            ("direct", upstream_v1 + "/chat/completions", None, NAMED),
            ("autoroute auto", gateway.url + chat, gateway.pid, "auto"),
            ("autoroute named", gateway.url + chat, gateway.pid, NAMED),
        ]
        if args.litellm.exists():
            litellm_config = work / "litellm.yaml"
            litellm_config.write_text(LITELLM_CONFIG.format(upstream=upstream_v1))
            litellm = servers.start(
                "litellm", [str(args.litellm), "--config", str(litellm_config), "--port", str(ll_port)], ll_port,
                "/health/liveliness", extra_env={"LITELLM_TELEMETRY": "False"},
            )  # fmt: skip
            targets.append(("litellm proxy", litellm.url + chat, litellm.pid, NAMED))
        else:
            print(f"{args.litellm} not found: LiteLLM's proxy is left out (see docs/PERFORMANCE.md to install it)")
        for name, url, _, model in targets:  # every path answers, and answers 200, before anything is timed
            status, _, raw = h.http_post(url, bodies(model, warm[:1])[0])
            if status != 200:
                raise RuntimeError(f"{name}: {status} {raw[:300]!r}")

        rows: dict[str, dict[str, Any]] = {}
        auto_latency: dict[str, tuple[int, float]] = {}
        for level, (connections, prompts) in enumerate(zip(args.concurrency, slices, strict=True)):
            texts = [r["text"] for r in prompts]
            warm_texts = warm[1 + level * args.warmup : 1 + (level + 1) * args.warmup]
            for name, url, pid, model in targets:
                _client.run_once(url, bodies(model, warm_texts), connections=connections, time_cap_s=30)
                load = os.getloadavg()[0]
                row, latency, ids = measure(url, pid, upstream.pid, bodies(model, texts), connections, args.time_cap)
                rows[f"{name} c={connections}"] = row | {"load_avg_1m_before": load}
                if name == "autoroute auto":
                    auto_latency |= {
                        i: (connections, x) for i, x in zip(ids, latency, strict=True) if i and x is not None
                    }
                print(f"c={connections} {name}: {row['requests']} requests, {row['rps']:.1f} req/s, "
                      f"p50 {row['p50_ms']:.2f} ms, errors {row['errors']}", flush=True)  # fmt: skip
        results["gateway_peak_rss_mb"] = h.peak_rss_mb(gateway.pid)
        results["transformer"] = transformer_share(data_dir, auto_latency)
    results["wall_s"] = time.perf_counter() - wall
    results["rows"] = rows
    results["ratios"] = ratios(rows, args.concurrency)
    print(table(results, args.concurrency))
    h.write_json(args.json, results)


def transformer_share(data_dir: Path, latency: dict[str, tuple[int, float]]) -> dict[str, Any]:
    """From the gateway's own records of the measured `auto` requests: which layer decided, and how many went past
    layers 1-2 and so waited for the transformer embedding (answered in time, or given up after the timeout)."""
    from router_plugins.datadir import DataDir

    deadline = time.monotonic() + 15  # the recorder writes in batches: wait, bounded, for the last ones
    while True:
        try:
            conn = sqlite3.connect(f"file:{DataDir(data_dir).db}?mode=ro", uri=True, timeout=5)
            found = conn.execute(
                "SELECT request_id, classification_layer, layer_attempts FROM routing_decisions "
                "WHERE requested_model = 'auto'"
            ).fetchall()
            conn.close()
        except sqlite3.Error as exc:
            return {"error": str(exc)}
        found = [r for r in found if r[0] in latency]
        if len(found) >= len(latency) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    decided: Counter[str] = Counter()
    paths: dict[str, list[float]] = {}
    for request_id, layer, attempts_json in found:
        attempts = json.loads(attempts_json or "[]")
        decided[layer] += 1
        skipped = any(str(a.get("detail", "")).startswith(SKIPPED) for a in attempts)
        ran = any(a.get("layer") in TRANSFORMER_LAYERS and not str(a.get("detail", "")).startswith(SKIPPED)
                  for a in attempts)  # fmt: skip
        path = "transformer timed out" if skipped else "transformer answered" if ran else "cheap layers only"
        connections, ms = latency[request_id]
        paths.setdefault(f"c={connections} {path}", []).append(ms)
    n = len(found)
    waited = sum(len(v) for k, v in paths.items() if "transformer" in k)
    return {
        "auto_requests_measured": len(latency), "auto_requests_recorded": n,
        "waited_for_transformer": waited, "waited_share": waited / n if n else float("nan"),
        "decided_by_layer": dict(decided.most_common()),
        "latency_by_path": {k: {"requests": len(v), "p50_ms": h.percentile(v, 50), "p99_ms": h.percentile(v, 99)}
                            for k, v in sorted(paths.items())},
    }  # fmt: skip


def ratios(rows: dict[str, dict[str, Any]], levels: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in levels:
        direct, ll = rows.get(f"direct c={c}"), rows.get(f"litellm proxy c={c}")
        if direct is None:
            continue
        for name in ("autoroute auto", "autoroute named", "litellm proxy"):
            if (row := rows.get(f"{name} c={c}")) is not None:
                for pct in ("p50", "p90", "p99"):
                    row[f"added_{pct}_ms"] = row[f"{pct}_ms"] - direct[f"{pct}_ms"]
        if ll is None:
            continue
        for name in ("autoroute auto", "autoroute named"):
            ar = rows[f"{name} c={c}"]
            q = {
                "added_p50": ar["added_p50_ms"] / ll["added_p50_ms"],
                "added_p99": ar["added_p99_ms"] / ll["added_p99_ms"],
                "rps": ar["rps"] / ll["rps"],
                "cpu_per_req": ar["cpu_ms_per_req"] / ll["cpu_ms_per_req"],
            }
            q["met"] = {"added_p50": q["added_p50"] <= TARGETS["added_p50"], "rps": q["rps"] >= TARGETS["rps"]}
            out[f"{name} / litellm proxy c={c}"] = q
    return out


def table(r: dict[str, Any], levels: list[int]) -> str:
    m, p = r["machine"], r["prompt_mix"]["all"]
    lines = [
        (f"zero-latency upstream, {m['cpus']} CPUs, load average at start {m['load_avg_1m_at_start']:.2f}; "
         f"{p['prompts']} distinct real prompts (test split, {p['non_english']} non-English, {len(p['languages'])} "
         f"languages; chars mean {p['chars_mean']:.0f}, p50 {p['chars_p50']:.0f}, p99 {p['chars_p99']:.0f}), "
         f"one disjoint slice per concurrency, each prompt sent once per target"),
        (f"{'target':<18}{'c':>4}{'n':>5}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}"
         f"{'+p99 ms':>9}{'CPU ms/req':>11}{'errors':>7}"),
    ]  # fmt: skip
    for c in levels:
        for key, row in r["rows"].items():
            if not key.endswith(f" c={c}"):
                continue
            name = key.rsplit(" c=", 1)[0]
            added = (f"{row['added_p50_ms']:>9.2f}{row['added_p99_ms']:>9.2f}" if name != "direct"
                     else f"{'-':>9}{'-':>9}")  # fmt: skip
            cpu = f"{row['cpu_ms_per_req']:>11.2f}" if "cpu_ms_per_req" in row else f"{'-':>11}"
            lines.append(f"{name:<18}{c:>4}{row['requests']:>5}{row['rps']:>9.1f}{row['p50_ms']:>9.2f}"
                         f"{row['p90_ms']:>9.2f}{row['p99_ms']:>9.2f}{added}{cpu}{row['errors']:>7}")  # fmt: skip
    for key, q in r["ratios"].items():
        met = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in q["met"].items())
        lines.append(f"{key}: added p50 {q['added_p50']:.2f}x (target <= {TARGETS['added_p50']}), added p99 "
                     f"{q['added_p99']:.2f}x, req/s {q['rps']:.2f}x (target >= {TARGETS['rps']}), CPU/req "
                     f"{q['cpu_per_req']:.2f}x [{met}]")  # fmt: skip
    t = r["transformer"]
    if "error" not in t:
        lines.append(
            f"auto: {t['waited_for_transformer']} of {t['auto_requests_recorded']} requests "
            f"({t['waited_share']:.0%}) waited for the transformer; decided by {json.dumps(t['decided_by_layer'])}"
        )
        for g, v in t["latency_by_path"].items():
            lines.append(f"  {g:<28} {v['requests']:>4} requests, p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms")
    lines.append(f"gateway peak RSS {r['gateway_peak_rss_mb']:.0f} MiB, ready in {r['autoroute_ready_s']:.1f} s; "
                 f"measured in {r['wall_s']:.0f} s: {r['command']}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
