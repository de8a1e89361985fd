"""How the learned router fits its quality and cost models, every choice made by inner cross-validation on the
training rows it is given (so an evaluation that calls it per outer fold is nested CV).

1. Prompt-format groups (`prompt_format`): each kept when adding it alone lowers the pooled inner out-of-fold (OOF)
   log loss of the per-model logistic regressions.
2. Each model's C by inner log loss (`logistic.select_constants`).
3. Structure: the per-model fit, or one with a shared low-rank component beside it (`LOWRANK_GRID`; at rank 1 the
   IRT form: one prompt difficulty shared by every model), by pooled inner OOF log loss.
4. One factor on every regularisation constant (`C_SCALES`), chosen by the set's own routing score (AIQ, APGR or
   max quality: `routing_metrics.headline_score`) on the inner OOF predictions, each inner fold's costs predicted by
   a cost model fitted on that fold's training rows.
5. Cost (`cost_model`): per model linear in length, or a log-ridge on the features, by inner squared error.

Together they beat the plain per-model fit on all five routing-outcome sets over two fold seeds by nested CV
(docs/EVALUATION.md, "Variants by nested CV"). On large data every choice is made on one fixed subsample of
`learning.selection_rows` rows (10,000), and only the final fits see every row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..outcomes import OutcomeSet
from ..routing_metrics import headline_score, nan_mean
from .cost_model import CostModel
from .logistic import Selection, fit_logistic, inner_folds, predict_logistic, select_constants, soft_log_loss
from .lowrank import fit_lowrank
from .prompt_format import FORMAT_GROUPS, columns

C_SCALES = (0.1, 0.3, 1.0, 3.0)
LOWRANK_GRID = ((1, 0.1, 1.0), (4, 0.1, 1.0), (4, 0.1, 1 / 3))
"""(rank, C of the shared part, factor on each model's own C) candidates beside the per-model fit."""
PER_MODEL = "per-model"

Refit = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]
"""(X, Q, scale) -> (coef, intercept) of the chosen structure with every constant multiplied by `scale`."""


@dataclass
class QualityFit:
    coef: np.ndarray
    intercept: np.ndarray
    C: np.ndarray
    """[M] each model's effective regularisation constant (its own C × structure factor × scale)."""
    cost: CostModel
    format_groups: list[str] = field(default_factory=list)
    oof_rows: np.ndarray | None = None
    """Rows (into the data) with inner OOF predictions at the chosen settings; None when nothing was selected."""
    oof: np.ndarray | None = None
    chosen: dict[str, Any] = field(default_factory=dict)
    """What each step chose, and the inner scores it chose by."""


def fit_quality(
    base: np.ndarray,
    extra: np.ndarray,
    data: OutcomeSet,
    rows: np.ndarray,
    grid: tuple[float, ...],
) -> QualityFit:
    """Fit on every row of `data`; `base` [n, d] are the base features, `extra` [n, k] the `prompt_format` columns,
    and every choice is made on `rows` (at least `logistic.MIN_ROWS_TO_SELECT` of them)."""
    Q, Qs = data.quality, data.quality[rows]
    chosen: dict[str, Any] = {}
    groups, selections = select_format_groups(base[rows], extra[rows], Qs, grid, chosen)
    X = np.hstack([base, extra[:, columns(groups)]]) if groups else base
    Xs = X[rows]
    selection = selections.get(tuple(groups)) or select_constants(Xs, Qs, grid)
    refit, oof, structure = select_structure(Xs, Qs, selection, chosen)
    chars = np.array([len(t) for t in data.texts], dtype=np.float64)
    cost = CostModel.fit(X, chars, data.cost, selectable=True, rows=rows)
    chosen["cost"] = cost.chosen
    scale, oof = select_scale(Xs, data.subset(rows), refit, oof, chosen)
    coef, intercept = refit(X, Q, scale)
    factor = structure[2] if structure else 1.0
    chosen.update(C=[float(c) for c in selection.C], factor=factor)
    return QualityFit(coef, intercept, selection.C * factor * scale, cost, groups, rows, oof, chosen)


def pooled_loglik(oof: np.ndarray, Q: np.ndarray) -> float:
    """Minus the soft log loss summed over every known outcome (higher is better)."""
    return -float(np.nansum(soft_log_loss(oof, Q) * np.isfinite(Q).sum(axis=0)))


