"""Traffic, spend, success and latency: over time, per model and per task × model.

Success is counted per attempt (`model_performance.outcome == "success"`): a fallback's failed first attempt counts
against the model that failed. Feedback scores judge the answer served, so they count for the model that served.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from .estimates import Distribution, Rate, distribution, mean, rate
from .window import WindowData

BUCKET_WIDTHS_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 7 * 86_400)
MAX_BUCKETS = 60
MAX_SPAN_S = 366 * 86_400.0
"""A longer window (`--since 0`) starts its series at its first request instead of its start."""
LATENCY_BINS = 20
UNKNOWN = "(unknown)"


@dataclass(frozen=True)
class TrafficBucket:
    start: float
    """Unix seconds; the bucket is [start, start + bucket_s)."""
    requests: int
    failures: int
    """Requests whose final status was not `success`."""
    cost_usd: float
    """Summed over the known costs of the bucket's attempts."""
    prompt_tokens: int
    completion_tokens: int
    by_model: dict[str, int] = field(default_factory=dict)
    """Requests per model that served them."""


@dataclass(frozen=True)
class TrafficSeries:
    bucket_s: int
    buckets: list[TrafficBucket]
    requests: int
    cost_usd: float


def bucket_width(span_s: float) -> int:
    """The smallest width from `BUCKET_WIDTHS_S` that covers `span_s` in at most `MAX_BUCKETS` buckets."""
    for width in BUCKET_WIDTHS_S:
        if span_s / width <= MAX_BUCKETS:
            return width
    return BUCKET_WIDTHS_S[-1]


