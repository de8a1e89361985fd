"""Requests per second at saturation with `autoroute serve --workers 2` against `--workers 1`, on the real prompt mix.

    .venv/bin/python bench/workers.py --json docs/perf/workers.json

Starts on 127.0.0.1 the raw upstream (bench/raw_upstream.py: a bare ASGI app in its own process, a fixed completion,
the least CPU an upstream can take), then `autoroute serve --workers 1` and `autoroute serve --workers 2` over
bench/overhead.yaml, each with its own data directory, both running for the whole benchmark. The prompts are the
whole real-prompt mix (bench/real_prompts.py: train and test splits, as written), shuffled once with a fixed seed: a
warm-up slice, then one disjoint slice per round. In each round both gateways get that round's slice once each
(bench/_client.py: each body POSTed exactly once over `--connections` keep-alive connections, a time cap per pass),
the 1-worker gateway first in odd rounds and second in even ones: no gateway sees a prompt twice (no cache answers a
repeat), and a drift in the machine's load falls on both alike. Nothing is pinned to a core: the two cores are shared
by the gateway's workers, the upstream, the client and whatever else runs on the machine.

Reported per pass: req/s, latency percentiles, errors, the requests each worker answered (its `x-autoroute-worker`
header), the CPU seconds of the gateway's process tree, of the upstream and of the client (this process), and the CPU
the rest of the machine used meanwhile (from /proc/stat: the other load on the two cores). The result is the median
over rounds of (2 workers' req/s) / (1 worker's req/s); the target (issue 15) is >= 1.7. On a machine shared with
other work, `--quiet-wait S` starts each pass only once the whole machine has used less than `QUIET_CORES` for 3 s
(or after S seconds), and the median over the quiet rounds (the rest of the machine under `QUIET_CORES` during both
passes) is printed beside the median over all rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
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
from overhead import mix  # noqa: E402

SEED = 20261130
TARGET = 1.7
QUIET_CORES = 0.25
"""A round is quiet when the rest of the machine used less than this many cores during both of its passes."""
WORKER_HEADER = "x-autoroute-worker"
DATA_DIRS = {1: h.BENCH_DATA, 2: h.BENCH_DATA.with_name(h.BENCH_DATA.name + "-workers")}


def machine_busy_s() -> float:
    """CPU seconds every core has spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / h.CLK_TCK


def wait_quiet(max_wait_s: float, window_s: float = 3.0) -> dict[str, float]:
    """Wait, at most `max_wait_s`, until the whole machine uses less than QUIET_CORES over `window_s` (the gateways
    are idle then: what is busy is other work). Returns how long it waited and the last window's busy cores."""
    started = time.monotonic()
    while True:
        before = machine_busy_s()
        time.sleep(window_s)
        busy = (machine_busy_s() - before) / window_s
        waited = time.monotonic() - started
        if busy < QUIET_CORES or waited >= max_wait_s:
            return {"waited_s": waited, "machine_cores_before": busy}


def bodies(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"model": "auto", "messages": [{"role": "user", "content": r["text"]}]} for r in rows]


def start_gateway(servers: h.Servers, workers: int, upstream_v1: str) -> h.Server:
    config = servers.workdir / f"autoroute-{workers}.yaml"
    config.write_text((h.REPO / "bench" / "overhead.yaml").read_text().replace("{UPSTREAM}", upstream_v1))
    port = h.free_port()
    gateway = servers.start(
        f"autoroute-workers-{workers}",
        [h.PYTHON, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port), "--data-dir",
         str(h.prepare_data_dir(DATA_DIRS[workers])), "--log-level", "warning", "--no-reload", "--workers",
         str(workers)],
        port, "/health/readiness", ready=h.readiness_complete,
    )  # fmt: skip
    ready: set[int] = set()
    deadline = time.monotonic() + 180
    while len(ready) < workers:  # each worker joins once ready: wait for all of them (a new connection per probe)
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(ready)} of {workers} workers ready:\n{gateway.tail()}")
        status, body = h.http_get(gateway.url + "/health/readiness")
        if status == 200 and h.readiness_complete(body):
            ready.add(int(json.loads(body)["worker"]["pid"]))
        time.sleep(0.05)
    return gateway


