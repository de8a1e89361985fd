"""The learned router: per-model success probability and cost predicted from the prompt, chosen by utility.

Features: the prompt's static embedding (distilled MiniLM table, ~0.2 ms; on the routing-outcome sets it scores
within 0.003 AIQ of the full transformer, at a hundredth of the cost), its log length, its task, and digit/code
markers, plus the prompt-format groups (`prompt_format`) that inner CV keeps. Quality: one logistic regression per
model on soft labels (the best of the families compared in docs/EVALUATION.md), with a shared low-rank part when it
helps, every constant chosen by cross-validation inside the training data (`fitting`). Cost: per model, linear in
prompt length or a log-ridge on the features (`cost_model`), or the registry's prices when nothing was recorded.
Latency: per model, log latency fitted on log prompt length from the gateway's own measurements, shrunk toward the
registry's prior while measurements are few. A model with fewer than `learning.min_model_outcomes` training outcomes
is predicted by its registry prior: a fit on a handful of outcomes (two feedback scores, say) would send all traffic
wherever they happened to be good. Preferences: `balanced` and `cost` route with a cost weight calibrated on the
inner out-of-fold predictions when the data records costs (`operating`; `router.calibrate_preferences`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..datadir import ArtifactVersionError, DamagedArtifact, quarantine, read_pointer, write_atomically, write_pointer
from ..embeddings import focus
from ..outcomes import OutcomeSet
from ..registry import ModelEntry, PreferenceWeights, Registry
from ..types import COST_PER_REQUEST, ChatRequest, Classification, RouteDecision
from .base import Prediction, PromptBatch, RouterContext
from .cost_model import CostModel, price_estimate
from .fitting import QualityFit, fit_quality
from .logistic import C_GRID, MIN_ROWS_TO_SELECT, fit_selected, subsample_rows
from .operating import OperatingPoint, best_single, calibrate
from .prompt_format import FORMAT_GROUPS, columns, format_features
from .ranking import Estimate, Estimates, decide

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "autoroute-learned-v2"
READABLE_FORMATS = ("autoroute-learned-v1", ARTIFACT_FORMAT)
"""v1 artifacts (before format features and the log-ridge cost) still load: linear cost, base features."""
POINTER_FILE = "learned-current.json"
LATENCY_PRIOR_WEIGHT = 10.0
"""How many measurements the registry's latency prior is worth: with n measured calls the fit gets n / (n + 10)."""
_REPORTED = ("format_groups", "C", "structure", "factor", "scale", "cost")
"""What `fit` chose by inner CV, kept in the artifact's metadata (the scores it chose by are not)."""
_DIGIT = re.compile(r"\d")
_CODE = re.compile(r"```|\bdef |\breturn\b|\{|;\n|\bfunction\b|\bclass ")


