"""The window's totals, its newest decisions, its learning events and its A/B test; and `analyze`, every analysis of
one window in one JSON-serialisable object (what the report renders and the dashboard serves)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .classifier import ConfusionMatrix, LayerReport, confusion_matrix, layer_report
from .estimates import Distribution, Rate, distribution, rate
from .learned import Calibration, FeatureImportance, calibration
from .traffic import (
    LatencyReport,
    ModelStats,
    SuccessMatrix,
    TrafficSeries,
    latency_distributions,
    model_stats,
    success_matrix,
    traffic_over_time,
)
from .window import AnalyticsStore, Window, WindowData, load_window

RECENT_DECISIONS = 50
MAX_LEARNING_EVENTS = 10_000


@dataclass(frozen=True)
class Totals:
    requests: int
    success: Rate
    """Requests whose final status was `success`."""
    fallbacks: int
    """Requests that needed more than one attempt."""
    cost_usd: float
    latency_ms: Distribution
    """Of each successful request's answering attempt."""
    scored: int
    """Requests with a feedback score."""
    mean_score: float | None
    labelled: int
    """Requests whose feedback named their task."""


def totals(data: WindowData) -> Totals:
    requests = data.requests
    scores = [r.feedback_score for r in requests if r.feedback_score is not None]
    return Totals(
        len(requests), rate(sum(r.success for r in requests), len(requests)),
        sum(len(r.attempts) > 1 for r in requests),
        math.fsum(c for r in requests if (c := r.cost_usd) is not None),
        distribution([lat for r in requests if r.success and (lat := r.latency_ms) is not None]),
        len(scores), math.fsum(scores) / len(scores) if scores else None,
        sum(r.feedback_task is not None for r in requests),
    )  # fmt: skip


@dataclass(frozen=True)
class DecisionSummary:
    """One line of the recent-decisions table; the full routing receipt is `GET /v1/decisions/{request_id}`."""

    request_id: str
    created_at: float
    requested_model: str
    task: str | None
    confidence: float | None
    layer: str | None
    routed_model: str | None
    selected_model: str | None
    router: str | None
    router_version: str | None
    status: str | None
    attempts: int
    latency_ms: float | None
    cost_usd: float | None
    feedback_score: float | None
    ab_arm: str | None


def recent_decisions(data: WindowData, limit: int = RECENT_DECISIONS) -> list[DecisionSummary]:
    """The newest `limit` decisions of the window, newest first."""
    return [
        DecisionSummary(r.request_id, r.created_at, r.requested_model, r.task, r.confidence, r.layer, r.routed_model,
                        r.selected_model, r.router, r.router_version, r.status, len(r.attempts), r.latency_ms,
                        r.cost_usd, r.feedback_score, r.ab_arm)
        for r in reversed(data.requests[-limit:])
    ]  # fmt: skip


def learning_events(rows: Sequence[Mapping[str, Any]], window: Window) -> list[dict[str, Any]]:
    """The window's learning events (promotions, rejections, pins, rollbacks), newest first."""
    keys = ("created_at", "kind", "router", "version", "champion_version", "reason", "scores")
    events = [{k: row.get(k) for k in keys} for row in rows if float(row["created_at"]) in window]
    return sorted(events, key=lambda e: -float(e["created_at"]))


def ab_summary(rows: Sequence[Mapping[str, Any]], window: Window, metric: str = "quality") -> dict[str, Any] | None:
    """`autoroute report ab` over the window (rows of `Store.ab_outcomes`); None when no decision had an arm."""
    from proxy.evaluation.ab import ab_report

    mine = [r for r in rows if float(r["created_at"]) in window]
    if not mine:
        return None
    return ab_report(mine, metric=metric, since=window.since)


@dataclass(frozen=True)
class Analysis:
    window: Window
    truncated: bool
    totals: Totals
    traffic: TrafficSeries
    models: list[ModelStats]
    success: SuccessMatrix
    latency: LatencyReport
    layers: LayerReport
    confusion: ConfusionMatrix
    calibration: Calibration
    feature_importance: FeatureImportance | None
    ab: dict[str, Any] | None
    learning_events: list[dict[str, Any]]
    recent: list[DecisionSummary]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (`json.dumps` takes it as is)."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    # asdict keeps tuples and the A/B report's tuples; NaN and infinities are not JSON.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def analyze(
    data: WindowData,
    ab_rows: Sequence[Mapping[str, Any]] = (),
    event_rows: Sequence[Mapping[str, Any]] = (),
    importance: FeatureImportance | None = None,
) -> Analysis:
    """Every analysis of one window; the A/B and learning-event rows come from the store as they are."""
    return Analysis(
        data.window, data.truncated, totals(data), traffic_over_time(data), model_stats(data), success_matrix(data),
        latency_distributions(data), layer_report(data), confusion_matrix(data), calibration(data), importance,
        ab_summary(ab_rows, data.window), learning_events(event_rows, data.window), recent_decisions(data),
    )  # fmt: skip


def analyze_store(store: AnalyticsStore, window: Window, importance: FeatureImportance | None = None) -> Analysis:
    """`analyze` over a window read from `store`."""
    data = load_window(store, window)
    return analyze(data, store.ab_outcomes(window.since), store.learning_events(MAX_LEARNING_EVENTS), importance)
