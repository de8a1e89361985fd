"""The pipeline under a shutdown drain: a backend call that outlives the grace ends the request with ShuttingDown
(the HTTP layer's 503 `shutting_down`), and the decision and its attempt are recorded `cancelled`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.drain import Drain, ShuttingDown
from proxy.events import DecisionRecord, PerformanceRecord, Record
from proxy.forward import StreamHandle, Usage
from proxy.pipeline import Pipeline
from proxy.recorder import Recorder
from proxy.runtime import build_runtime
from router_plugins.registry import ModelEntry, parse_registry
from router_plugins.types import ChatRequest

from .test_pipeline import REGISTRY, ListStore, ScriptedForwarder, _request


class HangingForwarder(ScriptedForwarder):
    """A backend that never answers."""

    async def complete(self, model: ModelEntry, request: ChatRequest) -> tuple[dict[str, Any], Usage]:
        self.calls.append(model.name)
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    async def open_stream(self, model: ModelEntry, request: ChatRequest) -> StreamHandle:
        return await self.complete(model, request)  # type: ignore[return-value]  # never returns


@pytest.mark.parametrize("stream", [False, True])
def test_a_backend_call_outliving_the_grace_is_cut_and_recorded_cancelled(stream: bool) -> None:
    store = ListStore()
    forwarder = HangingForwarder({})

    async def go() -> None:
        recorder = Recorder(store, flush_interval_ms=1)  # type: ignore[arg-type]  # a list, not SQLite
        drain = Drain(grace_s=0.1)
        runtime = build_runtime(parse_registry(REGISTRY))
        pipeline = Pipeline(lambda: runtime, forwarder, recorder, drain=drain)  # type: ignore[arg-type]  # scripted
        handling = asyncio.create_task(pipeline.handle(_request(stream)))
        await asyncio.sleep(0.05)
        drain.begin()
        with pytest.raises(ShuttingDown):
            await handling
        await recorder.stop()

    asyncio.run(go())
    rows: list[Record] = store.rows
    assert forwarder.calls == ["a"], "no fallback to another backend once the gateway is shutting down"
    assert [(r.model, r.outcome, r.error_class) for r in rows if isinstance(r, PerformanceRecord)] == [
        ("a", "cancelled", "ShuttingDown")
    ]
    assert [r.status for r in rows if isinstance(r, DecisionRecord)] == ["cancelled"]