def measure(gateway: h.Server, upstream: h.Server, work: list[dict[str, Any]], connections: int,
            time_cap_s: float) -> dict[str, Any]:  # fmt: skip
    load = os.getloadavg()[0]
    gw0, up0 = h.cpu_seconds(gateway.pid), h.cpu_seconds(upstream.pid)
    client0, busy0 = time.process_time(), machine_busy_s()
    done = _client.run_once(gateway.url + "/v1/chat/completions", work, connections=connections,
                            time_cap_s=time_cap_s, capture=WORKER_HEADER)  # fmt: skip
    gateway_s = h.cpu_seconds(gateway.pid) - gw0
    upstream_s = h.cpu_seconds(upstream.pid) - up0
    client_s = time.process_time() - client0
    busy_s = machine_busy_s() - busy0
    row = done.summary()
    seconds = max(row["seconds"], 1e-9)
    n = max(1, row["requests"])
    row.update({
        "load_avg_1m_before": load,
        "by_worker": dict(Counter(v for v in done.headers if v).most_common()),
        "cpu_s": {"gateway": gateway_s, "upstream": upstream_s, "client": client_s,
                  "others": max(0.0, busy_s - gateway_s - upstream_s - client_s), "machine": busy_s},
        "cores_used": {"gateway": gateway_s / seconds, "upstream": upstream_s / seconds, "client": client_s / seconds,
                       "others": max(0.0, busy_s - gateway_s - upstream_s - client_s) / seconds,
                       "machine": busy_s / seconds},
        "gateway_cpu_ms_per_req": gateway_s / n * 1000,
    })  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, help="prompts per round (default: the mix shared out)")
    parser.add_argument("--warmup", type=int, default=200, help="prompts sent to each gateway before round 1")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds at most per pass")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                        help="before each pass, wait up to S s for the machine to be quiet")  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = real_prompts.load("all")
    random.Random(SEED).shuffle(rows)
    warm, rest = rows[: args.warmup], rows[args.warmup :]
    size = args.per_round or len(rest) // args.rounds
    if size * args.rounds > len(rest):
        sys.exit(f"--per-round {size} x {args.rounds} rounds needs more than the {len(rest)} prompts left")
    slices = [rest[i * size : (i + 1) * size] for i in range(args.rounds)]
    revision = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=h.REPO, capture_output=True, text=True,
                              check=False).stdout.strip()  # fmt: skip
    results: dict[str, Any] = {
        "command": shlex.join([".venv/bin/python", "bench/workers.py", *sys.argv[1:]]), "revision": revision,
        "machine": h.machine(), "settings": {k: str(v) for k, v in vars(args).items()},
        "prompt_mix": mix([r for s in slices for r in s]), "target": TARGET,
    }  # fmt: skip
    wall = time.perf_counter()
    passes: list[dict[str, Any]] = []
    with h.Servers() as servers:
        port = h.free_port()
        upstream = servers.start("upstream", [h.PYTHON, "bench/raw_upstream.py", "--port", str(port)], port, "/health")
        started = {}
        gateways = {}
        for workers in (1, 2):
            began = time.perf_counter()
            gateways[workers] = start_gateway(servers, workers, f"{upstream.url}/v1")
            started[workers] = time.perf_counter() - began
        results["ready_s"] = {f"workers={w}": s for w, s in started.items()}
        for workers, gateway in gateways.items():
            status, _, raw = h.http_post(f"{gateway.url}/v1/chat/completions", bodies(warm[:1])[0])
            if status != 200:
                raise RuntimeError(f"workers={workers}: {status} {raw[:300]!r}")
            _client.run_once(gateway.url + "/v1/chat/completions", bodies(warm), connections=args.connections,
                             time_cap_s=60)  # fmt: skip
        for number, chosen in enumerate(slices, 1):
            order = (1, 2) if number % 2 else (2, 1)
            for workers in order:
                quiet = wait_quiet(args.quiet_wait) if args.quiet_wait else {}
                row = measure(gateways[workers], upstream, bodies(chosen), args.connections, args.time_cap)
                row.update(round=number, workers=workers, **quiet)
                passes.append(row)
                print(f"round {number} workers={workers}: {row['requests']} requests, {row['rps']:.1f} req/s, "
                      f"p50 {row['p50_ms']:.1f} ms, errors {row['errors']}, by worker {row['by_worker']}, cores "
                      f"used: gateway {row['cores_used']['gateway']:.2f}, others {row['cores_used']['others']:.2f}",
                      flush=True)  # fmt: skip
        results["rss_mb_after"] = {f"workers={w}": h.rss_mb(g.pid) for w, g in gateways.items()}
    results["wall_s"] = time.perf_counter() - wall
    results["passes"] = passes
    results["summary"] = summary(passes, args.rounds)
    print(table(results))
    h.write_json(args.json, results)


