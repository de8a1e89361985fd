"""Scoring the task classifier cascade on labelled prompts `{text, task, accept}`."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from router_plugins.classify import StaticEmbedder, TaskClassifier, build_classifier
from router_plugins.registry import load_registry


def load_labelled(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record.get("text"), str) or not isinstance(record.get("task"), str):
                raise ValueError(f"{path}:{line_no}: each record needs 'text' and 'task'")
            record.setdefault("accept", [record["task"]])
            records.append(record)
    return records


def classifier_for(config: Path, data_dir: Path) -> TaskClassifier:
    registry = load_registry(config)
    embedder = None
    if registry.router.classifier.static_embedding.enabled:
        embedder = StaticEmbedder.load_or_build(data_dir)
    return build_classifier(registry, embedder)


def evaluate_tasks(test: Path, config: Path, data_dir: Path) -> dict[str, Any]:
    return score_classifier(classifier_for(config, data_dir), load_labelled(test))


def score_classifier(classifier: TaskClassifier, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (a prediction counts when it is in `accept`), per-label precision/recall, confusion, layers, latency."""
    latencies, correct = [], 0
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    layer_count: Counter[str] = Counter()
    layer_correct: Counter[str] = Counter()
    predicted_count: Counter[str] = Counter()
    predicted_right: Counter[str] = Counter()
    label_count: Counter[str] = Counter()
    label_right: Counter[str] = Counter()
    for record in records:
        started = time.perf_counter()
        result = classifier.classify(record["text"])
        latencies.append((time.perf_counter() - started) * 1000)
        ok = result.task in record["accept"]
        correct += ok
        confusion[record["task"]][result.task] += 1
        layer_count[result.layer] += 1
        layer_correct[result.layer] += ok
        predicted_count[result.task] += 1
        predicted_right[result.task] += ok
        label_count[record["task"]] += 1
        label_right[record["task"]] += ok
    n = len(records)
    labels = sorted(set(label_count) | set(predicted_count))
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {
        "n": n,
        "accuracy": correct / n if n else None,
        "per_label": {
            label: {
                "support": label_count[label],
                "recall": label_right[label] / label_count[label] if label_count[label] else None,
                "precision": predicted_right[label] / predicted_count[label] if predicted_count[label] else None,
            }
            for label in labels
        },
        "confusion": {truth: dict(row) for truth, row in sorted(confusion.items())},
        "layers": {
            layer: {"share": layer_count[layer] / n, "accuracy": layer_correct[layer] / layer_count[layer]}
            for layer in sorted(layer_count)
        },
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
    }


def format_tasks(report: dict[str, Any]) -> str:
    lines = [f"task classifier on {report['n']} prompts: accuracy {report['accuracy']:.3f}"]
    lines.append(f"  latency p50 {report['latency_ms']['p50']:.3f} ms, p99 {report['latency_ms']['p99']:.3f} ms")
    for layer, row in report["layers"].items():
        lines.append(f"  layer {layer:<17} share {row['share']:.3f}  accuracy {row['accuracy']:.3f}")
    for label, row in report["per_label"].items():
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        lines.append(f"  {label:<14} support {row['support']:<6} recall {recall}  precision {precision}")
    return "\n".join(lines)
