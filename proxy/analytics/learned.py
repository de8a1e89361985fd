"""How good the learned router's predictions are: their calibration against feedback, and which feature groups its
predictions rest on.

Calibration: each decision logs the router's predicted success probability of its first choice (the `quality` of
that alternative); the feedback score (0..1) of the answer is the observed outcome. Only decisions served by that
first choice count (after a fallback the score judges another model's answer).

Feature importance: permutation importance per feature group of `LearnedRouter` (embedding block, log length, task
one-hot, digits, code marker): how much the Brier score of its predicted success probability on the window's scored
outcomes worsens when that group is shuffled across prompts. A per-model coefficient over embedding dimensions would
say nothing; this measures what the predictions actually use, on the traffic the router saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .estimates import Rate, rate
from .window import Request, WindowData

if TYPE_CHECKING:
    from router_plugins.datadir import DataDir
    from router_plugins.outcomes import OutcomeSet
    from router_plugins.registry import Registry

LEARNED = "learned"
CALIBRATION_BINS = 10
MIN_IMPORTANCE_OUTCOMES = 10
MAX_IMPORTANCE_OUTCOMES = 2000
IMPORTANCE_METHOD = (
    "permutation importance: increase of the Brier score of the predicted success probability on the window's "
    "scored outcomes when one feature group is shuffled across prompts (seed 0); higher means the predictions "
    "rely on it more, 0 or below means they do not"
)


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    n: int
    mean_predicted: float | None
    observed: Rate
    """Mean feedback score of the bin, with a Wilson interval (exact for 0/1 scores such as thumbs)."""


@dataclass(frozen=True)
class Calibration:
    router: str
    n: int
    bins: list[CalibrationBin]
    brier: float | None
    """Mean squared difference of predicted probability and score."""
    ece: float | None
    """Expected calibration error: the bins' |mean predicted − mean observed|, weighted by their counts."""


def _calibrated(request: Request, router: str) -> bool:
    return (
        request.router == router and request.predicted_quality is not None and request.feedback_score is not None
        and request.selected_model == request.routed_model
    )  # fmt: skip


def calibration(data: WindowData, router: str = LEARNED, bins: int = CALIBRATION_BINS) -> Calibration:
    """Predicted success probability (equal-width bins over [0, 1]) against the mean feedback score."""
    pairs = [(float(r.predicted_quality), float(r.feedback_score))  # type: ignore[arg-type]  # _calibrated: not None
             for r in data.requests if _calibrated(r, router)]  # fmt: skip
    grouped: list[list[tuple[float, float]]] = [[] for _ in range(bins)]
    for predicted, observed in pairs:
        grouped[min(max(int(predicted * bins), 0), bins - 1)].append((predicted, observed))
    out = []
    for i, members in enumerate(grouped):
        predicted_mean = math.fsum(p for p, _ in members) / len(members) if members else None
        out.append(CalibrationBin(i / bins, (i + 1) / bins, len(members), predicted_mean,
                                  rate(math.fsum(o for _, o in members), len(members))))  # fmt: skip
    if not pairs:
        return Calibration(router, 0, out, None, None)
    brier = math.fsum((p - o) ** 2 for p, o in pairs) / len(pairs)
    ece = math.fsum(b.n * abs((b.mean_predicted or 0.0) - (b.observed.rate or 0.0)) for b in out if b.n) / len(pairs)
    return Calibration(router, len(pairs), out, brier, ece)


class ImportanceModel(Protocol):
    """What feature importance needs of a fitted router (`LearnedRouter` has it)."""

    models: tuple[str, ...]
    version: str

    def feature_importance(self, data: OutcomeSet, seed: int = 0) -> dict[str, float]: ...


@dataclass(frozen=True)
class FeatureImportance:
    method: str
    version: str | None
    """The learned-router version measured."""
    n: int
    """Scored outcomes it was measured on."""
    groups: dict[str, float]
    """Feature group -> Brier increase when shuffled, largest first; empty when not measured (see `status`)."""
    status: str | None = None
    """Why it was not measured."""


def feature_importance(
    router: ImportanceModel | None, outcomes: Sequence[Mapping[str, Any]], status: str | None = None, seed: int = 0
) -> FeatureImportance:
    """Permutation importance of `router`'s feature groups on `outcomes` (rows of `Store.labelled_outcomes`: the
    window's scored decisions with their prompt text), newest `MAX_IMPORTANCE_OUTCOMES` at most."""
    from router_plugins.outcomes import from_feedback

    if router is None:
        return FeatureImportance(IMPORTANCE_METHOD, None, 0, {}, status or "no learned router")
    data = from_feedback([dict(row) for row in outcomes[:MAX_IMPORTANCE_OUTCOMES]], router.models)
    if len(data) < MIN_IMPORTANCE_OUTCOMES:
        why = (f"{len(data)} scored outcomes with prompt text of the models it predicts in the window, fewer than "
               f"{MIN_IMPORTANCE_OUTCOMES} (prompt text is not kept with storage.prompt_text: none)")  # fmt: skip
        return FeatureImportance(IMPORTANCE_METHOD, router.version, len(data), {}, why)
    try:
        groups = router.feature_importance(data, seed=seed)
    except ValueError as exc:  # e.g. an artifact fitted on another embedding table: the report goes on without it
        return FeatureImportance(IMPORTANCE_METHOD, router.version, len(data), {}, f"not measured: {exc}")
    ranked = dict(sorted(((k, float(v)) for k, v in groups.items()), key=lambda kv: -kv[1]))
    return FeatureImportance(IMPORTANCE_METHOD, router.version, len(data), ranked)


def load_learned_router(registry: Registry, data_dir: DataDir) -> tuple[ImportanceModel | None, str | None]:
    """The data directory's current learned router with the static embedding table it featurises prompts with, or
    None and why not. Reads only: a missing table is not built."""
    from router_plugins.classify.static_embedding import TABLE_FILE, StaticEmbedder
    from router_plugins.datadir import ArtifactVersionError, DamagedArtifact
    from router_plugins.routers import LearnedRouter, RouterContext
    from router_plugins.routers.learned import current_artifact

    artifact = current_artifact(data_dir.artifacts)
    if artifact is None:
        return None, "no learned-router artifact in the data directory (`autoroute train` writes one)"
    table = data_dir.path(TABLE_FILE)
    if not table.exists():
        return None, f"no static embedding table at {table} (`autoroute build-embeddings` writes it)"
    try:
        embedder = StaticEmbedder.load(table)
        router = LearnedRouter(registry, RouterContext(static_embed=embedder.embed, artifacts=data_dir.artifacts))
        router.load(artifact)
    except (ArtifactVersionError, DamagedArtifact, OSError) as exc:
        return None, f"learned router not loaded: {exc}"
    return router, None