def select_format_groups(
    base: np.ndarray, extra: np.ndarray, Q: np.ndarray, grid: tuple[float, ...], chosen: dict[str, Any]
) -> tuple[list[str], dict[tuple[str, ...], Selection]]:
    """The groups that, each added alone, lower the pooled inner OOF log loss; with the selections made on the way
    (keyed by the groups they used), so the chosen features need no second selection when one group or none won."""
    selections: dict[tuple[str, ...], Selection] = {(): select_constants(base, Q, grid)}
    loglik = {"none": pooled_loglik(selections[()].oof, Q)}
    for group, cols in FORMAT_GROUPS.items():
        if np.ptp(extra[:, cols], axis=0).max() == 0:
            continue  # constant on these rows (one language, say): nothing to learn
        selections[(group,)] = select_constants(np.hstack([base, extra[:, cols]]), Q, grid)
        loglik[group] = pooled_loglik(selections[(group,)].oof, Q)
    kept = [g for g in FORMAT_GROUPS if loglik.get(g, -np.inf) > loglik["none"]]
    chosen.update(format_groups=kept, format_loglik={k: round(v, 2) for k, v in loglik.items()})
    return kept, selections


def select_structure(
    X: np.ndarray, Q: np.ndarray, selection: Selection, chosen: dict[str, Any]
) -> tuple[Refit, np.ndarray, tuple[int, float, float] | None]:
    """The per-model fit, or a `LOWRANK_GRID` candidate, by pooled inner OOF log loss: (refit, its OOF, the
    candidate or None)."""
    C = selection.C

    def per_model(X: np.ndarray, Q: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        return fit_logistic(X, Q, C * scale)

    candidates: dict[str, tuple[Refit, np.ndarray, tuple[int, float, float] | None]] = {
        PER_MODEL: (per_model, selection.oof, None)
    }
    for rank, c_shared, factor in LOWRANK_GRID:

        def lowrank(X: np.ndarray, Q: np.ndarray, scale: float, rank=rank, c_shared=c_shared, factor=factor):
            return fit_lowrank(X, Q, C * factor * scale, rank, c_shared * scale)

        oof = np.full(Q.shape, np.nan)
        for held in inner_folds(len(X)):
            kept = np.setdiff1d(np.arange(len(X)), held)
            oof[held] = predict_logistic(X[held], *lowrank(X[kept], Q[kept], 1.0))
        candidates[f"r{rank}-cs{c_shared:g}-f{factor:.2g}"] = (lowrank, oof, (rank, c_shared, factor))
    loglik = {name: pooled_loglik(oof, Q) for name, (_, oof, _) in candidates.items()}
    best = max(loglik, key=loglik.__getitem__)
    chosen.update(structure=best, structure_loglik={k: round(v, 2) for k, v in loglik.items()})
    return candidates[best]


def select_scale(
    X: np.ndarray, data: OutcomeSet, refit: Refit, oof_at_1: np.ndarray, chosen: dict[str, Any]
) -> tuple[float, np.ndarray]:
    """One factor on every constant, by the set's routing score on the inner OOF predictions (factor 1 reuses its
    OOF); ties go to factor 1, then to the smaller factor. Returns the factor and the OOF at it."""
    Q = data.quality
    oof = {s: np.full(Q.shape, np.nan) for s in C_SCALES if s != 1.0}
    oof_cost = np.full(Q.shape, np.nan)
    train_means = np.zeros(Q.shape)
    chars = np.array([len(t) for t in data.texts], dtype=np.float64)
    for held in inner_folds(len(X)):
        kept = np.setdiff1d(np.arange(len(X)), held)
        for s in oof:
            oof[s][held] = predict_logistic(X[held], *refit(X[kept], Q[kept], s))
        if data.has_cost:
            cost = CostModel.fit(X[kept], chars[kept], data.cost[kept], selectable=True)
            oof_cost[held] = cost.predict(X[held], chars[held])
        train_means[held] = nan_mean(Q[kept], axis=0)
    oof[1.0] = oof_at_1
    scores = {s: headline_score(data, oof[s], oof_cost, train_means) for s in C_SCALES}
    best = max(C_SCALES, key=lambda s: (round(scores[s], 12), s == 1.0, -s))
    chosen.update(scale=best, scale_scores={str(s): round(v, 5) for s, v in scores.items()})
    return float(best), oof[best]