class LearnedRouter:
    name = "learned"
    c_grid: tuple[float, ...] = C_GRID
    """Regularisation constants searched per model by CV inside the training data; one value fixes C."""
    refine = True
    """Choose format features, a shared low-rank part, a scale on C and the cost model by inner CV (`fitting`);
    False fits the plain per-model regressions with a linear cost (the docs' "plain logistic peer")."""
    needs_embeddings = False
    """It embeds with the static table itself; the transformer is not needed on the request path."""

    def __init__(self, registry: Registry, context: RouterContext | None = None) -> None:
        self._registry = registry
        self._context = context or RouterContext()
        self._tasks = [t.name for t in registry.tasks]
        self.models: tuple[str, ...] = ()
        self._coef = np.zeros((0, 0))
        self._intercept = np.zeros(0)
        self._cost = CostModel(np.zeros((0, 2)), [], [])
        self.format_groups: list[str] = []
        """The `prompt_format` groups appended to the base features (chosen at fit time)."""
        self.fit_choices: dict = {}
        """What the last `fit` chose by inner CV (`fitting.QualityFit.chosen`), for reports."""
        self._counts = np.zeros(0)
        """Known outcomes per model in training; a model with fewer than `_min_outcomes` is predicted by its prior."""
        self._min_outcomes = registry.learning.min_model_outcomes
        self._max_rows, self._selection_rows = registry.learning.max_train_rows, registry.learning.selection_rows
        self.latency: dict[str, tuple[float, float, int]] = {}
        """Per model (a, b, n): log latency_ms ≈ a + b·log1p(prompt chars), fitted on n measured calls."""
        self.regularisation: dict[str, float] = {}
        """Per model, the C its logistic regression was fitted with (chosen by inner CV on the training data)."""
        self.operating_points: dict[str, OperatingPoint] = {}
        """Per preference, the cost weight calibrated at fit time (empty: the registry's weights serve)."""
        self.operating_note = "not calibrated"
        """How the operating points were calibrated, or why they were not."""
        self.version = "unfitted"
        self.trained_on = 0
        self.offered = 0
        """Outcomes offered to the last `fit` (more than `trained_on` when it sampled `learning.max_train_rows`)."""
        self._status = "not fitted"

    # -- features ---------------------------------------------------------------------------------------------

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._context.static_embed is None:
            raise ValueError("the learned router needs the static embedding table (RouterContext.static_embed)")
        return self._context.static_embed([focus(t) for t in texts])

    def features(self, texts: Sequence[str], tasks: Sequence[str | None]) -> np.ndarray:
        embedding = self._embed(texts)
        length = np.array([(np.log1p(len(t)) - 6.0) / 2.0 for t in texts])[:, None]
        task = np.array([[1.0 if t == name else 0.0 for name in self._tasks] for t in tasks]).reshape(len(texts), -1)
        digits = np.array([min(len(_DIGIT.findall(t)) / 20.0, 3.0) for t in texts])[:, None]
        code = np.array([1.0 if _CODE.search(t) else 0.0 for t in texts])[:, None]
        parts = [embedding, length, task, digits, code]
        if self.format_groups:
            parts.append(format_features(texts)[:, columns(self.format_groups)])
        return np.hstack(parts).astype(np.float32)

    def feature_groups(self) -> dict[str, slice]:
        widths = {"length": 1, "task": len(self._tasks), "digits": 1, "code": 1}
        widths |= {group: len(FORMAT_GROUPS[group]) for group in self.format_groups}
        start = self._coef.shape[1] - sum(widths.values())
        groups = {"embedding": slice(0, start)}
        for name, width in widths.items():
            groups[name], start = slice(start, start + width), start + width
        return groups

    def feature_importance(self, data: OutcomeSet, seed: int = 0) -> dict[str, float]:
        """Permutation importance: how much the Brier score worsens when one feature group is shuffled."""
        X = self.features(data.texts, data.tasks)
        columns = [self.models.index(m) for m in data.models if m in self.models]
        known = np.isfinite(data.quality[:, : len(columns)])

        def brier(features: np.ndarray) -> float:
            p = 1.0 / (1.0 + np.exp(-(features @ self._coef.T + self._intercept)))[:, columns]
            return float(np.mean((p[known] - data.quality[:, : len(columns)][known]) ** 2))

        base = brier(X)
        rng = np.random.default_rng(seed)
        out = {}
        for name, cols in self.feature_groups().items():
            shuffled = X.copy()
            shuffled[:, cols] = X[rng.permutation(len(X))][:, cols]
            out[name] = brier(shuffled) - base
        return out

    # -- training ---------------------------------------------------------------------------------------------

    def fit(self, data: OutcomeSet) -> None:
        """Fit on `data` alone: each model's C is chosen by cross-validation inside `data` (see `logistic`). Above
        `learning.max_train_rows` outcomes, on a uniform random sample of that many (a fixed seed: reproducible)."""
        self.offered = len(data)
        if len(data) > self._max_rows:
            data = data.subset(np.sort(np.random.default_rng(0).choice(len(data), self._max_rows, replace=False)))
        self.format_groups = []
        X = self.features(data.texts, data.tasks)
        chars = np.array([len(t) for t in data.texts], dtype=np.float64)
        if self.refine and len(self.c_grid) > 1 and len(data) >= MIN_ROWS_TO_SELECT:
            extra = format_features(data.texts)
            fitted = fit_quality(X, extra, data, subsample_rows(len(data), self._selection_rows), self.c_grid)
            if fitted.format_groups:
                X = np.hstack([X, extra[:, columns(fitted.format_groups)]])
        else:
            plain = fit_selected(X, data.quality, self.c_grid, self._selection_rows)
            fitted = QualityFit(plain.coef, plain.intercept, plain.C, CostModel.fit(X, chars, data.cost, False),
                                oof_rows=plain.oof_rows, oof=plain.oof)  # fmt: skip
        self.regularisation = {m: float(c) for m, c in zip(data.models, fitted.C)}
        self.models, self.format_groups, self.fit_choices = tuple(data.models), fitted.format_groups, fitted.chosen
        self._coef, self._intercept, self._cost = fitted.coef, fitted.intercept, fitted.cost
        self._counts = np.isfinite(data.quality).sum(axis=0).astype(np.float64)
        self.trained_on = len(data)
        self.version = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + f"-n{len(data)}"
        self.operating_points, self.operating_note = self._calibrate(data, fitted, X, chars)

    def _calibrate(
        self, data: OutcomeSet, fitted: QualityFit, X: np.ndarray, chars: np.ndarray
    ) -> tuple[dict[str, OperatingPoint], str]:
        """Operating points on the inner out-of-fold success probabilities (never this fit's own), with the cost
        model's in-sample predictions (linear, or a ridge whose alpha inner CV chose) and the latency model as it
        stands at fit time (the registry's priors until measured latencies are fitted)."""
        if not data.has_cost:
            return {}, "registry weights: the training data records no costs"
        needed = self._registry.router.calibration_min_outcomes
        if len(data) < needed:
            return {}, f"registry weights: {len(data)} training prompts, calibration needs {needed}"
        if fitted.oof is None or fitted.oof_rows is None or len(fitted.oof_rows) < MIN_ROWS_TO_SELECT:
            return {}, f"registry weights: no out-of-fold predictions (< {MIN_ROWS_TO_SELECT} rows, or C fixed)"
        rows = fitted.oof_rows
        quality = fitted.oof.copy()
        for j, name in enumerate(self.models):  # as `predict`: a model with too few outcomes serves by its prior
            model = self._registry.model(name)
            if not self.learned(name) and model is not None:
                quality[:, j] = [model.prior_quality(data.tasks[i] or "default") for i in rows]
        best = best_single(data.quality)
        points = calibrate(quality, self._predict_cost(X[rows], chars[rows]), data.quality[rows], data.cost[rows],
                           best, self._registry.preferences, self._latency_matrix(chars[rows]))  # fmt: skip
        return points, f"calibrated on {len(rows)} out-of-fold prompts; best single {self.models[best]}"

    def fit_latency(self, samples: Sequence[tuple[str, int, float]]) -> None:
        """Fit each model's latency on measured calls: (model, prompt chars, latency ms) of successful attempts."""
        by_model: dict[str, list[tuple[int, float]]] = {}
        for model, chars, latency_ms in samples:
            if latency_ms is not None and latency_ms > 0:
                by_model.setdefault(model, []).append((int(chars or 0), float(latency_ms)))
        fitted = {}
        for model, rows in by_model.items():
            x = np.log1p(np.array([c for c, _ in rows], dtype=np.float64))
            y = np.log(np.array([v for _, v in rows]))
            if len(rows) >= 3 and np.ptp(x) > 0.5:
                b, a = np.polyfit(x, y, 1)
                b = float(np.clip(b, 0.0, 1.0))  # longer prompts never answer faster; at most proportionally slower
                a = float(np.mean(y) - b * np.mean(x))
            else:
                a, b = float(np.mean(y)), 0.0
            fitted[model] = (a, b, len(rows))
        self.latency = fitted

    def predict_latency(self, model: ModelEntry, chars: float) -> float:
        """Expected latency in ms: the measured fit blended with the registry's prior by the count of measurements."""
        return float(self._latencies(model, np.array([float(chars)]))[0])

    def _latencies(self, model: ModelEntry, chars: np.ndarray) -> np.ndarray:
        if model.name not in self.latency:
            return np.full(len(chars), float(model.latency_ms))
        prior = float(np.log(max(model.latency_ms, 1.0)))
        a, b, n = self.latency[model.name]
        weight = n / (n + LATENCY_PRIOR_WEIGHT)
        return np.exp(weight * (a + b * np.log1p(chars)) + (1 - weight) * prior)

    def _latency_matrix(self, chars: np.ndarray) -> np.ndarray:
        """[n, M] expected latency of each model for prompts of `chars` characters (NaN: not in the registry)."""
        out = np.full((len(chars), len(self.models)), np.nan)
        for j, name in enumerate(self.models):
            model = self._registry.model(name)
            if model is not None:
                out[:, j] = self._latencies(model, chars)
        return out

    # -- prediction -------------------------------------------------------------------------------------------

    def predict(self, prompts: PromptBatch) -> Prediction:
        X = self.features(list(prompts.texts), list(prompts.tasks))
        quality = 1.0 / (1.0 + np.exp(-(X @ self._coef.T + self._intercept)))
        for j, name in enumerate(self.models):
            model = self._registry.model(name)
            if not self.learned(name) and model is not None:
                quality[:, j] = [model.prior_quality(t or "default") for t in prompts.tasks]
        chars = np.array([len(t) for t in prompts.texts], dtype=np.float64)
        return Prediction(self.models, quality, self._predict_cost(X, chars))

    def _predict_cost(self, X: np.ndarray, chars: np.ndarray) -> np.ndarray:
        """[n, M] expected cost per request: the cost model, or the registry's prices where none was recorded."""
        cost = self._cost.predict(X, chars)
        for j, name in enumerate(self.models):
            if np.isnan(cost[:, j]).all():
                cost[:, j] = price_estimate(self._registry.model(name), chars)
        return cost

    def preference_weights(self, preference: str) -> tuple[PreferenceWeights, str | None]:
        """The weights `preference` routes with, and a note when its cost weight is the calibrated one: the registry's
        weights with the operating point's cost weight, unless `router.calibrate_preferences` is false."""
        weights = self._registry.preferences[preference]
        point = self.operating_points.get(preference)
        if point is None or not point.calibrated or not self._registry.router.calibrate_preferences:
            return weights, None
        return replace(weights, cost_weight=point.cost_weight), f"cost weight {point.cost_weight:.3g} calibrated"

    def route(
        self, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> RouteDecision | None:
        weights, note = self.preference_weights(request.preference)
        estimates = self.estimate(request, task, candidates)
        if estimates is not None and note is not None:
            estimates = replace(estimates, notes=(*estimates.notes, note))
        return decide(self.name, self.version, "learned", estimates, request, task, weights)

    def estimate(
        self, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> Estimates | None:
        """Predicted p(success), cost and latency of every candidate that meets the request's constraints."""
        if not self.models or not candidates:
            return None
        text = request.last_user_text()
        prediction = self.predict(PromptBatch([text], [task.task]))
        options = []
        for candidate in candidates:
            if candidate.name in self.models:
                j = self.models.index(candidate.name)
                quality, cost = float(prediction.quality[0, j]), float(prediction.cost[0, j])
            else:  # added to the registry after training: its prior and its prices stand in
                quality = candidate.prior_quality(task.task)
                cost = float(price_estimate(candidate, np.array([float(len(text))]))[0])
            if request.min_quality is not None and quality < request.min_quality:
                continue
            per_1k = candidate.cost_per_1k()
            if request.max_cost_per_1k is not None and (per_1k is None or per_1k > request.max_cost_per_1k):
                continue
            latency = self.predict_latency(candidate, len(text))
            note = "predicted" if self.learned(candidate.name) else "registry prior: too few outcomes"
            options.append(Estimate(candidate.name, quality, cost, latency, note=note))
        return Estimates(tuple(options), f"predicted from {self.trained_on} outcomes", cost_unit=COST_PER_REQUEST)

    def outcome_counts(self) -> dict[str, int]:
        """Training outcomes per model."""
        return {name: int(n) for name, n in zip(self.models, self._counts)}

    def learned(self, model: str) -> bool:
        """Whether `model`'s quality is predicted from training (else from its registry prior): it had at least
        `learning.min_model_outcomes` outcomes (and at least one)."""
        if model not in self.models:
            return False
        return int(self._counts[self.models.index(model)]) >= max(self._min_outcomes, 1)

    @property
    def status(self) -> str | None:
        """Why it cannot decide, when it cannot."""
        return self._status if not self.models else None

    @classmethod
    def from_artifacts(cls, registry: Registry, context: RouterContext) -> LearnedRouter:
        """The router table's factory: the current artifact of `context.artifacts`, loaded; a router that cannot decide
        (and says why in `status`) when there is none, it is damaged, or the static embedding table is missing."""
        router = cls(registry, context)
        artifact = current_artifact(context.artifacts) if context.artifacts is not None else None
        if artifact is None:
            router._status = "no learned-router artifact yet"
            return router
        try:
            router.load(artifact)  # read even while the static table is missing: damage is found at the start
        except DamagedArtifact as exc:  # moved aside: the pointer now dangles and the chain goes on without it
            quarantine(artifact, str(exc))
            router._status = "learned-router artifact damaged: moved aside"
        except (ArtifactVersionError, OSError) as exc:
            log.error("learned-router artifact %s not loaded: %s", artifact, exc)
            router._status = f"learned-router artifact not loaded: {type(exc).__name__}"
        else:
            if context.static_embed is None:
                router.models = ()  # it cannot featurise prompts yet: it does not decide
                router._status = "the learned router waits for the static embedding table"
        return router

    # -- artifacts --------------------------------------------------------------------------------------------

    def save(self, directory: Path, extra: dict | None = None) -> Path:
        """Write a versioned artifact, then point `learned-current.json` at it (both writes are atomic)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"learned-{self.version}.npz"
        meta = {
            "format": ARTIFACT_FORMAT, "version": self.version, "models": list(self.models), "tasks": self._tasks,
            "trained_on": self.trained_on, "offered": self.offered, "regularisation": self.regularisation,
            "latency": {m: list(v) for m, v in self.latency.items()},
            "operating_points": {p: point.to_dict() for p, point in self.operating_points.items()},
            "operating_note": self.operating_note, "format_groups": self.format_groups,
            "choices": {k: v for k, v in self.fit_choices.items() if k in _REPORTED}, **(extra or {}),
        }  # fmt: skip
        arrays: dict[str, Any] = {
            "coef": self._coef,
            "intercept": self._intercept,
            "counts": self._counts,
            "meta": np.array(json.dumps(meta)),
            **self._cost.arrays(self._coef.shape[1]),
        }
        write_atomically(path, lambda h: np.savez(h, **arrays))
        write_pointer(directory, POINTER_FILE, path, self.version)
        return path

    def load(self, path: Path) -> None:
        """Read an artifact; ArtifactVersionError for another format, DamagedArtifact when it cannot be read."""
        try:
            with open(path, "rb") as handle, np.load(handle) as data:  # the handle is closed even when it is no npz
                meta = json.loads(str(data["meta"]))
                if meta.get("format") not in READABLE_FORMATS:
                    raise ArtifactVersionError(f"{path} is not a learned-router artifact ({meta.get('format')})")
                coef, intercept, counts = data["coef"], data["intercept"], data["counts"]
                ridge = (data["cost_ridge_w"], data["cost_ridge"]) if "cost_ridge" in data.files else (None, None)
                cost = CostModel.from_arrays(data["cost"], *ridge)
            models, tasks = tuple(meta["models"]), list(meta["tasks"])
            version, trained_on = meta["version"], int(meta.get("trained_on", 0))
            regularisation = {m: float(c) for m, c in meta.get("regularisation", {}).items()}
            latency = {m: (float(a), float(b), int(n)) for m, (a, b, n) in meta.get("latency", {}).items()}
            # Artifacts from before the calibration have none: the registry's weights serve.
            points = {p: OperatingPoint.from_dict(raw) for p, raw in meta.get("operating_points", {}).items()}
            note = str(meta.get("operating_note", "registry weights: the artifact predates calibration"))
            groups = [str(g) for g in meta.get("format_groups", [])]
            width = len(meta["tasks"]) + 3 + len(columns(groups))  # columns() rejects a group this version lacks
            if coef.ndim != 2 or coef.shape[1] <= width:
                raise ValueError(f"weights of shape {coef.shape} cannot hold the {width} non-embedding features")
            if coef.shape[0] != len(models) or intercept.shape != (len(models),) or counts.shape != (len(models),):
                raise ValueError(f"arrays for {coef.shape[0]} models, the metadata names {len(models)}")
        except (ArtifactVersionError, FileNotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged archive raises
            raise DamagedArtifact(f"{path} is not a usable learned-router artifact: {exc}") from exc
        self._coef, self._intercept, self._cost, self._counts = coef, intercept, cost, counts
        self.format_groups, self.regularisation = groups, regularisation
        self.operating_points, self.operating_note = points, note
        self.models, self._tasks, self.version = models, tasks, version
        self.trained_on, self.latency = trained_on, latency


def current_artifact(directory: Path) -> Path | None:
    """The artifact `learned-current.json` in `directory` (a data directory's artifacts) points at, if usable."""
    return read_pointer(directory, POINTER_FILE)
