"""The shutdown drain: bounded awaits cut at the deadline, the drain's end, streams cut with one error frame, and the
uvicorn server that starts the drain on a signal and exits without re-raising it."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from proxy import drain as drain_module
from proxy.drain import Drain, DrainMiddleware, ShuttingDown
from proxy.forward import StreamHandle, Usage
from proxy.server import DrainingServer
from proxy.streaming import relay_stream

CHUNK = {"id": "c1", "created": 1, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}


async def _bounded_sleep(drain: Drain, seconds: float) -> None:
    async with drain.bound():
        await asyncio.sleep(seconds)


def test_an_await_under_way_when_the_drain_begins_is_cut_at_the_deadline() -> None:
    async def go() -> float:
        drain = Drain(grace_s=0.2)
        task = asyncio.create_task(_bounded_sleep(drain, 30))
        await asyncio.sleep(0.05)  # the await is under way, with no deadline yet
        started = time.monotonic()
        drain.begin()
        with pytest.raises(ShuttingDown):
            await task
        return time.monotonic() - started

    assert 0.15 < asyncio.run(go()) < 1.0


def test_bounded_awaits_finish_normally_within_the_grace_and_without_a_drain() -> None:
    async def go() -> None:
        drain = Drain(grace_s=5)
        await _bounded_sleep(drain, 0.01)
        drain.begin()
        await _bounded_sleep(drain, 0.01)
        assert not drain.expired

    asyncio.run(go())


def test_after_the_deadline_a_new_bounded_await_is_cut_at_once_and_expire_hurries() -> None:
    async def go() -> None:
        drain = Drain(grace_s=30)
        task = asyncio.create_task(_bounded_sleep(drain, 30))
        await asyncio.sleep(0.01)
        drain.begin()
        drain.expire()  # a second signal
        with pytest.raises(ShuttingDown):
            await task
        assert drain.expired
        with pytest.raises(ShuttingDown):
            await _bounded_sleep(drain, 30)

    asyncio.run(go())


def test_other_errors_and_cancellations_pass_through_a_bound() -> None:
    async def go() -> None:
        drain = Drain(grace_s=30)
        drain.begin()
        with pytest.raises(KeyError):
            async with drain.bound():
                raise KeyError("x")
        task = asyncio.create_task(_bounded_sleep(drain, 30))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())


def test_run_stops_at_once_when_idle_and_when_the_last_request_ends() -> None:
    async def go() -> tuple[float, float]:
        idle, stopped = Drain(grace_s=30), asyncio.Event()
        started = time.monotonic()
        await idle.run(stop=stopped.set)
        at_once = time.monotonic() - started

        busy, stopped = Drain(grace_s=30), asyncio.Event()
        busy.enter()
        runner = asyncio.create_task(busy.run(stop=stopped.set))
        await asyncio.sleep(0.1)
        assert busy.draining and not stopped.is_set()
        started = time.monotonic()
        busy.leave()
        await runner
        return at_once, time.monotonic() - started

    at_once, after_leave = asyncio.run(go())
    assert at_once < 0.1 and after_leave < 0.1


def test_run_gives_up_on_requests_that_never_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain_module, "CUT_WAIT_S", 0.1)

    async def go() -> float:
        drain = Drain(grace_s=0.2)
        drain.enter()  # never leaves
        started = time.monotonic()
        await drain.run(stop=lambda: None)
        return time.monotonic() - started

    assert 0.25 < asyncio.run(go()) < 1.0


def test_the_middleware_counts_requests_but_not_health_probes() -> None:
    drain = Drain()
    seen: list[int] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        seen.append(drain.in_flight)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/v1/x", endpoint), Route("/health/readiness", endpoint)])
    app.add_middleware(DrainMiddleware, drain=drain)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            await client.get("/v1/x")
            await client.get("/health/readiness")

    asyncio.run(go())
    assert seen == [1, 0] and drain.in_flight == 0


async def _slow_chunks() -> AsyncIterator[Any]:
    yield CHUNK
    await asyncio.sleep(30)
    yield CHUNK


def test_a_stream_outliving_the_grace_ends_with_one_error_frame_and_is_cancelled() -> None:
    ended: list[tuple[str, Usage, BaseException | None]] = []

    async def go() -> list[bytes]:
        drain = Drain(grace_s=0.2)
        handle = StreamHandle(CHUNK, _slow_chunks().__aiter__(), "served")
        frames = []
        async for frame in relay_stream(handle, include_usage=True, on_end=lambda *a: ended.append(a), drain=drain):
            frames.append(frame)
            if len(frames) == 2:
                drain.begin()
        return frames

    frames = asyncio.run(go())
    payloads = [json.loads(f.removeprefix(b"data: ")) for f in frames]
    assert len(payloads) == 3 and [p for p in payloads if "error" in p] == [payloads[-1]]
    assert payloads[-1]["error"]["code"] == "shutting_down" and set(payloads[-1]["error"]) == {
        "message", "type", "param", "code"}  # fmt: skip
    ((outcome, _, error),) = ended
    assert outcome == "cancelled" and isinstance(error, ShuttingDown)


def test_the_server_drains_on_sigterm_and_exits_without_re_raising_it() -> None:
    """The signal handler is called as the signal would call it; uvicorn alone would re-raise SIGTERM at the end."""
    drain = Drain(grace_s=5)

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.5)
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/slow", slow)])
    app.add_middleware(DrainMiddleware, drain=drain)
    server = DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning"), drain)

    async def go() -> tuple[int, bool, float]:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            request = asyncio.create_task(client.get("/slow"))
            await asyncio.sleep(0.1)
            server.handle_exit(signal.SIGTERM, None)
            started = time.monotonic()
            assert drain.draining
            response = await request
        await serving
        return response.status_code, server.should_exit, time.monotonic() - started

    status, should_exit, took = asyncio.run(go())
    assert status == 200 and should_exit and took < 3
    assert server._captured_signals == []  # nothing to re-raise: the process exits 0
