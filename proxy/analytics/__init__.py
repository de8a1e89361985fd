"""Analyses of the store over a time window: pure functions of the window's rows, returning dataclasses of plain
JSON types (`dataclasses.asdict` / `Analysis.to_dict()`). `autoroute report --html` and `autoroute top` render them;
the web dashboard serves them as JSON.

    data = load_window(store, Window.last(24 * 3600))   # the only read of the store (`proxy.store_analytics`)
    traffic_over_time(data)        # TrafficSeries: requests, failures, spend, tokens per time bucket
    model_stats(data)              # [ModelStats]: per model traffic, success (Wilson 95 %), latency, spend, feedback
    success_matrix(data)           # SuccessMatrix: task × model attempt success (Wilson 95 %) and mean score
    latency_distributions(data)    # LatencyReport: per model quantiles and a histogram over shared log bins
    layer_report(data)             # LayerReport: the classifier cascade's layer mix and per-layer performance
    confusion_matrix(data)         # ConfusionMatrix: right task (feedback) × classified task
    calibration(data)              # Calibration: the learned router's predicted success vs feedback, by bin
    recent_decisions(data)         # [DecisionSummary]: newest first
    analyze_store(store, window)   # Analysis: all of the above, the A/B summary and the learning events
"""

from .classifier import ConfusionMatrix, LayerReport, LayerStats, confusion_matrix, layer_report
from .estimates import Distribution, Rate, distribution, rate
from .learned import (
    Calibration,
    CalibrationBin,
    FeatureImportance,
    calibration,
    feature_importance,
    load_learned_router,
)
from .overview import (
    Analysis,
    DecisionSummary,
    Totals,
    ab_summary,
    analyze,
    analyze_store,
    learning_events,
    recent_decisions,
    totals,
)
from .traffic import (
    LatencyReport,
    ModelLatency,
    ModelStats,
    SuccessCell,
    SuccessMatrix,
    TrafficBucket,
    TrafficSeries,
    latency_distributions,
    model_stats,
    success_matrix,
    traffic_over_time,
)
from .window import AnalyticsStore, Attempt, Request, Window, WindowData, build_window, load_window

__all__ = [
    "Analysis", "AnalyticsStore", "Attempt", "Calibration", "CalibrationBin", "ConfusionMatrix", "DecisionSummary",
    "Distribution", "FeatureImportance", "LatencyReport", "LayerReport", "LayerStats", "ModelLatency", "ModelStats",
    "Rate", "Request", "SuccessCell", "SuccessMatrix", "Totals", "TrafficBucket", "TrafficSeries", "Window",
    "WindowData", "ab_summary", "analyze", "analyze_store", "build_window", "calibration", "confusion_matrix",
    "distribution", "feature_importance", "latency_distributions", "layer_report", "learning_events",
    "load_learned_router", "load_window", "model_stats", "rate", "recent_decisions", "success_matrix", "totals",
    "traffic_over_time",
]  # fmt: skip
