"""1,000 concurrent streaming chats through the gateway, each streamed by the upstream over ~2 s: all must complete.

    .venv/bin/python bench/concurrency.py --json docs/perf/concurrency.json

Starts on 127.0.0.1 the project's fake upstream (model `coder-stream-2000`: first chunk at once, then ~20 chunks over
2 s) and `autoroute serve` over bench/overhead.yaml with that model added; then a client in a separate process
(aiohttp, so the client's CPU is not the gateway's) opens `--streams` streaming requests at once and reads each to
`data: [DONE]`. Reported: completed / failed streams, wall time, per-stream time to first byte and duration, the
gateway's peak RSS (VmHWM) and its RSS before and after, and the open file descriptors at the peak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

MODEL_ENTRY = """
  - name: streamer
    litellm_params: {{model: openai/coder-stream-{ms}, api_base: "{{UPSTREAM}}", timeout_s: 60}}
    input_cost_per_mtok: 0.3
    output_cost_per_mtok: 0.9
    quality: {{default: 0.5}}
"""
PROMPT = ("Tell me a long story about a lighthouse keeper who finds a message in a bottle, with many small details "
          "about the sea, the weather, the old lamp, the birds on the rocks and the letters he writes back home.")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--stream-ms", type=int, default=2000, help="how long the upstream spreads each stream over")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds at most for the whole burst")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(client(args.url, args.streams, args.timeout))))
        return
    raise_fd_limit(args.streams * 4 + 512)
    results: dict[str, Any] = {"machine": h.machine(), "settings": {k: str(v) for k, v in vars(args).items()},
                               "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}  # fmt: skip
    with h.Servers() as servers:
        up_port, ar_port = h.free_port(), h.free_port()
        upstream = servers.start("fake-upstream", [h.PYTHON, "-m", "proxy.cli", "fake-upstream", "--port", str(up_port)],
                                 up_port, "/health")  # fmt: skip
        text = (h.REPO / "bench" / "overhead.yaml").read_text()
        text = text.replace("\nrouting_rules:", MODEL_ENTRY.format(ms=args.stream_ms) + "\nrouting_rules:", 1)
        config = servers.workdir / "autoroute.yaml"
        config.write_text(text.replace("{UPSTREAM}", f"{upstream.url}/v1"))
        gateway = servers.start(
            "autoroute",
            [h.PYTHON, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(ar_port), "--data-dir",
             str(h.prepare_data_dir()), "--log-level", "warning", "--no-reload"],
            ar_port, "/health/readiness", ready=h.readiness_complete,
        )  # fmt: skip
        status, _, raw = h.http_post(f"{gateway.url}/v1/chat/completions", request_body(False))
        if status != 200:
            raise RuntimeError(f"the gateway does not answer: {status} {raw[:300]!r}")
        results["rss_before_mb"] = h.rss_mb(gateway.pid)
        peak_fds = [0]
        stop = threading.Event()

        def watch_fds() -> None:
            while not stop.wait(0.1):
                try:
                    peak_fds[0] = max(peak_fds[0], len(os.listdir(f"/proc/{gateway.pid}/fd")))
                except OSError:
                    return

        watcher = threading.Thread(target=watch_fds, daemon=True)
        watcher.start()
        cpu0 = h.cpu_seconds(gateway.pid)
        done = subprocess.run(
            [h.PYTHON, __file__, "--client", "--url", f"{gateway.url}/v1/chat/completions", "--streams",
             str(args.streams), "--timeout", str(args.timeout)],
            capture_output=True, text=True, timeout=args.timeout + 60, env=h.env(),
        )  # fmt: skip
        stop.set()
        watcher.join()
        if done.returncode != 0:
            raise RuntimeError(f"client failed: {done.stderr[-3000:]}")
        results.update(json.loads(done.stdout.strip().splitlines()[-1]))
        results["gateway_cpu_s"] = h.cpu_seconds(gateway.pid) - cpu0
        results["gateway_peak_rss_mb"] = h.peak_rss_mb(gateway.pid)
        results["rss_after_mb"] = h.rss_mb(gateway.pid)
        results["gateway_peak_fds"] = peak_fds[0]
        _, readiness = h.http_get(f"{gateway.url}/health/readiness")
        results["recorder"] = json.loads(readiness)["recorder"]
    results["passed"] = results["completed"] == args.streams and results["failed"] == 0
    print(table(results))
    h.write_json(args.json, results)
    if not results["passed"]:
        sys.exit(1)


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
        sys.exit(f"need {wanted} file descriptors, the limit is {resource.getrlimit(resource.RLIMIT_NOFILE)}")


def request_body(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "streamer", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def client(url: str, streams: int, timeout_s: float) -> dict[str, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0)  # no pool limit: every stream gets its own connection at once
    errors: dict[str, int] = {}
    ttfb: list[float] = []
    durations: list[float] = []
    chunks: list[int] = []
    gate = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> bool:
        await gate.wait()
        started = time.perf_counter()
        try:
            async with session.post(url, json=request_body(True)) as response:
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}")
                first, count, last = None, 0, b""
                async for line in response.content:
                    if first is None:
                        first = time.perf_counter() - started
                    if line.startswith(b"data: "):
                        count += 1
                        last = line.strip()
                if last != b"data: [DONE]":
                    raise RuntimeError("no [DONE]")
                ttfb.append(first or 0.0)
                durations.append(time.perf_counter() - started)
                chunks.append(count)
                return True
        except Exception as exc:  # noqa: BLE001 - counted and reported by kind
            key = f"{type(exc).__name__}: {str(exc)[:80]}"
            errors[key] = errors.get(key, 0) + 1
            return False

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(streams)]
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        gate.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks), timeout_s + 10)
        wall = time.perf_counter() - started
    return {
        "completed": sum(outcomes), "failed": streams - sum(outcomes), "errors": errors, "wall_s": wall,
        "ttfb_p50_ms": h.percentile(ttfb, 50) * 1000, "ttfb_p99_ms": h.percentile(ttfb, 99) * 1000,
        "stream_p50_s": h.percentile(durations, 50), "stream_p99_s": h.percentile(durations, 99),
        "stream_max_s": max(durations) if durations else float("nan"),
        "chunks_per_stream": h.percentile(chunks, 50),
    }  # fmt: skip


def table(r: dict[str, Any]) -> str:
    lines = [
        f"{r['settings']['streams']} concurrent streams of ~{r['settings']['stream_ms']} ms each through autoroute "
        f"({r['machine']['cpus']} CPUs, fd limit {r['fd_limit']}, load average at start "
        f"{r['machine']['load_avg_1m_at_start']:.2f})",
        f"completed {r['completed']}, failed {r['failed']} {r['errors'] or ''}; wall {r['wall_s']:.2f} s",
        f"time to first byte p50 {r['ttfb_p50_ms']:.0f} ms, p99 {r['ttfb_p99_ms']:.0f} ms; stream duration p50 "
        f"{r['stream_p50_s']:.2f} s, p99 {r['stream_p99_s']:.2f} s, max {r['stream_max_s']:.2f} s; "
        f"{r['chunks_per_stream']:.0f} SSE frames a stream",
        f"gateway: RSS {r['rss_before_mb']:.0f} MiB before, peak {r['gateway_peak_rss_mb']:.0f} MiB, "
        f"{r['rss_after_mb']:.0f} MiB after; peak open fds {r['gateway_peak_fds']}; CPU {r['gateway_cpu_s']:.1f} s "
        f"({r['gateway_cpu_s'] / max(1, r['completed']) * 1000:.1f} ms a stream); recorder {r['recorder']}",
        "PASS" if r["passed"] else "FAIL",
    ]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
