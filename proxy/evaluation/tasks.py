"""Scoring the task classifier cascade on labelled prompts `{text, task, accept}`."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router_plugins.classify import StaticEmbedder, TaskClassifier
from router_plugins.classify.cascade import SKIPPED_NO_EMBEDDING as SKIPPED
from router_plugins.classify.training import load_labelled as read_labelled
from router_plugins.datadir import DataDir
from router_plugins.language import detect_language
from router_plugins.registry import load_registry


def load_labelled(path: Path) -> list[dict[str, Any]]:
    """Labelled prompts as scoring records `{text, task, accept}`."""
    return [{"text": p.text, "task": p.task, "accept": list(p.accept)} for p in read_labelled(path)]


def served_classifier(config: Path | None = None, data_dir: Path | DataDir | None = None) -> TaskClassifier:
    """The cascade a gateway on this config and data directory serves once its first-start work is done.

    Built by the gateway's assembly (`router_plugins.assembly`: the tuned thresholds overlaid) from the same sources
    (`ClassifierSources`): the data directory's text model or the shipped one, the corrections from the store's
    feedback, and layers 3-4 only where the gateway runs them inline (a GPU, or `transformer_budget_ms`), fitted here
    as the first start would when they are missing. `data_dir` defaults to the config's `storage.data_dir`, resolved
    as `autoroute serve` resolves it.
    """
    from router_plugins.assembly import Parts
    from router_plugins.assembly import served_classifier as assembled_classifier
    from router_plugins.classify.assembly import ClassifierSources, transformer_inline
    from router_plugins.classify.model import MODEL_FILE, fit_task_model
    from router_plugins.embeddings import EmbeddingCache

    from ..store import open_configured_store
    from ..training import classifier_prompts

    registry = load_registry(config or Path("config.yaml"))
    datadir = DataDir.resolve(registry, data_dir)
    sources = ClassifierSources(datadir.artifacts)
    settings = registry.router.classifier
    text_model = sources.text_model()
    usable_text_model = text_model is not None and not text_model.mismatch([t.name for t in registry.tasks])
    embedder = None
    if settings.static_embedding.enabled and not (settings.text_model.enabled and usable_text_model):
        embedder = StaticEmbedder.load_or_build(datadir)
    store = open_configured_store(registry.storage, datadir, create=False)
    try:
        labels = store.task_labels() if store is not None else []
        task_model = None
        if transformer_inline(settings):
            task_model = sources.task_model()
            if task_model is None or task_model.is_stale(registry.tasks):
                fitted = fit_task_model(
                    registry.tasks, classifier_prompts(datadir, store), EmbeddingCache(datadir.cache).embed
                )
                fitted.save(datadir.path(MODEL_FILE))
                task_model = fitted
    finally:
        if store is not None:
            store.close()
    parts = Parts(embedder, text_model, task_model, sources.corrections(labels, registry))
    return assembled_classifier(registry, datadir.artifacts, parts)


def evaluate_tasks(test: Path, config: Path, data_dir: Path | DataDir | None = None) -> dict[str, Any]:
    from router_plugins.embeddings import EmbeddingCache

    datadir = DataDir.resolve(config, data_dir)
    classifier = served_classifier(config, datadir)
    embed = EmbeddingCache(datadir.cache).embed if classifier.embedding_layers else None
    return score_classifier(classifier, load_labelled(test), embed)


def _languages(texts: Sequence[str]) -> tuple[list[str], list[float]]:
    """Each text's language, and the milliseconds detecting it took (the request path's first step)."""
    languages, latencies = [], []
    for text in texts:
        started = time.perf_counter()
        languages.append(detect_language(text))
        latencies.append((time.perf_counter() - started) * 1000)
    return languages, latencies


def score_classifier(
    classifier: TaskClassifier,
    records: list[dict[str, Any]],
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Accuracy (a prediction counts when it is in `accept`), per-label precision/recall, confusion, layers, latency.

    Latency is the request path's: the language, then the cheap layers (1-2) as the cascade timed them; the share
    that needed the transformer embedding is reported beside it.
    """
    texts = [r["text"] for r in records]
    languages, language_ms = _languages(texts)
    results = classifier.classify_batch(texts, embed)
    layers = set(classifier.embedding_layers)
    cheap_ms = [sum(a.latency_ms for a in r.attempts if a.layer not in layers) for r in results]
    latencies = [a + b for a, b in zip(language_ms, cheap_ms)]
    needed_embedding = sum(1 for r in results if any(a.layer in layers and a.detail != SKIPPED for a in r.attempts))
    correct = 0
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    layer_count: Counter[str] = Counter()
    layer_correct: Counter[str] = Counter()
    predicted_count: Counter[str] = Counter()
    predicted_right: Counter[str] = Counter()
    label_count: Counter[str] = Counter()
    label_right: Counter[str] = Counter()
    by_language: dict[str, list[bool]] = defaultdict(list)
    for record, result, language in zip(records, results, languages):
        ok = result.task in record["accept"]
        by_language[language].append(ok)
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
        "per_language": {
            language: {"support": len(oks), "accuracy": sum(oks) / len(oks)}
            for language, oks in sorted(by_language.items(), key=lambda item: (-len(item[1]), item[0]))
        },
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
        },  # fmt: skip
        "needed_embedding": needed_embedding / n if n else None,
    }


def format_tasks(report: dict[str, Any]) -> str:
    lines = [f"task classifier on {report['n']} prompts: accuracy {report['accuracy']:.3f}"]
    lines.append(
        f"  request-path latency (language + cheap layers) p50 {report['latency_ms']['p50']:.3f} ms, "
        f"p99 {report['latency_ms']['p99']:.3f} ms; "
        f"{report['needed_embedding']:.1%} needed the transformer embedding"
    )
    for layer, row in report["layers"].items():
        lines.append(f"  layer {layer:<17} share {row['share']:.3f}  accuracy {row['accuracy']:.3f}")
    for label, row in report["per_label"].items():
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        lines.append(f"  {label:<14} support {row['support']:<6} recall {recall}  precision {precision}")
    for language, row in report["per_language"].items():
        if row["support"] >= 10:
            lines.append(f"  language {language:<5} support {row['support']:<6} accuracy {row['accuracy']:.3f}")
    return "\n".join(lines)
