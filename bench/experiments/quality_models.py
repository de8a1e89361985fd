"""Model pieces for bench/experiments/quality_variants.py: each takes training rows only and picks its own constants
by inner cross-validation on them (the same 3 inner folds as `router_plugins.routers.logistic.fit_selected`).

- `format_features` (2c), `CostModel` (2d) and `fit_lowrank` (2a) are the product's since they shipped (session 7:
  `router_plugins/routers/prompt_format.py`, `cost_model.py`, `lowrank.py`); imported here.
- `select_shared_c`: one C for every model, chosen by the routing score or the pooled log loss of inner OOF (2e);
  `select_scale`: every constant of a fitted structure times one factor chosen by the routing score.
- `knn_quality`: similarity-weighted kNN shrunk toward each model's mean, a stacking head (2b).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from router_plugins.outcomes import OutcomeSet, kfold_indices
from router_plugins.routers.cost_model import CostModel  # noqa: F401 - the variants' `cost_ridge` is the shipped model
from router_plugins.routers.logistic import (
    INNER_FOLDS,
    INNER_SEED,
    fit_logistic,
    predict_logistic,
    soft_log_loss,
)
from router_plugins.routers.lowrank import fit_lowrank  # noqa: F401 - `lowrank` is the shipped structure
from router_plugins.routers.prompt_format import FORMAT_GROUPS, format_features  # noqa: F401 - used by the variants
from router_plugins.routing_metrics import headline_score


def inner_folds(n: int) -> list[np.ndarray]:
    """The shipped selection's inner folds, so OOF predictions of different heads line up row by row."""
    return kfold_indices(n, INNER_FOLDS, INNER_SEED)


InnerCost = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(train rows, test rows) -> predicted costs of the test rows by a cost model fitted on the train rows."""
Refit = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]
"""(X, Q, scale) -> (coef, intercept) of a quality model whose regularisation constants are all multiplied by scale."""


# -- one C per set (2e) -----------------------------------------------------------------------------------------------


routing_score = headline_score
"""The harness's headline score of (OOF) predictions (AIQ, APGR or max quality), as the shipped selection uses it."""


@dataclass(frozen=True)
class SharedC:
    C: float
    scores: dict[float, float]
    """Per candidate C, the selection criterion on the inner OOF predictions (higher is better)."""
    oof: np.ndarray
    """[n, M] inner OOF predictions at the chosen C."""


def select_shared_c(
    X: np.ndarray,
    data: OutcomeSet,
    grid: Sequence[float],
    criterion: str,
    inner_cost: InnerCost | None = None,
) -> SharedC:
    """One C for every model: `criterion` "route" (the set's headline routing score of the pooled inner OOF) or
    "loglik" (minus the pooled soft log loss). `inner_cost(train_rows, test_rows)` predicts test costs from a cost
    model fitted on train rows (needed for AIQ). Ties go to the lower log loss."""
    Q = data.quality
    oof = {C: np.full(Q.shape, np.nan) for C in grid}
    oof_cost = np.full(Q.shape, np.nan)
    train_means = np.zeros(Q.shape)
    for held in inner_folds(len(X)):
        kept = np.setdiff1d(np.arange(len(X)), held)
        start = None
        for C in sorted(grid):
            start = fit_logistic(X[kept], Q[kept], C, start)
            oof[C][held] = predict_logistic(X[held], *start)
        if inner_cost is not None:
            oof_cost[held] = inner_cost(kept, held)
        train_means[held] = np.nanmean(Q[kept], axis=0)
    loglik = {C: -float(np.nansum(soft_log_loss(oof[C], Q) * np.isfinite(Q).sum(axis=0))) for C in grid}
    if criterion == "route":
        scores = {C: routing_score(data, oof[C], oof_cost, train_means) for C in grid}
    else:
        scores = loglik
    best = max(grid, key=lambda C: (round(scores[C], 12), loglik[C]))
    return SharedC(float(best), {float(C): scores[C] for C in grid}, oof[best])


@dataclass(frozen=True)
class Structure:
    """A fitted quality model, its inner OOF predictions, and how to refit it with scaled constants."""

    C: np.ndarray
    coef: np.ndarray | None
    intercept: np.ndarray | None
    oof: np.ndarray
    refit: Refit


@dataclass(frozen=True)
class Scale:
    scale: float
    scores: dict[float, float]


def select_scale(
    X: np.ndarray, data: OutcomeSet, refit: Refit, oof_at_1: np.ndarray, scales: Sequence[float],
    inner_cost: InnerCost | None = None,
) -> Scale:  # fmt: skip
    """One factor on every regularisation constant, chosen by the set's routing score on the inner OOF predictions
    (the same inner folds as the constants' own selection; factor 1 reuses its OOF). Ties go to factor 1, then to
    the smaller factor."""
    Q = data.quality
    oof = {s: np.full(Q.shape, np.nan) for s in scales if s != 1.0}
    oof_cost = np.full(Q.shape, np.nan)
    train_means = np.zeros(Q.shape)
    for held in inner_folds(len(X)):
        kept = np.setdiff1d(np.arange(len(X)), held)
        for s in oof:
            oof[s][held] = predict_logistic(X[held], *refit(X[kept], Q[kept], s))
        if inner_cost is not None:
            oof_cost[held] = inner_cost(kept, held)
        train_means[held] = np.nanmean(Q[kept], axis=0)
    oof[1.0] = oof_at_1
    scores = {s: routing_score(data, oof[s], oof_cost, train_means) for s in scales}
    best = max(scales, key=lambda s: (round(scores[s], 12), s == 1.0, -s))
    return Scale(float(best), {float(s): scores[s] for s in scales})


# -- shared low-rank component (2a) and MF ---------------------------------------------------------------------------


# -- kNN head (2b) ----------------------------------------------------------------------------------------------------


def knn_quality(
    keys: np.ndarray, Q: np.ndarray, queries: np.ndarray, k: int, shrink: float, exclude_self: bool = False
) -> np.ndarray:
    """[n_queries, M]: (Σ s_i q_i + shrink·mean) / (Σ s_i + shrink) over the k most cosine-similar training prompts
    (similarity s clipped at 0; unknown outcomes skipped per model)."""
    known = np.isfinite(Q)
    q = np.where(known, Q, 0.0)
    means = np.nanmean(np.where(known, Q, np.nan), axis=0)
    k = min(k, len(keys) - (1 if exclude_self else 0))
    out = np.empty((len(queries), Q.shape[1]))
    for start in range(0, len(queries), 1024):
        sims = queries[start : start + 1024] @ keys.T
        if exclude_self:
            sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.clip(np.take_along_axis(sims, nearest, axis=1), 0.0, None)[:, :, None]
        weighted = (weights * q[nearest]).sum(axis=1) + shrink * means
        total = (weights * known[nearest]).sum(axis=1) + shrink
        out[start : start + len(sims)] = weighted / total
    return out
