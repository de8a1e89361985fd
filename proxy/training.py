"""`autoroute train`: fit the learned router on routing-outcome files and logged feedback, write an artifact."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router_plugins.classify import StaticEmbedder
from router_plugins.classify.training import LabelledPrompt, load_labelled, registry_prompts
from router_plugins.datadir import DataDir
from router_plugins.outcomes import concatenate, from_feedback, load_outcomes
from router_plugins.registry import load_registry
from router_plugins.routers import LearnedRouter, RouterContext

from .evaluation.offline import evaluate_cv
from .store import open_configured_store
from .store_api import LearningStore
from .versions import LEARNED, current_version

if TYPE_CHECKING:
    from router_plugins.classify.model import TaskModel
    from router_plugins.registry import Registry
    from router_plugins.serving import EmbeddingServer

log = logging.getLogger(__name__)

LABELLED_FILE = "task-labelled.jsonl"
"""The labelled prompts `train-classifier` was given, kept so that a refit while serving uses them again."""


CV_SAMPLE = 5_000
"""The printed cross-validated score is computed on at most this many prompts (the fit itself uses them all)."""


def train(
    config: Path,
    data_files: list[Path],
    data_dir: Path | DataDir,
    folds: int = 5,
    force: bool = False,
    cv_sample: int = CV_SAMPLE,
) -> dict[str, Any]:
    """Fit the learned router on outcome files and the store's feedback, then put it through the champion /
    challenger gate: the newest `learning.evaluation_share` of the store's scored `auto` decisions is held out of
    training and both routers are scored on it off-policy; the new version is promoted only when the gate finds
    enough evidence (`proxy.learning.gate`). Without enough logged decisions to judge on, it is not promoted either:
    `force` promotes it without the gate, and the event says so. Every outcome is a `learning_events` row when the
    data directory has a store."""
    from .learning import MIN_EVALUATION_DECISIONS, ChallengeResult, judge, record_challenge, split_logged

    started = time.perf_counter()
    registry = load_registry(config)
    models = [m.name for m in registry.models]
    sets = [load_outcomes(path) for path in data_files]
    datadir = DataDir.of(data_dir)
    store = open_configured_store(registry.storage, datadir, create=False)
    try:
        train_rows, eval_rows = split_logged(store, registry.learning.evaluation_share) if store else ([], [])
        gated = not force and len(eval_rows) >= MIN_EVALUATION_DECISIONS
        held_out = {r["request_id"] for r in eval_rows} if gated else set()
        if store is not None:
            feedback = [r for r in store.labelled_outcomes() if r["request_id"] not in held_out]
            sets.append(from_feedback(feedback, models))
        data = concatenate(sets, models)
        if len(data) == 0:
            raise ValueError(
                "nothing to train on: no outcome file names a registry model and the store has no feedback"
            )
        static = StaticEmbedder.load_or_build(datadir)
        context = RouterContext(static_embed=static.embed)
        report: dict[str, Any] = {"prompts": len(data), "models": data.models}
        sample = data
        if len(data) > cv_sample:
            sample = data.subset(np.sort(np.random.default_rng(0).choice(len(data), cv_sample, replace=False)))
        if folds >= 2 and len(sample) >= folds * 4:
            cv = evaluate_cv(LearnedRouter.name, sample, folds, context=context)
            report["cv"] = {k: cv[k] for k in ("max_quality", "aiq", "quality_at_best_cost", "cost_to_match_best")}
            report["cv"].update(best_single=cv["best_single"], prompts=len(sample))
        router = LearnedRouter(registry, context)
        router.fit(data)
        if store is not None:
            router.fit_latency(store.latency_samples())
        report["latency_measured"] = {m: n for m, (_, _, n) in sorted(router.latency.items())}
        report["operating_points"] = {"note": router.operating_note,
                                      **{p: v.to_dict() for p, v in router.operating_points.items()}}  # fmt: skip
        artifacts = datadir.artifacts
        champion = current_version(artifacts, LEARNED)
        if gated:
            result = judge(
                router, registry, train_rows, eval_rows, artifacts, context, registry.learning.promotion_margin
            )
        elif force:
            path = router.save(artifacts, extra={"cv": report.get("cv")})
            result = ChallengeResult(True, "forced by `autoroute train --force`: the gate was skipped", None, None,
                                     champion, router.version, path, {"outcomes": router.outcome_counts()},
                                     forced=True)  # fmt: skip
        else:
            reason = (f"not promoted: {len(eval_rows)} logged decisions with feedback to judge it on, fewer than "
                      f"{MIN_EVALUATION_DECISIONS} (and the estimate needs an ESS of {registry.learning.min_ess:g}); "
                      "`--force` promotes it without the gate")  # fmt: skip
            evidence = {"logged_decisions": len(eval_rows) + len(train_rows), "min_ess": registry.learning.min_ess,
                        "outcomes": router.outcome_counts()}  # fmt: skip
            result = ChallengeResult(False, reason, None, None, champion, router.version, None, evidence)
        if store is not None:
            record_challenge(store, result)
        report["gate"] = {"promoted": result.promoted, "forced": result.forced, "reason": result.reason,
                          **result.scores(), "champion_version": result.champion_version}  # fmt: skip
    finally:
        if store is not None:
            store.close()
    report.update(artifact=str(result.path) if result.path else None, version=router.version,
                  seconds=round(time.perf_counter() - started, 2))  # fmt: skip
    return report


def classifier_prompts(data_dir: Path | DataDir, store: LearningStore | None) -> list[LabelledPrompt]:
    """What layers 3-4 learn from beside the registry: the kept labelled files, then tasks named by feedback."""
    kept = DataDir.of(data_dir).path(LABELLED_FILE)
    prompts = load_labelled(kept) if kept.exists() else []
    if store is not None:
        prompts += [LabelledPrompt(text, task, "feedback", "feedback") for text, task in store.task_labels()]
    return prompts


async def refit_task_model(
    registry: Registry, data_dir: DataDir, store: LearningStore, server: EmbeddingServer
) -> tuple[TaskModel, int]:
    """Fit layers 3-4 while serving, on the registry's examples, the kept labelled prompts and the tasks feedback named,
    embedding through the serving model; save it; return it and how many feedback labels it used."""
    from router_plugins.classify.model import MODEL_FILE, fit_task_model

    prompts = await asyncio.to_thread(classifier_prompts, data_dir.root, store)
    loop = asyncio.get_running_loop()
    path = data_dir.path(MODEL_FILE)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return asyncio.run_coroutine_threadsafe(server.embed(list(texts)), loop).result()

    def fit() -> TaskModel:
        model = fit_task_model(registry.tasks, prompts, embed)
        model.save(path)
        return model

    model = await asyncio.to_thread(fit)
    feedback = sum(p.origin == "feedback" for p in prompts)
    log.info("task model fitted (%s prompts, %d named by feedback) and saved to %s", model.meta.get("prompts"),
             feedback, path)  # fmt: skip
    return model, feedback


def train_classifier(config: Path, labelled_files: list[Path], data_dir: Path | DataDir | None = None,
                     transformer: bool = True) -> dict[str, Any]:  # fmt: skip
    """Fit the classifier's text model (layer 2) and, with `transformer`, its layers 3-4 (MiniLM kNN + head) on the
    registry's examples, labelled prompts and the tasks feedback named; the labelled files are kept in the data
    directory for later refits. A running gateway on that data directory swaps the new models in within seconds.

    Without labelled prompts or feedback the text model is left alone (the shipped one, fitted on real prompts,
    serves). `data_dir` defaults to the config's `storage.data_dir`, the one `autoroute serve` uses."""
    from router_plugins.classify.model import MODEL_FILE, fit_task_model
    from router_plugins.classify.text_model import ARTIFACT_FILE
    from router_plugins.classify.text_model_fit import fit_calibrated_text_model
    from router_plugins.embeddings import EmbeddingCache

    started = time.perf_counter()
    registry = load_registry(config)
    datadir = DataDir.resolve(registry, data_dir)
    given = [p for path in labelled_files for p in load_labelled(path)]
    if given:
        records = ({"text": p.text, "task": p.task, "accept": list(p.accept), "source": p.source} for p in given)
        lines = "".join(json.dumps(record) + "\n" for record in records).encode()
        datadir.write_atomically(datadir.path(LABELLED_FILE), lambda handle: handle.write(lines))
    store = open_configured_store(registry.storage, datadir, create=False)
    try:
        prompts = classifier_prompts(datadir, store)
    finally:
        if store is not None:
            store.close()
    names = [t.name for t in registry.tasks]
    report: dict[str, Any] = {"data_dir": str(datadir.root), "labelled": len(given),
                              "feedback": sum(p.origin == "feedback" for p in prompts)}  # fmt: skip
    usable = [p for p in prompts if p.task in names and p.text.strip()]
    if usable:
        examples = registry_prompts(registry.tasks)
        texts = [p.text for p in (*examples, *usable)]
        labels = [p.task for p in (*examples, *usable)]
        model = fit_calibrated_text_model(texts, labels, names, meta={"trained_on": "autoroute train-classifier"})
        report["text_model"] = {"artifact": str(model.save(datadir.path(ARTIFACT_FILE))),
                                "prompts": len(texts), "temperature": round(model.temperature, 4)}  # fmt: skip
    else:
        report["text_model"] = "unchanged: no labelled prompts or feedback labels (the shipped model serves)"
    if transformer:
        task_model = fit_task_model(registry.tasks, prompts, EmbeddingCache(datadir.cache).embed)
        report["task_model"] = {"artifact": str(task_model.save(datadir.path(MODEL_FILE))),
                                "tasks": list(task_model.tasks)}  # fmt: skip
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report