def summary(passes: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    by = {(p["round"], p["workers"]): p for p in passes}
    ratios = [by[(r, 2)]["rps"] / by[(r, 1)]["rps"] for r in range(1, rounds + 1)]
    out: dict[str, Any] = {"ratio_by_round": ratios, "ratio_median": statistics.median(ratios)}
    for workers in (1, 2):
        mine = [p for p in passes if p["workers"] == workers]
        out[f"workers={workers}"] = {
            "rps_median": statistics.median(p["rps"] for p in mine),
            "p50_ms_median": statistics.median(p["p50_ms"] for p in mine),
            "p99_ms_median": statistics.median(p["p99_ms"] for p in mine),
            "errors": sum(p["errors"] for p in mine),
            "gateway_cores_median": statistics.median(p["cores_used"]["gateway"] for p in mine),
            "others_cores_median": statistics.median(p["cores_used"]["others"] for p in mine),
            "gateway_cpu_ms_per_req_median": statistics.median(p["gateway_cpu_ms_per_req"] for p in mine),
        }  # fmt: skip
    quiet = [r for r in range(1, rounds + 1)
             if max(by[(r, w)]["cores_used"]["others"] for w in (1, 2)) < QUIET_CORES]  # fmt: skip
    out["quiet_rounds"] = quiet
    out["ratio_quiet_median"] = statistics.median(ratios[r - 1] for r in quiet) if quiet else None
    out["met"] = out["ratio_median"] >= TARGET
    return out


def table(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["summary"]
    lines = [
        f"zero-latency upstream, {m['cpus']} CPUs, load average at start {m['load_avg_1m_at_start']:.2f}; "
        f"{results['prompt_mix']['prompts']} distinct real prompts in {len(s['ratio_by_round'])} rounds, each "
        f"prompt sent once per gateway; {results['settings']['connections']} connections",
        f"{'round':>5} {'workers':>7} {'n':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'gw cores':>8} {'up cores':>8} {'client':>6} {'others':>6} {'waited':>6}  by worker",
    ]
    for p in results["passes"]:
        c = p["cores_used"]
        lines.append(
            f"{p['round']:>5} {p['workers']:>7} {p['requests']:>5} {p['rps']:>8.1f} {p['p50_ms']:>8.1f} "
            f"{p['p99_ms']:>8.1f} {p['errors']:>6} {c['gateway']:>8.2f} {c['upstream']:>8.2f} {c['client']:>6.2f} "
            f"{c['others']:>6.2f} {p.get('waited_s', 0.0):>5.0f}s  {'/'.join(str(v) for v in p['by_worker'].values())}"
        )
    ratios = ", ".join(f"{r:.2f}x" for r in s["ratio_by_round"])
    lines.append(
        f"autoroute 2 workers / 1 worker: req/s {s['ratio_median']:.2f}x median (rounds: {ratios}; target >= "
        f"{results['target']}) [{'met' if s['met'] else 'MISSED'}]"
    )
    if s["quiet_rounds"]:
        lines.append(f"rounds where the rest of the machine used < {QUIET_CORES} cores in both passes "
                     f"({', '.join(map(str, s['quiet_rounds']))}): {s['ratio_quiet_median']:.2f}x median")  # fmt: skip
    else:
        lines.append(f"no round had the rest of the machine under {QUIET_CORES} cores in both passes")
    lines.append(f"measured in {results['wall_s']:.0f} s: {results['command']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
