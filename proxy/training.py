"""`autoroute train`: fit the learned router on routing-outcome files and logged feedback, write an artifact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from router_plugins.classify import StaticEmbedder
from router_plugins.outcomes import OutcomeSet, concatenate, from_feedback, load_outcomes
from router_plugins.registry import load_registry
from router_plugins.routers import LearnedRouter, RouterContext

from .evaluation.offline import evaluate_cv
from .store import open_store

ARTIFACTS = "artifacts"
DB_FILE = "autoroute.db"


def training_set(config: Path, data_files: list[Path], data_dir: Path) -> OutcomeSet:
    """Outcome files and the store's feedback-labelled decisions, over the registry's models."""
    registry = load_registry(config)
    models = [m.name for m in registry.models]
    sets = [load_outcomes(path) for path in data_files]
    db = data_dir / DB_FILE
    if db.exists():
        store = open_store(str(db))
        try:
            sets.append(from_feedback(store.labelled_outcomes(), models))
        finally:
            store.close()
    data = concatenate(sets, models)
    if len(data) == 0:
        raise ValueError("nothing to train on: no outcome file names a registry model and the store has no feedback")
    return data


def train(config: Path, data_files: list[Path], data_dir: Path, folds: int = 5) -> dict[str, Any]:
    started = time.perf_counter()
    registry = load_registry(config)
    data = training_set(config, data_files, data_dir)
    static = StaticEmbedder.load_or_build(data_dir)
    context = RouterContext(static_embed=static.embed)
    report: dict[str, Any] = {"prompts": len(data), "models": data.models}
    if folds >= 2 and len(data) >= folds * 4:
        cv = evaluate_cv(LearnedRouter.name, data, folds, context=context)
        report["cv"] = {k: cv[k] for k in ("max_quality", "aiq", "quality_at_best_cost", "cost_to_match_best")}
        report["cv"]["best_single"] = cv["best_single"]
    router = LearnedRouter(registry, context)
    router.fit(data)
    path = router.save(data_dir / ARTIFACTS, extra={"cv": report.get("cv")})
    report.update(artifact=str(path), version=router.version, seconds=round(time.perf_counter() - started, 2))
    return report


def train_classifier(config: Path, labelled_files: list[Path], data_dir: Path) -> dict[str, Any]:
    """Fit the classifier's layers 3-4 (transformer kNN + head) on the registry's examples and labelled prompts."""
    from router_plugins.classify.model import MODEL_FILE, fit_task_model
    from router_plugins.classify.training import load_labelled
    from router_plugins.embeddings import EmbeddingCache

    started = time.perf_counter()
    registry = load_registry(config)
    prompts = [p for path in labelled_files for p in load_labelled(path)]
    model = fit_task_model(registry.tasks, prompts, EmbeddingCache(data_dir / "cache").embed)
    path = model.save(data_dir / ARTIFACTS / MODEL_FILE)
    return {"artifact": str(path), "labelled": len(prompts), "tasks": list(model.tasks),
            "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
