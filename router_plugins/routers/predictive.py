"""Routers that predict every model's quality and cost, then pick by the preference's utility.

The baselines any learned router must beat live here: `random`, `cheapest`, `best-single` and `knn`
(`static-rules`, fitted on outcomes, is the fifth). They are ordinary routers: registered by name, usable
by the gateway once fitted, and scored offline by `autoroute eval offline`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..outcomes import OutcomeSet
from ..registry import ModelEntry, Registry
from ..types import COST_PER_REQUEST, ChatRequest, Classification, RouteDecision
from .base import Prediction, PromptBatch, RouterContext
from .ranking import Estimate, Estimates, decide


class PredictiveRouter:
    """Base: subclasses implement `fit` and `_predict` over the models they were fitted on."""

    name = "predictive"

    def __init__(self, registry: Registry, context: RouterContext | None = None) -> None:
        self._registry = registry
        self._context = context or RouterContext()
        self._models: tuple[str, ...] = ()
        self.version = "unfitted"

    @property
    def fitted(self) -> bool:
        return bool(self._models)

    def fit(self, data: OutcomeSet) -> None:
        self._models = tuple(data.models)
        self._fit(data)
        self.version = f"fit{len(data)}"

    def _fit(self, data: OutcomeSet) -> None:
        raise NotImplementedError

    def predict(self, prompts: PromptBatch) -> Prediction:
        quality, cost = self._predict(prompts)
        return Prediction(self._models, quality, cost)

    def _predict(self, prompts: PromptBatch) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def route(
        self, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> RouteDecision | None:
        weights = self._registry.preferences[request.preference]
        return decide(self.name, self.version, self.name, self.estimate(request, task, candidates), request, task,
                      weights)  # fmt: skip

    def estimate(
        self, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> Estimates | None:
        if not self.fitted:
            return None
        usable = [c for c in candidates if c.name in self._models]
        if not usable:
            return None
        text = request.last_user_text()
        embeddings = self._context.embed([text]) if self._context.embed and self.needs_embeddings else None
        prediction = self.predict(PromptBatch([text], [task.task], embeddings))
        options = []
        for candidate in usable:
            j = self._models.index(candidate.name)
            options.append(Estimate(candidate.name, float(prediction.quality[0, j]), float(prediction.cost[0, j]),
                                    note="predicted"))  # fmt: skip
        return Estimates(tuple(options), cost_unit=COST_PER_REQUEST)

    needs_embeddings = False


class RandomRouter(PredictiveRouter):
    """Uniformly random: the floor."""

    name = "random"

    def _fit(self, data: OutcomeSet) -> None:
        self._rng = np.random.default_rng(self._context.seed)

    def _predict(self, prompts: PromptBatch) -> tuple[np.ndarray, np.ndarray]:
        shape = (len(prompts), len(self._models))
        return self._rng.random(shape), np.zeros(shape)


class CheapestRouter(PredictiveRouter):
    """Always the model with the lowest mean cost on the training data."""

    name = "cheapest"

    def _fit(self, data: OutcomeSet) -> None:
        if not data.has_cost:
            raise ValueError("the cheapest router needs costs, and this data set records none")
        self._mean_cost = _column_means(data.cost, fill=np.inf)

    def _predict(self, prompts: PromptBatch) -> tuple[np.ndarray, np.ndarray]:
        finite = np.where(np.isfinite(self._mean_cost), self._mean_cost, np.nan)
        # Ranked by cost alone, whatever the preference: quality is minus the cost.
        quality = np.tile(-np.nan_to_num(finite, nan=np.inf), (len(prompts), 1))
        return quality, np.tile(finite, (len(prompts), 1))


class BestSingleRouter(PredictiveRouter):
    """Always the model with the best mean quality on the training data."""

    name = "best-single"

    def _fit(self, data: OutcomeSet) -> None:
        self._mean_quality = _column_means(data.quality, fill=0.0)

    def _predict(self, prompts: PromptBatch) -> tuple[np.ndarray, np.ndarray]:
        shape = (len(prompts), len(self._models))
        return np.tile(self._mean_quality, (len(prompts), 1)), np.zeros(shape)


class KnnRouter(PredictiveRouter):
    """Mean outcome of the k most similar training prompts (cosine similarity of sentence embeddings)."""

    name = "knn"
    needs_embeddings = True
    k = 20

    def _fit(self, data: OutcomeSet) -> None:
        if data.embeddings is None:
            if self._context.embed is None:
                raise ValueError("knn needs prompt embeddings: give the data set embeddings or the router an embedder")
            data.embeddings = self._context.embed(data.texts)
        self._keys = data.embeddings.astype(np.float32)
        self._quality = np.nan_to_num(data.quality, nan=0.0)
        self._cost = data.cost
        self._overall_cost = _column_means(data.cost, fill=np.nan)

    def _predict(self, prompts: PromptBatch) -> tuple[np.ndarray, np.ndarray]:
        embeddings = prompts.embeddings
        if embeddings is None:
            if self._context.embed is None:
                raise ValueError("knn needs prompt embeddings")
            embeddings = self._context.embed(list(prompts.texts))
        k = min(self.k, len(self._keys))
        quality = np.empty((len(prompts), len(self._models)))
        cost = np.empty_like(quality)
        for start in range(0, len(prompts), 1024):
            block = embeddings[start : start + 1024] @ self._keys.T
            nearest = np.argpartition(-block, k - 1, axis=1)[:, :k]
            quality[start : start + len(block)] = self._quality[nearest].mean(axis=1)
            neighbour_cost = self._cost[nearest]
            with np.errstate(all="ignore"):
                mean_cost = np.nanmean(np.where(np.isfinite(neighbour_cost), neighbour_cost, np.nan), axis=1)
            cost[start : start + len(block)] = np.where(np.isfinite(mean_cost), mean_cost, self._overall_cost)
        return quality, cost


def _column_means(values: np.ndarray, fill: float) -> np.ndarray:
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    sums = np.where(finite, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), fill)


BASELINES: tuple[type[PredictiveRouter], ...] = (RandomRouter, CheapestRouter, BestSingleRouter, KnnRouter)
