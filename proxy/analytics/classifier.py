"""The task classifier's cascade seen from the store: which layer decided how many requests, how each layer did, and,
where feedback named a request's right task, the confusion matrix and each layer's accuracy."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from router_plugins.classify.cascade import FALLBACK_LAYER, SKIPPED_NO_EMBEDDING

from .estimates import Rate, mean, rate
from .window import WindowData

FALLBACK = FALLBACK_LAYER
SKIPPED = SKIPPED_NO_EMBEDDING


@dataclass(frozen=True)
class LayerStats:
    layer: str
    decided: int
    """Requests whose task this layer gave."""
    share: float | None
    """`decided` of all requests in the window."""
    attempts: int
    """Requests this layer was asked about (skipped attempts left out)."""
    decide_rate: float | None
    """`decided` / `attempts`: how often it was sure enough when asked."""
    mean_confidence: float | None
    """Over its attempts."""
    mean_latency_ms: float | None
    """Over its attempts: what the layer itself took."""
    accuracy: Rate
    """Of the requests it decided that feedback named a task for, the share it got right."""


@dataclass(frozen=True)
class LayerReport:
    requests: int
    layers: list[LayerStats]
    """In cascade order (as the attempts were logged), then any layer only seen deciding."""
    judged: int
    """Requests whose feedback named their task."""
    accuracy: Rate


def layer_report(data: WindowData) -> LayerReport:
    """The cascade overview (requests per deciding layer and their share) and per-layer performance."""
    order: dict[str, None] = {}
    confidences: dict[str, list[float]] = defaultdict(list)
    latencies: dict[str, list[float]] = defaultdict(list)
    for request in data.requests:
        for attempt in request.layer_attempts:
            layer = str(attempt.get("layer"))
            order.setdefault(layer, None)
            if attempt.get("detail") == SKIPPED:
                continue
            confidences[layer].append(float(attempt.get("confidence") or 0.0))
            if attempt.get("latency_ms") is not None:
                latencies[layer].append(float(attempt["latency_ms"]))
    decided = Counter(r.layer for r in data.requests if r.layer)
    for layer in decided:
        order.setdefault(layer, None)
    judged: dict[str, list[bool]] = defaultdict(list)
    for request in data.requests:
        if request.feedback_task and request.layer:
            judged[request.layer].append(request.task == request.feedback_task)
    total = len(data.requests)
    layers = []
    for layer in order:
        n = len(confidences[layer])
        layers.append(LayerStats(
            layer, decided[layer], decided[layer] / total if total else None, n, decided[layer] / n if n else None,
            mean(confidences[layer]), mean(latencies[layer]), rate(sum(judged[layer]), len(judged[layer])),
        ))  # fmt: skip
    every = [right for values in judged.values() for right in values]
    return LayerReport(total, layers, len(every), rate(sum(every), len(every)))


@dataclass(frozen=True)
class ConfusionMatrix:
    labels: list[str]
    counts: list[list[int]]
    """counts[i][j]: requests whose right task (from feedback) was labels[i] and that were classified labels[j]."""
    n: int
    accuracy: Rate
    recall: dict[str, float | None]
    """Per right task: the share classified as it."""
    precision: dict[str, float | None]
    """Per classified task: the share that really was it."""


def confusion_matrix(data: WindowData) -> ConfusionMatrix:
    """Right task (feedback) × classified task, over the requests whose feedback named their task."""
    pairs = [(r.feedback_task, r.task or "(none)") for r in data.requests if r.feedback_task]
    labels = sorted({t for pair in pairs for t in pair})
    index = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for right, classified in pairs:
        counts[index[right]][index[classified]] += 1
    correct = sum(counts[i][i] for i in range(len(labels)))
    rows = {label: sum(counts[i]) for label, i in index.items()}
    columns = {label: sum(row[i] for row in counts) for label, i in index.items()}
    return ConfusionMatrix(
        labels, counts, len(pairs), rate(correct, len(pairs)),
        {label: counts[i][i] / rows[label] if rows[label] else None for label, i in index.items()},
        {label: counts[i][i] / columns[label] if columns[label] else None for label, i in index.items()},
    )  # fmt: skip
