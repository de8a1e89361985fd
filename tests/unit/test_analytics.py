"""proxy.analytics: exact aggregates over a store with known rows (tests/unit/analytics_rows.py)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator

import pytest

from proxy.analytics import (
    Window,
    WindowData,
    ab_summary,
    analyze,
    analyze_store,
    calibration,
    confusion_matrix,
    feature_importance,
    latency_distributions,
    layer_report,
    load_window,
    model_stats,
    recent_decisions,
    success_matrix,
    totals,
    traffic_over_time,
)
from proxy.analytics.top import bar
from proxy.analytics.traffic import bucket_width
from proxy.events import LearningEvent
from proxy.store import Store

from .analytics_rows import NOW, decision, populated_store

WINDOW = Window(NOW - 3600, NOW)
Z = 1.959963984540054


def wilson(k: float, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


@pytest.fixture
def store(store_location: str) -> Iterator[Store]:
    s = populated_store(store_location)
    yield s
    s.close()


@pytest.fixture
def data(store: Store) -> WindowData:
    return load_window(store, WINDOW)


def test_the_window_holds_its_requests_with_their_attempts_and_feedback(data: WindowData) -> None:
    assert [r.request_id for r in data.requests] == ["r1", "r2", "r3", "r4", "r5"]
    r3 = data.requests[2]
    assert [(a.model, a.outcome) for a in r3.attempts] == [("mathematician", "failure"), ("frontier", "success")]
    assert (r3.routed_model, r3.selected_model, r3.predicted_quality) == ("mathematician", "frontier", 0.9)
    assert r3.cost_usd == pytest.approx(0.01) and r3.latency_ms == 300.0
    r5 = data.requests[4]
    assert (r5.feedback_score, r5.feedback_scores, r5.feedback_task) == (0.5, 2, "chat")
    assert data.requests[1].feedback_task == "math" and not data.truncated


def test_a_truncated_read_keeps_the_newest_decisions_and_their_attempts(store: Store) -> None:
    data = load_window(store, WINDOW, limit=2)
    assert data.truncated and [r.request_id for r in data.requests] == ["r4", "r5"]
    assert [a.model for a in data.attempts] == ["frontier", "mini"]
    assert data.window.since == data.requests[0].created_at


def test_totals(data: WindowData) -> None:
    t = totals(data)
    assert (t.requests, t.success.successes, t.success.n, t.fallbacks) == (5, 4, 5, 1)
    assert t.cost_usd == pytest.approx(0.0135)
    assert (t.latency_ms.n, t.latency_ms.p50) == (4, 250.0)
    assert (t.scored, t.mean_score, t.labelled) == (3, pytest.approx(0.5), 3)


def test_model_stats(data: WindowData) -> None:
    stats = {m.model: m for m in model_stats(data)}
    assert [m.model for m in model_stats(data)] == ["coder", "frontier", "mini", "mathematician"]
    coder = stats["coder"]
    assert (coder.requests, coder.share, coder.attempts, coder.success.rate) == (2, 0.4, 2, 1.0)
    d = coder.latency_ms
    assert (d.n, d.mean, d.min, d.max, d.p50, d.p90, d.p95, d.p99) == (2, 150.0, 100.0, 200.0, 150.0, 190.0,
                                                                       195.0, 199.0)  # fmt: skip
    assert coder.cost_usd == pytest.approx(0.003) and (coder.mean_score, coder.scored) == (0.5, 2)
    assert (coder.prompt_tokens, coder.completion_tokens) == (20, 40)
    frontier = stats["frontier"]
    assert (frontier.requests, frontier.attempts, frontier.success.successes) == (2, 2, 1)
    assert (frontier.success.ci_low, frontier.success.ci_high) == pytest.approx(wilson(1, 2))
    assert frontier.errors == {"Timeout": 1} and frontier.latency_ms.p50 == 300.0
    maths = stats["mathematician"]
    assert (maths.requests, maths.share, maths.attempts, maths.success.rate, maths.errors) == (0, 0.0, 1, 0.0,
                                                                                              {"APIError": 1})  # fmt: skip
    assert maths.latency_ms.n == 0 and maths.latency_ms.p50 is None


def test_success_matrix_with_wilson_intervals(data: WindowData) -> None:
    matrix = success_matrix(data)
    assert matrix.tasks == ["chat", "coding", "math"]
    assert matrix.models == ["coder", "frontier", "mathematician", "mini"]
    assert [(c.task, c.model) for c in matrix.cells] == [("chat", "mini"), ("coding", "coder"), ("math", "frontier"),
                                                         ("math", "mathematician")]  # fmt: skip
    coding = matrix.cell("coding", "coder")
    assert coding is not None
    assert (coding.success.n, coding.success.rate, coding.mean_score, coding.scored) == (2, 1.0, 0.5, 2)
    assert (coding.success.ci_low, coding.success.ci_high) == pytest.approx(wilson(2, 2))
    maths = matrix.cell("math", "frontier")
    assert maths is not None and (maths.success.n, maths.success.successes, maths.scored) == (2, 1, 0)
    assert (maths.success.ci_low, maths.success.ci_high) == pytest.approx(wilson(1, 2))
    assert maths.success.ci_low == pytest.approx(0.0945, abs=1e-4)
    assert matrix.cell("chat", "coder") is None


def test_latency_distributions_share_their_bins(data: WindowData) -> None:
    report = latency_distributions(data, bins=4)
    assert report.edges_ms == pytest.approx([100.0, 100 * 4**0.25, 200.0, 100 * 4**0.75, 400.0])
    by_model = {m.model: m for m in report.models}
    assert [m.model for m in report.models] == ["coder", "frontier", "mini"]
    assert sum(by_model["coder"].counts) == 2 and by_model["coder"].counts[0] == 1
    assert by_model["frontier"].counts == [0, 0, 0, 1] and by_model["mini"].counts == [0, 0, 0, 1]
    assert "mathematician" not in by_model  # no successful attempt


def test_layer_report(data: WindowData) -> None:
    report = layer_report(data)
    layers = {s.layer: s for s in report.layers}
    assert [s.layer for s in report.layers] == ["keywords", "static_embedding", "knn", "fallback"]
    keywords = layers["keywords"]
    assert (keywords.decided, keywords.share, keywords.attempts, keywords.decide_rate) == (2, 0.4, 5, 0.4)
    assert keywords.mean_confidence == pytest.approx(0.36) and keywords.mean_latency_ms == pytest.approx(0.038)
    assert (keywords.accuracy.n, keywords.accuracy.successes) == (2, 1)
    static = layers["static_embedding"]
    assert (static.decided, static.attempts, static.decide_rate) == (2, 3, pytest.approx(2 / 3))
    assert static.mean_confidence == pytest.approx(1.6 / 3) and static.mean_latency_ms == pytest.approx(0.3)
    assert (static.accuracy.n, static.accuracy.rate) == (1, 1.0)
    knn = layers["knn"]  # skipped: asked about nothing
    assert (knn.attempts, knn.decided, knn.decide_rate, knn.mean_confidence) == (0, 0, None, None)
    assert (layers["fallback"].decided, layers["fallback"].share, layers["fallback"].accuracy.n) == (1, 0.2, 0)
    assert (report.requests, report.judged, report.accuracy.successes) == (5, 3, 2)


def test_confusion_matrix(data: WindowData) -> None:
    matrix = confusion_matrix(data)
    assert matrix.labels == ["chat", "coding", "math"]
    assert matrix.counts == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert (matrix.n, matrix.accuracy.successes) == (3, 2)
    assert (matrix.accuracy.ci_low, matrix.accuracy.ci_high) == pytest.approx(wilson(2, 3))
    assert matrix.recall == {"chat": 1.0, "coding": 1.0, "math": 0.0}
    assert matrix.precision == {"chat": 1.0, "coding": 0.5, "math": None}


def test_calibration_of_the_learned_router(data: WindowData) -> None:
    c = calibration(data)
    assert c.router == "learned" and c.n == 3
    filled = [(b.lower, b.n, b.mean_predicted, b.observed.rate) for b in c.bins if b.n]
    assert filled == [(0.3, 1, 0.35, 0.5), (0.6, 1, 0.6, 0.0), (0.8, 1, 0.8, 1.0)]
    assert len(c.bins) == 10 and c.bins[9].upper == 1.0
    assert c.brier == pytest.approx((0.2**2 + 0.6**2 + 0.15**2) / 3)
    assert c.ece == pytest.approx((0.2 + 0.6 + 0.15) / 3)
    # static rules: r3 was served by a fallback (its score judges another model), r4 has no feedback
    assert calibration(data, router="static").n == 0


def test_traffic_over_time(data: WindowData) -> None:
    series = traffic_over_time(data)
    assert series.bucket_s == 60 and len(series.buckets) == 61
    assert series.buckets[0].start == math.floor((NOW - 3600) / 60) * 60
    assert (series.requests, sum(b.requests for b in series.buckets)) == (5, 5)
    assert series.cost_usd == pytest.approx(0.0135)
    busy = [(b.requests, b.failures, b.by_model) for b in series.buckets if b.requests]
    assert busy == [(1, 0, {"coder": 1}), (1, 0, {"coder": 1}), (1, 0, {"frontier": 1}), (1, 1, {"frontier": 1}),
                    (1, 0, {"mini": 1})]  # fmt: skip
    hourly = traffic_over_time(data, bucket_s=3600)
    assert [b.requests for b in hourly.buckets if b.requests] == [5]
    assert sum(b.prompt_tokens for b in hourly.buckets) == 60 and hourly.buckets[0].cost_usd == pytest.approx(0.0135)


def test_bucket_widths_and_bars() -> None:
    assert (bucket_width(3600), bucket_width(86_400), bucket_width(7 * 86_400)) == (60, 1800, 3 * 3600)
    assert bar(0.5, 4) == "██  " and bar(1.0, 2) == "██" and bar(0.0, 3) == "   "
    assert bar(1 / 16, 2) == "▏ "


def test_recent_decisions_newest_first(data: WindowData) -> None:
    recent = recent_decisions(data, limit=3)
    assert [d.request_id for d in recent] == ["r5", "r4", "r3"]
    assert (recent[2].attempts, recent[2].latency_ms, recent[2].cost_usd) == (2, 300.0, pytest.approx(0.01))
    assert recent[0].feedback_score == 0.5 and recent[1].cost_usd is None


def test_empty_window_gives_empty_analyses(store: Store) -> None:
    data = load_window(store, Window(NOW + 10, NOW + 20))
    analysis = analyze(data)
    assert analysis.totals.requests == 0 and analysis.totals.success.rate is None
    assert analysis.models == [] and analysis.success.cells == [] and analysis.latency.models == []
    assert analysis.confusion.n == 0 and analysis.calibration.n == 0 and analysis.calibration.brier is None
    assert analysis.ab is None and analysis.recent == []
    json.dumps(analysis.to_dict(), allow_nan=False)


def test_learning_events_and_ab_summary_keep_to_the_window(store: Store) -> None:
    store.write_batch([
        LearningEvent(NOW - 100, "promotion", "learned", "v2", "v1", {"dr": 0.7}, "better"),
        LearningEvent(NOW - 9000, "rejection", "learned", "v0", None, {}, "older"),
        decision("a1", NOW - 50, "coding", "keywords", [], "coder", "coder", "static", "success", 0.5),
    ])  # fmt: skip
    arms = [("c1", "control"), ("c2", "control"), ("t1", "treatment"), ("s1", "shadow")]
    store.write_batch([
        dataclasses.replace(decision(rid, NOW - 40, "coding", "keywords", [], "coder", "coder", "static", "success",
                                     0.5), ab_arm=arm) for rid, arm in arms
    ])  # fmt: skip
    analysis = analyze_store(store, WINDOW)
    assert [(e["kind"], e["version"]) for e in analysis.learning_events] == [("promotion", "v2")]
    ab = analysis.ab
    assert ab is not None and ab["n_in_test"] == 3 and ab["excluded"] == {"shadow": 1}
    assert ab["arms"]["control"]["n"] == 2 and ab["arms"]["treatment"]["n"] == 1
    assert ab_summary(store.ab_outcomes(None), Window(NOW + 1, NOW + 2)) is None
    document = json.loads(json.dumps(analysis.to_dict(), allow_nan=False))
    assert document["totals"]["requests"] == 10 and document["window"] == {"since": NOW - 3600, "until": NOW}


class FakeRouter:
    models = ("coder", "mini")
    version = "v7"

    def __init__(self) -> None:
        self.seen = 0

    def feature_importance(self, data, seed: int = 0) -> dict[str, float]:  # type: ignore[no-untyped-def]
        self.seen = len(data)
        return {"task": 0.01, "embedding": 0.05, "length": -0.001}


def test_feature_importance_ranks_groups_and_says_why_when_it_cannot() -> None:
    rows = [{"request_id": f"q{i}", "prompt_text": f"p{i}", "task": "coding", "model": ("coder", "mini", "gone")[i % 3],
             "quality": 1.0, "cost_usd": None} for i in range(30)]  # fmt: skip
    router = FakeRouter()
    result = feature_importance(router, rows)
    assert router.seen == 20 and result.n == 20 and result.version == "v7"  # rows of models it predicts
    assert list(result.groups) == ["embedding", "task", "length"] and result.status is None
    assert "permutation importance" in result.method
    few = feature_importance(FakeRouter(), rows[:5])
    assert few.groups == {} and few.n == 4 and "fewer than 10" in str(few.status)
    missing = feature_importance(None, [], "no learned-router artifact")
    assert missing.groups == {} and missing.status == "no learned-router artifact"


def test_feature_importance_of_a_fitted_learned_router_on_logged_outcomes() -> None:
    from proxy.evaluation.offline import registry_for
    from router_plugins.outcomes import load_outcomes
    from router_plugins.routers import LearnedRouter, RouterContext

    from .test_learned_router import FIXTURES, bag_of_words, synthetic

    data = synthetic(load_outcomes(FIXTURES / "train.jsonl"))
    router = LearnedRouter(registry_for(data), RouterContext(static_embed=bag_of_words))
    router.fit(data)
    # as logged: one served model per request, its feedback score
    rows = [{"request_id": f"{i}-{m}", "prompt_text": text, "task": task, "model": model,
             "quality": float(data.quality[i, m]), "cost_usd": None}
            for i, (text, task) in enumerate(zip(data.texts, data.tasks)) for m, model in enumerate(data.models)]  # fmt: skip
    result = feature_importance(router, rows)
    assert result.n == len(rows) == 240 and result.version == router.version and result.status is None
    assert set(result.groups) == {"embedding", "length", "task", "digits", "code", *router.format_groups}
    assert next(iter(result.groups)) in ("task", "embedding") and result.groups["task"] > 0


def test_feature_importance_that_fails_says_why() -> None:
    class Mismatched(FakeRouter):
        def feature_importance(self, data, seed: int = 0) -> dict[str, float]:  # type: ignore[no-untyped-def]
            raise ValueError("matmul: dimension mismatch")

    rows = [{"request_id": f"q{i}", "prompt_text": "p", "task": None, "model": "coder", "quality": 0.5}
            for i in range(12)]  # fmt: skip
    result = feature_importance(Mismatched(), rows)
    assert result.groups == {} and result.status == "not measured: matmul: dimension mismatch"


def test_a_window_from_the_epoch_starts_its_series_at_its_first_request(store: Store) -> None:
    series = traffic_over_time(load_window(store, Window(0.0, NOW)))
    assert series.bucket_s == 300 and series.buckets[0].start == math.floor((NOW - 7200) / 300) * 300
    assert series.requests == 6 and len(series.buckets) == 25 and series.buckets[0].requests == 1
    empty = traffic_over_time(load_window(store, Window(0.0, 1.0)))
    assert (empty.requests, len(empty.buckets)) == (0, 1)
