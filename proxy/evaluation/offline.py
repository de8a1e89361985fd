"""Offline evaluation: fit a router on one split of routing outcomes, score its choices on another."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from router_plugins import routing_metrics as metrics
from router_plugins.classify import TaskClassifier
from router_plugins.outcomes import OutcomeSet, kfold_indices
from router_plugins.progress import track
from router_plugins.registry import LiteLLMParams, ModelEntry, Registry
from router_plugins.routers import PromptBatch, RouterContext, RouterTable, TrainableRouter, default_table
from router_plugins.routing_metrics import curve, curve_aiq, two_model_scores

from .operating import FoldWeights, fold_weights, operating_report


def registry_for(data: OutcomeSet) -> Registry:
    """A registry of the data set's models (names and prices), so routers are built as the gateway builds them."""
    models = tuple(
        ModelEntry(
            name=model,
            litellm_params=LiteLLMParams(model=f"openai/{model}"),
            input_cost_per_mtok=data.prices[model].input_cost_per_mtok if model in data.prices else None,
            output_cost_per_mtok=data.prices[model].output_cost_per_mtok if model in data.prices else None,
        )
        for model in data.models
    )
    return Registry(models=models)


def fit_router(
    name: str, train: OutcomeSet, *, context: RouterContext | None = None, table: RouterTable | None = None
) -> TrainableRouter:
    router = (table or default_table()).create(name, registry_for(train), context)
    if not isinstance(router, TrainableRouter):
        raise ValueError(f"router {name!r} cannot be fitted on outcomes (it has no fit/predict)")
    router.fit(train)
    return router


def predict(router: TrainableRouter, data: OutcomeSet) -> tuple[np.ndarray, np.ndarray]:
    """Predicted quality and cost, columns in the data set's model order."""
    prediction = router.predict(PromptBatch(data.texts, data.tasks, data.embeddings))
    columns = [prediction.models.index(m) for m in data.models]
    return prediction.quality[:, columns], prediction.cost[:, columns]