def traffic_over_time(data: WindowData, bucket_s: int | None = None) -> TrafficSeries:
    """Requests, failures, spend and tokens per time bucket, from the window's start (empty buckets included)."""
    window = data.window
    start = window.since
    if window.seconds > MAX_SPAN_S:
        start = data.requests[0].created_at if data.requests else window.until
    width = bucket_s or bucket_width(window.until - start)
    first = math.floor(start / width) * width
    count = max(1, math.ceil((window.until - first) / width))
    rows: list[dict] = [{"requests": 0, "failures": 0, "cost": [], "prompt": 0, "completion": 0, "models": Counter()}
                        for _ in range(count)]  # fmt: skip
    for request in data.requests:
        index = min(max(int((request.created_at - first) // width), 0), count - 1)
        row = rows[index]
        row["requests"] += 1
        row["failures"] += 0 if request.success else 1
        row["models"][request.selected_model or UNKNOWN] += 1
        for attempt in request.attempts:
            if attempt.cost_usd is not None:
                row["cost"].append(attempt.cost_usd)
            row["prompt"] += attempt.prompt_tokens or 0
            row["completion"] += attempt.completion_tokens or 0
    buckets = [
        TrafficBucket(first + i * width, r["requests"], r["failures"], math.fsum(r["cost"]), r["prompt"],
                      r["completion"], dict(sorted(r["models"].items())))
        for i, r in enumerate(rows)
    ]  # fmt: skip
    return TrafficSeries(width, buckets, len(data.requests), math.fsum(b.cost_usd for b in buckets))


@dataclass(frozen=True)
class ModelStats:
    model: str
    requests: int
    """Requests it served (it was the last model tried)."""
    share: float | None
    """Of all requests in the window."""
    attempts: int
    success: Rate
    """Successful attempts of all its attempts."""
    latency_ms: Distribution
    """Of its successful attempts."""
    ttft_ms: Distribution
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    mean_score: float | None
    """Mean feedback score of the requests it served; None without feedback."""
    scored: int
    errors: dict[str, int] = field(default_factory=dict)
    """Failed attempts by error class."""


def model_stats(data: WindowData) -> list[ModelStats]:
    """Per model (most requests first): traffic, success, latency, spend and feedback over the window."""
    attempts = defaultdict(list)
    for attempt in data.attempts:
        attempts[attempt.model].append(attempt)
    served = Counter(r.selected_model for r in data.requests if r.selected_model)
    scores = defaultdict(list)
    for request in data.requests:
        if request.selected_model and request.feedback_score is not None:
            scores[request.selected_model].append(request.feedback_score)
    total = len(data.requests)
    out = []
    for model in sorted(set(attempts) | set(served), key=lambda m: (-served[m], -len(attempts[m]), m)):
        mine = attempts[model]
        good = [a for a in mine if a.success]
        errors = Counter(a.error_class or a.outcome for a in mine if not a.success)
        out.append(ModelStats(
            model, served[model], served[model] / total if total else None, len(mine), rate(len(good), len(mine)),
            distribution([a.latency_ms for a in good if a.latency_ms is not None]),
            distribution([a.ttft_ms for a in good if a.ttft_ms is not None]),
            math.fsum(a.cost_usd for a in mine if a.cost_usd is not None),
            sum(a.prompt_tokens or 0 for a in mine), sum(a.completion_tokens or 0 for a in mine),
            mean(scores[model]), len(scores[model]), dict(errors.most_common()),
        ))  # fmt: skip
    return out


@dataclass(frozen=True)
class SuccessCell:
    task: str
    model: str
    success: Rate
    mean_score: float | None
    scored: int


@dataclass(frozen=True)
class SuccessMatrix:
    tasks: list[str]
    models: list[str]
    cells: list[SuccessCell]
    """One per (task, model) pair with at least one attempt, in `tasks` × `models` order."""

    def cell(self, task: str, model: str) -> SuccessCell | None:
        return next((c for c in self.cells if c.task == task and c.model == model), None)


def success_matrix(data: WindowData) -> SuccessMatrix:
    """Per task × model: attempt success rate with its Wilson interval and the mean feedback score of the answers
    that model served for that task."""
    outcomes: dict[tuple[str, str], list[bool]] = defaultdict(list)
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for request in data.requests:
        task = request.task or UNKNOWN
        for attempt in request.attempts:
            outcomes[task, attempt.model].append(attempt.success)
        if request.selected_model and request.feedback_score is not None:
            scores[task, request.selected_model].append(request.feedback_score)
    keys = set(outcomes) | set(scores)
    tasks = sorted({t for t, _ in keys})
    models = sorted({m for _, m in keys})
    cells = [
        SuccessCell(t, m, rate(sum(outcomes[t, m]), len(outcomes[t, m])), mean(scores[t, m]), len(scores[t, m]))
        for t in tasks for m in models if (t, m) in keys
    ]  # fmt: skip
    return SuccessMatrix(tasks, models, cells)


@dataclass(frozen=True)
class ModelLatency:
    model: str
    latency_ms: Distribution
    counts: list[int]
    """Attempts per bin of `LatencyReport.edges_ms`."""


@dataclass(frozen=True)
class LatencyReport:
    edges_ms: list[float]
    """Bin edges shared by every model (log-spaced between the fastest and the slowest attempt)."""
    models: list[ModelLatency]


def latency_distributions(data: WindowData, bins: int = LATENCY_BINS) -> LatencyReport:
    """Latency of successful attempts per model: quantiles and a histogram over common log-spaced bins."""
    values: dict[str, list[float]] = defaultdict(list)
    for attempt in data.attempts:
        if attempt.success and attempt.latency_ms is not None and attempt.latency_ms > 0:
            values[attempt.model].append(attempt.latency_ms)
    if not values:
        return LatencyReport([], [])
    low = min(min(v) for v in values.values())
    high = max(max(v) for v in values.values())
    if high <= low:
        edges = np.array([low * 0.9, high * 1.1])
    else:
        edges = np.geomspace(low, high, bins + 1)
    models = [
        ModelLatency(m, distribution(v), [int(c) for c in np.histogram(v, edges)[0]])
        for m, v in sorted(values.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    return LatencyReport([float(e) for e in edges], models)
