"""`proxy.metrics`: counts from recorder records, live gauges, the exposition; one registry per gateway."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from proxy.events import DecisionRecord, PerformanceRecord
from proxy.metrics import GatewayMetrics, LiveState
from proxy.recorder import Recorder
from proxy.store import SQLiteStore

LIVE = LiveState(
    recorder={"enqueued": 5, "written": 4, "dropped": 1, "lost": 0, "queue_depth": 1, "pending": 1},
    feedback={"written": 2, "failed": 0},
    breaker={"a": "closed", "b": "open"},
    models_available=2,
    learning_events={"promotion": 1, "rejection": 3},
    registry_version="r1",
    routers={"winrate": "w7", "static-rules": "r1"},
)
LAYERS = [
    {"layer": "keywords", "task": None, "confidence": 0.2, "threshold": 0.6, "accepted": False, "detail": ""},
    {"layer": "text-model", "task": "coding", "confidence": 0.9, "threshold": 0.5, "accepted": True, "detail": ""},
]


def decision(request_id: str, **changes: Any) -> DecisionRecord:
    base = DecisionRecord(
        request_id=request_id, created_at=time.time(), requested_model="auto", preference="balanced", task="coding",
        task_confidence=0.9, classification_layer="text-model", needs_clarification=False, layer_attempts=LAYERS,
        selected_model="b", routed_model="a", selection_reason="", alternatives=[], router_name="static-rules",
        router_version="r1", propensity=1.0, stream=False, status="success", attempts=1, prompt_chars=10,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def attempt(request_id: str, number: int, model: str, outcome: str = "success", **changes: Any) -> PerformanceRecord:
    base = PerformanceRecord(
        request_id=request_id, created_at=time.time(), attempt=number, model=model, task="coding",
        outcome=outcome, latency_ms=300.0, ttft_ms=300.0, prompt_tokens=10, completion_tokens=20,
        cost_usd=0.001 if outcome != "failure" else None, cost_source="litellm",
        error_class="InternalServerError" if outcome == "failure" else None,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def samples(metrics: GatewayMetrics, live: LiveState = LIVE) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render(live)
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def test_a_fallback_is_one_request_two_attempts_one_fallback() -> None:
    metrics = GatewayMetrics()
    # The pipeline's order: the failed attempt, the decision (at success), the served attempt.
    for record in (attempt("r1", 1, "a", "failure"), decision("r1", attempts=2), attempt("r1", 2, "b")):
        metrics.observe(record)
    found = samples(metrics)
    requests = dict(model="b", task="coding", router="static-rules", preference="balanced", status="success")
    assert value(found, "autoroute_requests_total", **requests) == 1
    assert value(found, "autoroute_fallbacks_total", from_model="a", to_model="b", reason="InternalServerError") == 1
    assert value(found, "autoroute_attempt_failures_total", model="a", error_class="InternalServerError") == 1
    assert value(found, "autoroute_attempt_duration_seconds_count", model="a", outcome="failure") == 1
    assert value(found, "autoroute_attempt_duration_seconds_sum", model="b", outcome="success") == 0.3
    assert value(found, "autoroute_tokens_total", model="b", kind="completion") == 20
    assert value(found, "autoroute_cost_usd_total", model="b", task="coding") == 0.001
    assert value(found, "autoroute_cost_usd_total", model="a", task="coding") is None
    assert value(found, "autoroute_classifier_decisions_total", layer="text-model") == 1
    assert value(found, "autoroute_classifier_layer_attempts_total", layer="keywords", result="rejected") == 1
    assert value(found, "autoroute_classifier_layer_attempts_total", layer="text-model", result="accepted") == 1
    assert value(found, "autoroute_time_to_first_token_seconds_count", model="b") is None, "not a stream"


def test_a_stream_counts_once_with_its_final_status() -> None:
    metrics = GatewayMetrics()
    # A stream that completes: decision at the first byte, its attempt at the end.
    metrics.observe(decision("ok", stream=True))
    assert value(samples(metrics), "autoroute_requests_total", model="b", task="coding", router="static-rules",
                 preference="balanced", status="success") is None, "counted at its end"  # fmt: skip
    metrics.observe(attempt("ok", 1, "b", stream=True, ttft_ms=50.0))
    # A stream that breaks: its attempt ends partial and the decision is recorded again as partial.
    for record in (decision("broken", stream=True), attempt("broken", 1, "b", "partial", stream=True),
                   decision("broken", stream=True, status="partial")):  # fmt: skip
        metrics.observe(record)
    found = samples(metrics)
    labels = dict(model="b", task="coding", router="static-rules", preference="balanced")
    assert value(found, "autoroute_requests_total", **labels, status="success") == 1
    assert value(found, "autoroute_requests_total", **labels, status="partial") == 1
    assert value(found, "autoroute_time_to_first_token_seconds_count", model="b") == 2
    assert value(found, "autoroute_classifier_decisions_total", layer="text-model") == 2


def test_the_last_failed_attempt_is_no_fallback_and_ab_arms_are_counted() -> None:
    metrics = GatewayMetrics()
    for record in (attempt("r", 1, "a", "failure"), attempt("r", 2, "b", "failure"),
                   decision("r", status="failure", attempts=2, ab_arm="treatment")):  # fmt: skip
        metrics.observe(record)
    metrics.observe(decision("s", ab_arm="control"))
    found = samples(metrics)
    assert value(found, "autoroute_fallbacks_total", from_model="a", to_model="b", reason="InternalServerError") == 1
    assert [k for k in found if k[0] == "autoroute_fallbacks_total"] == [
        ("autoroute_fallbacks_total", (("from_model", "a"), ("reason", "InternalServerError"), ("to_model", "b")))
    ]
    assert value(found, "autoroute_ab_decisions_total", arm="treatment") == 1
    assert value(found, "autoroute_ab_decisions_total", arm="control") == 1
    assert metrics._last_failure == {}


def test_live_metrics_are_read_at_scrape_time() -> None:
    found = samples(GatewayMetrics())
    assert value(found, "autoroute_recorder_queue_depth") == 1
    assert value(found, "autoroute_recorder_written_total") == 4
    assert value(found, "autoroute_recorder_dropped_total") == 1
    assert value(found, "autoroute_recorder_lost_total") == 0
    assert value(found, "autoroute_feedback_written_total") == 2
    assert value(found, "autoroute_circuit_breaker_state", model="b", state="open") == 1
    assert value(found, "autoroute_circuit_breaker_state", model="b", state="closed") == 0
    assert value(found, "autoroute_learning_events_total", kind="rejection") == 3
    assert value(found, "autoroute_router_info", router="winrate", version="w7", position="1") == 1
    assert value(found, "autoroute_registry_info", version="r1") == 1
    unreadable = samples(GatewayMetrics(), dataclasses.replace(LIVE, learning_events=None))
    assert not [k for k in unreadable if k[0].startswith("autoroute_learning_events")]


def test_each_gateway_has_its_own_registry() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.observe(decision("r"))
    assert value(samples(first), "autoroute_classifier_decisions_total", layer="text-model") == 1
    assert value(samples(second), "autoroute_classifier_decisions_total", layer="text-model") is None


def test_openmetrics_when_asked() -> None:
    body, content_type = GatewayMetrics().render(LIVE, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_the_recorder_tells_its_listeners_even_what_it_drops(tmp_path: Any) -> None:
    metrics = GatewayMetrics()
    seen: list[str] = []

    def broken(record: Any) -> None:
        raise RuntimeError("a listener's bug")

    async def run() -> None:
        store = SQLiteStore(tmp_path / "db.sqlite")
        listeners = (broken, metrics.observe, lambda r: seen.append(r.request_id))
        recorder = Recorder(store, queue_size=1, listeners=listeners)
        assert recorder.record(decision("kept"))
        assert not recorder.record(decision("dropped"))  # the queue holds one
        await recorder.stop()
        store.close()

    asyncio.run(run())
    assert seen == ["kept", "dropped"]
    assert value(samples(metrics), "autoroute_classifier_decisions_total", layer="text-model") == 2
