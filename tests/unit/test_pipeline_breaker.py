"""The pipeline with a circuit breaker: cooling models go last, the decision says why, outcomes are recorded."""

from __future__ import annotations

import asyncio
import time

from proxy.events import DecisionRecord, Record
from proxy.forward import UpstreamError
from proxy.pipeline import BackendsFailed, Pipeline
from proxy.recorder import Recorder
from proxy.runtime import build_runtime
from router_plugins.health import CircuitBreaker, CircuitBreakerSettings
from router_plugins.registry import parse_registry
from router_plugins.types import ChatRequest

from .test_pipeline import REGISTRY, ListStore, ScriptedForwarder

SERVER_ERROR = UpstreamError(502, "InternalServerError", "boom", True)


def _breaker() -> CircuitBreaker:
    return CircuitBreaker(CircuitBreakerSettings(consecutive_failures=2, cooldown_s=60))


def _serve(forwarder: ScriptedForwarder, breaker: CircuitBreaker, requests: int, model: str = "auto") -> list[Record]:
    """`requests` requests through one pipeline; returns what was recorded."""
    runtime = build_runtime(parse_registry(REGISTRY))
    store = ListStore()

    async def go() -> None:
        recorder = Recorder(store, flush_interval_ms=1)  # type: ignore[arg-type]
        await recorder.start()
        pipeline = Pipeline(lambda: runtime, forwarder, recorder, breaker=breaker)  # type: ignore[arg-type]
        for i in range(requests):
            request = ChatRequest(f"req-{i}", model, ({"role": "user", "content": "hello"},), preference="quality")
            try:
                await pipeline.handle(request)
            except BackendsFailed:
                pass
        await recorder.stop()

    asyncio.run(go())
    return store.rows


def _decisions(rows: list[Record]) -> list[DecisionRecord]:
    return [r for r in rows if isinstance(r, DecisionRecord)]


def test_a_cooling_model_is_skipped_and_the_decision_says_why() -> None:
    forwarder, breaker = ScriptedForwarder({"a": SERVER_ERROR}), _breaker()
    rows = _serve(forwarder, breaker, 5)
    assert forwarder.calls == ["a", "b", "a", "b", "b", "b", "b"], "a is tried twice, then skipped"
    last = _decisions(rows)[-1]
    assert (last.routed_model, last.selected_model, last.attempts) == ("a", "b", 1)
    assert "skipped a: cooling down after 2 consecutive failures" in last.selection_reason
    assert breaker.state("a", time.monotonic()) == "open"


def test_when_every_candidate_is_cooling_they_are_tried_anyway() -> None:
    forwarder, breaker = ScriptedForwarder({"a": SERVER_ERROR, "b": SERVER_ERROR, "c": SERVER_ERROR}), _breaker()
    rows = _serve(forwarder, breaker, 5)
    # a and b open after two requests; c, still closed, goes first for two more; then all three cool, and the
    # fifth request tries them anyway, in rank order, max_attempts (2) of them.
    assert forwarder.calls == ["a", "b", "a", "b", "c", "a", "c", "a", "a", "b"]
    last = _decisions(rows)[-1]
    assert "tried a anyway" in last.selection_reason and last.status == "failure"


def test_a_client_error_does_not_count_against_the_model() -> None:
    forwarder = ScriptedForwarder({"a": UpstreamError(400, "BadRequestError", "bad schema", False)})
    breaker = _breaker()
    _serve(forwarder, breaker, 4)
    assert forwarder.calls == ["a"] * 4
    assert breaker.state("a", time.monotonic()) == "closed"


def test_a_named_model_is_not_rerouted_but_its_failures_count() -> None:
    forwarder, breaker = ScriptedForwarder({"a": SERVER_ERROR}), _breaker()
    _serve(forwarder, breaker, 3, model="a")
    assert forwarder.calls == ["a", "a", "a"]
    assert breaker.state("a", time.monotonic()) == "open"