def cross_validated_predictions(
    name: str,
    data: OutcomeSet,
    folds: int,
    *,
    context: RouterContext | None = None,
    seed: int = 0,
    importance: list[dict[str, float]] | None = None,
    table: RouterTable | None = None,
    operating: list[FoldWeights] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold predictions for every prompt, and the model each fold's train split ranks best.

    When `importance` is a list, each fold's held-out feature importance is appended (routers that report one); when
    `operating` is, each fold's test rows and per-preference weights (routers that calibrate them).
    """
    quality = np.zeros_like(data.quality)
    cost = np.zeros_like(data.cost)
    train_quality = np.zeros_like(data.quality)
    for test_idx in track(kfold_indices(len(data), folds, seed), f"{folds}-fold cross-validation", folds, "folds"):
        train_idx = np.setdiff1d(np.arange(len(data)), test_idx)
        train = data.subset(train_idx)
        router = fit_router(name, train, context=context, table=table)
        held_out = data.subset(test_idx)
        quality[test_idx], cost[test_idx] = predict(router, held_out)
        if importance is not None and hasattr(router, "feature_importance"):
            importance.append(router.feature_importance(held_out))
        if operating is not None and (weights := fold_weights(router, test_idx)) is not None:
            operating.append(weights)
        train_quality[test_idx] = np.nanmean(train.quality, axis=0)
    return quality, cost, train_quality


def score(
    router: str,
    data: OutcomeSet,
    pred_quality: np.ndarray,
    pred_cost: np.ndarray,
    train_quality: np.ndarray,
    *,
    per_task: bool = True,
) -> dict[str, Any]:
    """Every number of the report for one test set; `train_quality` [n, M] names the best single model."""
    has_cost = data.has_cost
    test_quality = np.nanmean(data.quality, axis=0)
    test_cost = np.nanmean(data.cost, axis=0) if has_cost else np.full(len(data.models), np.nan)
    best = int(np.argmax(np.nanmean(train_quality, axis=0)))
    best_quality, best_cost = float(test_quality[best]), float(test_cost[best])
    oracle_quality, oracle_cost = metrics.oracle(data.quality, data.cost)
    points = curve(data, pred_quality, pred_cost)
    max_quality = max(p.quality for p in points)
    report: dict[str, Any] = {
        "router": router,
        "n_test": len(data),
        "models": {
            m: {"quality": _num(test_quality[j]), "cost": _num(test_cost[j])} for j, m in enumerate(data.models)
        },
        "best_single": {"model": data.models[best], "quality": best_quality, "cost": _num(best_cost)},
        "oracle": {"quality": oracle_quality, "cost": oracle_cost},
        "curve": [{"cost": _num(p.cost), "quality": p.quality, "setting": p.setting} for p in points],
        "max_quality": max_quality,
        "aiq": None,
        "quality_at_best_cost": None,
        "cost_to_match_best": None,
        "oracle_gap_captured": None,
    }
    if has_cost:
        at_best = metrics.quality_at_cost(points, best_cost)
        report.update(
            aiq=curve_aiq(data, points),
            quality_at_best_cost=at_best,
            cost_to_match_best=metrics.cost_to_match(points, best_quality, best_cost),
            oracle_gap_captured=metrics.oracle_gap_captured(at_best, best_quality, oracle_quality),
        )
    else:
        report["oracle_gap_captured"] = metrics.oracle_gap_captured(max_quality, best_quality, oracle_quality)
    report["calibration"] = calibration(data.quality, pred_quality)
    if len(data.models) == 2:
        report.update(two_model_scores(data, pred_quality, best))
    if per_task:
        report["per_task"] = {
            label: score(
                router, data.subset(rows), pred_quality[rows], pred_cost[rows], train_quality[rows], per_task=False
            )
            for label in data.task_labels()
            if len(rows := np.array([i for i, t in enumerate(data.tasks) if t == label])) > 0
        }
    return report


def calibration(actual: np.ndarray, predicted: np.ndarray, bins: int = 10) -> dict[str, Any] | None:
    """Brier score and a reliability curve of predicted quality against the outcome, over every known outcome.

    Only for routers whose predictions are probabilities (all in [0, 1]); None otherwise.
    """
    known = np.isfinite(actual) & np.isfinite(predicted)
    p, y = predicted[known], actual[known]
    if p.size == 0 or p.min() < 0 or p.max() > 1:
        return None
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    curve = [
        {
            "predicted": float(p[which == b].mean()),
            "observed": float(y[which == b].mean()),
            "n": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]
    return {"brier": float(np.mean((p - y) ** 2)), "reliability": curve}


def evaluate_split(
    name: str, train: OutcomeSet, test: OutcomeSet, *, context: RouterContext | None = None
) -> dict[str, Any]:
    router = fit_router(name, train, context=context)
    quality, cost = predict(router, test)
    train_quality = np.tile(np.nanmean(train.quality, axis=0), (len(test), 1))
    report = score(name, test, quality, cost, train_quality)
    if hasattr(router, "feature_importance"):
        report["feature_importance"] = router.feature_importance(test)
    weights = fold_weights(router, np.arange(len(test)))
    if landing := operating_report(test, quality, cost, [weights] if weights else [], report["best_single"]):
        report["operating_points"] = landing
    return report


def evaluate_cv(
    name: str,
    data: OutcomeSet,
    folds: int,
    *,
    context: RouterContext | None = None,
    seed: int = 0,
    table: RouterTable | None = None,
) -> dict[str, Any]:
    """Pooled out-of-fold scores. Each fold's router is fitted on the other folds only, so whatever it selects
    inside `fit` (the learned router's C) is selected by nested CV."""
    importance: list[dict[str, float]] = []
    operating: list[FoldWeights] = []
    quality, cost, train_quality = cross_validated_predictions(
        name, data, folds, context=context, seed=seed, importance=importance, table=table, operating=operating
    )
    report = score(name, data, quality, cost, train_quality)
    report["folds"] = folds
    if (landing := operating_report(data, quality, cost, operating, report["best_single"])) is not None:
        report["operating_points"] = landing
    if importance:  # a group a fold's router did not keep (a format group) changes nothing there: 0
        groups = list(dict.fromkeys(k for fold in importance for k in fold))
        report["feature_importance"] = {k: float(np.mean([f.get(k, 0.0) for f in importance])) for k in groups}
    return report


def embed_sets(sets: Sequence[OutcomeSet], embed: Callable[[Sequence[str]], np.ndarray]) -> None:
    """Fill in each set's embeddings (one call per set, so a cache keyed by the set's texts is hit next time)."""
    for data in sets:
        if data.embeddings is None:
            data.embeddings = embed(data.texts)


def classify_texts(
    texts: Sequence[str],
    classifier: TaskClassifier,
    *,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> dict[str, str]:
    """The task the gateway assigns to each distinct text (`TaskClassifier.classify_batch`: the transformer embedding
    only for the texts the cheap layers left unsure, when the cascade has layers 3-4 and `embed` is given)."""
    distinct = list(dict.fromkeys(texts))
    results = classifier.classify_batch(distinct, embed)
    return {text: result.task for text, result in zip(distinct, results)}


def with_classifier_tasks(
    sets: Sequence[OutcomeSet],
    classifier: TaskClassifier,
    *,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> tuple[list[OutcomeSet], dict[str, Any]]:
    """Copies of `sets` whose tasks are the classifier's, and its agreement with the data sets' own labels.

    Each distinct text is classified once across all sets. Agreement counts every prompt the data set labels:
    `{"labelled", "share", "confusion": {data set's task: {classifier's task: count}}}`.
    """
    assigned = classify_texts([t for data in sets for t in data.texts], classifier, embed=embed)
    relabelled = [dataclasses.replace(data, tasks=[assigned[t] for t in data.texts]) for data in sets]
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for data in sets:
        for text, label in zip(data.texts, data.tasks):
            if label is not None:
                confusion[label][assigned[text]] += 1
    labelled = sum(sum(row.values()) for row in confusion.values())
    agreed = sum(row[label] for label, row in confusion.items())
    agreement = {
        "labelled": labelled,
        "share": agreed / labelled if labelled else None,
        "confusion": {label: dict(row.most_common()) for label, row in sorted(confusion.items())},
    }
    return relabelled, agreement


def _num(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
