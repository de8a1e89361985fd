"""One pass over a list of distinct request bodies: each body POSTed exactly once, over keep-alive connections,
each request timed on its own.

wrk (`_harness.run_wrk`) cycles its bodies for a fixed time, so a list of a few hundred real prompts repeats within a
run, and every cache on the path (the gateway's embedding cache, the static layer's recent texts) answers the
repeats. This client sends each body once, in the list's order, and stops at the end of the list or at a time cap.
It is a bare HTTP/1.1 client on asyncio streams (~0.05 ms of CPU a request), so the server, not the client, is what
a run measures; the `direct` row of a benchmark shows what the client itself adds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from _harness import percentile

FAILED = 0
"""The status of a request that got no answer (connection error, timeout, malformed response)."""


@dataclass
class Pass:
    """What one pass measured, per body: latency, status (None: not sent) and the captured header's value."""

    latency_ms: list[float | None]
    status: list[int | None]
    headers: list[str | None]
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        answered = [x for x, s in zip(self.latency_ms, self.status, strict=True) if x is not None and s != FAILED]
        sent = [s for s in self.status if s is not None]
        return {
            "sent": len(sent), "not_sent": len(self.status) - len(sent), "requests": len(answered),
            "seconds": self.seconds, "rps": len(answered) / self.seconds if self.seconds else 0.0,
            "p50_ms": percentile(answered, 50), "p90_ms": percentile(answered, 90),
            "p99_ms": percentile(answered, 99), "max_ms": max(answered, default=float("nan")),
            "mean_ms": sum(answered) / len(answered) if answered else float("nan"),
            "errors": sum(1 for s in sent if s != 200), "non_2xx": sum(1 for s in sent if s not in (200, FAILED)),
            "error_samples": self.errors[:3],
        }  # fmt: skip


async def _read_response(reader: asyncio.StreamReader, want: bytes) -> tuple[int, str | None]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, wanted = None, False, None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif want and name == want:
            wanted = value.strip().decode()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, wanted


async def _pass(url: str, bodies: Sequence[dict[str, Any]], connections: int, time_cap_s: float, timeout_s: float,
                capture: str) -> Pass:  # fmt: skip
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = []
    for body in bodies:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        requests.append(
            f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n".encode()
            + data
        )
    out = Pass([None] * len(bodies), [None] * len(bodies), [None] * len(bodies))
    want = capture.lower().encode()
    next_index = iter(range(len(bodies)))
    deadline = time.perf_counter() + time_cap_s

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in next_index:  # one shared iterator: each body goes out once, whichever connection is free
                if time.perf_counter() > deadline:
                    return
                started = time.perf_counter()
                try:
                    writer.write(requests[i])
                    status, value = await asyncio.wait_for(_read_response(reader, want), timeout_s)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    out.status[i] = FAILED
                    out.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                out.latency_ms[i] = (time.perf_counter() - started) * 1000
                out.status[i], out.headers[i] = status, value
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(connections, len(bodies)))))
    out.seconds = time.perf_counter() - started
    return out


def run_once(url: str, bodies: Sequence[dict[str, Any]], *, connections: int, time_cap_s: float = 120.0,
             timeout_s: float = 30.0, capture: str = "") -> Pass:  # fmt: skip
    """POST every body once, `connections` at a time; stop sending at `time_cap_s`. `capture` names a response
    header whose value is kept per request (e.g. the gateway's request id, to join with its records)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_pass(url, bodies, connections, time_cap_s, timeout_s, capture))
    return uvloop.run(_pass(url, bodies, connections, time_cap_s, timeout_s, capture))
