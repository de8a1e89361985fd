"""The learned router's cost model: per model, cost linear in prompt length, or a ridge fit of log cost on the
prompt's features, whichever has the lower squared error in USD by inner cross-validation on the training data.

The log-ridge fit follows output length where the data records costs per call (what a prompt asks for drives how
long the answer is, and the answer is most of the cost); its mean is restored by Duan's smearing factor. It won
RouterBench by +0.001 AIQ by nested CV and chose linear everywhere else (docs/EVALUATION.md, "Variants by nested CV").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..outcomes import kfold_indices
from ..registry import ModelEntry
from .logistic import INNER_FOLDS, INNER_SEED

RIDGE_ALPHAS = (0.3, 3.0, 30.0)
MIN_COSTS_FOR_RIDGE = 30
"""Below this many recorded costs a model keeps the linear fit (two coefficients: nothing to overfit)."""
FLOOR = 1e-9
"""Predicted costs never go below this (USD per request)."""
MAX_LOG_COST = 20.0
"""The log-ridge's exponent is capped here (exp(20) USD: a wild prompt cannot overflow the ranking)."""
EXPECTED_COMPLETION_TOKENS = 300
"""Output tokens assumed when only the registry's prices are known."""


@dataclass
class CostModel:
    linear: np.ndarray
    """[M, 2] (a, b) of cost ≈ a + b·chars; NaN where no cost is recorded."""
    ridge: list[tuple[np.ndarray, float, float] | None]
    """Per model (w, c, smear) of cost ≈ exp(X·w + c)·smear, or None where the linear fit serves."""
    chosen: list[str]
    """Per model "linear" or "ridge<alpha>"."""

    @classmethod
    def fit(
        cls, X: np.ndarray, chars: np.ndarray, cost: np.ndarray, selectable: bool = True, rows: np.ndarray | None = None
    ) -> CostModel:
        """Fit on all rows; the kind and alpha of each model are chosen by inner CV on `rows` (default all)."""
        M = cost.shape[1]
        linear = np.array([_fit_linear(chars, cost[:, j]) for j in range(M)]).reshape(M, 2)
        ridge: list[tuple[np.ndarray, float, float] | None] = [None] * M
        chosen = ["linear"] * M
        if not selectable:
            return cls(linear, ridge, chosen)
        X = np.asarray(X, dtype=np.float64)
        subset = np.arange(len(chars)) if rows is None else rows
        for j in range(M):
            known = subset[np.isfinite(cost[subset, j]) & (cost[subset, j] > 0)]
            if len(known) < MIN_COSTS_FOR_RIDGE:
                continue
            errors = {"linear": 0.0, **{f"ridge{a:g}": 0.0 for a in RIDGE_ALPHAS}}
            for held in kfold_indices(len(known), INNER_FOLDS, INNER_SEED):
                train, test = np.delete(known, held), known[held]
                y = cost[test, j]
                a, b = _fit_linear(chars[train], cost[train, j])
                errors["linear"] += float(np.sum((a + b * chars[test] - y) ** 2))
                for alpha, fitted in zip(RIDGE_ALPHAS, _fit_log_ridge(X[train], cost[train, j], RIDGE_ALPHAS)):
                    errors[f"ridge{alpha:g}"] += float(np.sum((_predict_log_ridge(X[test], fitted) - y) ** 2))
            chosen[j] = min(errors, key=errors.__getitem__)
            if chosen[j] != "linear":
                every = np.flatnonzero(np.isfinite(cost[:, j]) & (cost[:, j] > 0))
                ridge[j] = _fit_log_ridge(X[every], cost[every, j], (float(chosen[j].removeprefix("ridge")),))[0]
        return cls(linear, ridge, chosen)

    def predict(self, X: np.ndarray, chars: np.ndarray) -> np.ndarray:
        """[n, M] expected cost per request; NaN for a model without recorded costs."""
        out = np.full((len(chars), len(self.ridge)), np.nan)
        for j, fitted in enumerate(self.ridge):
            if fitted is not None:
                out[:, j] = _predict_log_ridge(np.asarray(X, dtype=np.float64), fitted)
            elif np.isfinite(self.linear[j, 0]):
                out[:, j] = np.maximum(self.linear[j, 0] + self.linear[j, 1] * chars, FLOOR)
        return out

    def arrays(self, dim: int) -> dict[str, np.ndarray]:
        """The model as arrays for an artifact (`dim`: the feature count the ridge weights span)."""
        weights = np.zeros((len(self.ridge), dim))
        extra = np.zeros((len(self.ridge), 3))  # (used, c, smear)
        for j, fitted in enumerate(self.ridge):
            if fitted is not None:
                weights[j], extra[j] = fitted[0], (1.0, fitted[1], fitted[2])
        return {"cost": self.linear, "cost_ridge_w": weights, "cost_ridge": extra}

    @classmethod
    def from_arrays(cls, linear: np.ndarray, weights: np.ndarray | None, extra: np.ndarray | None) -> CostModel:
        """Inverse of `arrays`; artifacts written before the ridge fit have only the linear coefficients."""
        ridge: list[tuple[np.ndarray, float, float] | None] = [None] * len(linear)
        if weights is not None and extra is not None:
            if weights.shape[0] != len(linear) or extra.shape != (len(linear), 3):
                raise ValueError(f"cost arrays for {weights.shape[0]} models, the linear fit has {len(linear)}")
            ridge = [(weights[j], float(extra[j, 1]), float(extra[j, 2])) if extra[j, 0] else None
                     for j in range(len(linear))]  # fmt: skip
        chosen = ["linear" if r is None else "ridge" for r in ridge]
        return cls(np.asarray(linear, dtype=np.float64), ridge, chosen)


def _fit_linear(chars: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(a, b) by least squares over the recorded costs; (cost, 0) from one; NaN from none."""
    known = np.isfinite(y)
    if known.sum() >= 2:
        design = np.vstack([np.ones(known.sum()), chars[known]]).T
        return np.linalg.lstsq(design, y[known], rcond=None)[0]
    if known.sum() == 1:
        return np.array([y[known][0], 0.0])
    return np.array([np.nan, np.nan])


def _fit_log_ridge(X: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> list[tuple[np.ndarray, float, float]]:
    """Ridge of log y on centred X for each alpha (one eigendecomposition), with the smearing factor."""
    target = np.log(np.maximum(y, 1e-12))
    mean_x, mean_t = X.mean(axis=0), target.mean()
    Xc = X - mean_x
    values, vectors = np.linalg.eigh(Xc.T @ Xc)
    projected = vectors.T @ (Xc.T @ (target - mean_t))
    out = []
    for alpha in alphas:
        w = vectors @ (projected / (values + alpha))
        c = float(mean_t - mean_x @ w)
        smear = float(np.mean(np.exp(target - (X @ w + c))))
        out.append((w, c, smear))
    return out


def _predict_log_ridge(X: np.ndarray, fitted: tuple[np.ndarray, float, float]) -> np.ndarray:
    w, c, smear = fitted
    return np.exp(np.minimum(X @ w + c, MAX_LOG_COST)) * smear


def price_estimate(model: ModelEntry | None, chars: np.ndarray) -> np.ndarray:
    """Cost per request from the registry's prices (chars / 4 prompt tokens, `EXPECTED_COMPLETION_TOKENS` out); NaN
    without prices."""
    if model is None or model.input_cost_per_mtok is None or model.output_cost_per_mtok is None:
        return np.full(len(chars), np.nan)
    return (chars / 4 * model.input_cost_per_mtok + EXPECTED_COMPLETION_TOKENS * model.output_cost_per_mtok) / 1e6
