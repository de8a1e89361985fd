"""Per-model logistic regression on soft labels, all models fitted at once, its C chosen by inner cross-validation.

Each model's objective is the soft-label log loss over the prompts with a known outcome plus ‖w‖²/(2C), intercept
unpenalised: exactly sklearn's `LogisticRegression(C)` with each prompt counted as a success with weight q and a
failure with weight 1 − q. The objectives are independent, so their sum is minimised by one L-BFGS run over every
model's weights (two matrix products per step instead of one solver per model: ~20× faster on 29 models).

C is never chosen on data a caller scores on: `fit_selected` picks it per model by K-fold cross-validation inside the
rows it is given, then refits on all of them. An evaluation harness that calls it per outer fold is nested CV. On large
training sets the selection runs on a fixed random subsample of at most `SELECTION_ROWS` rows (the choice barely
moves with more data, the time does), then the final fit uses every row. The inner folds' out-of-fold predictions at
the chosen constants are returned, for calibrations that must not see their own fit (per-preference operating points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..outcomes import kfold_indices

C_GRID = (0.1, 0.3, 1.0, 3.0)
"""Candidate regularisation constants, searched per model by inner CV."""
DEFAULT_C = 0.3
"""Used when there are too few prompts to cross-validate (fewer than `MIN_ROWS_TO_SELECT`)."""
INNER_FOLDS = 3
INNER_SEED = 7919
MIN_ROWS_TO_SELECT = 30
SELECTION_ROWS = 10_000
"""Rows the inner CV selects C on; larger training sets select on a random subsample of this many."""
MAX_ITERATIONS = 300


@dataclass(frozen=True)
class LogisticFit:
    coef: np.ndarray
    """[M, d] weights per model."""
    intercept: np.ndarray
    """[M]"""
    C: np.ndarray
    """[M] the regularisation constant each model was fitted with."""
    inner_loss: dict[float, list[float]] | None = None
    """Per candidate C, each model's inner-CV log loss (None when C was not selected)."""
    oof_rows: np.ndarray | None = None
    """Indices (into the rows given) that have inner out-of-fold predictions: all, or the selection subsample."""
    oof: np.ndarray | None = None
    """[len(oof_rows), M] inner out-of-fold success probabilities at each model's chosen C (None: not selected)."""


def predict_logistic(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """[n, M] success probabilities."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(X, dtype=np.float64) @ coef.T + intercept)))


def fit_logistic(
    X: np.ndarray, Q: np.ndarray, C: float | np.ndarray, start: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(coef [M, d], intercept [M]) for soft labels Q [n, M] (NaN = unknown) with per-model constants C.

    A model with fewer than two known outcomes, or the same outcome everywhere, gets zero weights and the logit of its
    mean as intercept (a fit would run its intercept to infinity). `start` warm-starts the solver.
    """
    from scipy.optimize import minimize

    X = np.asarray(X, dtype=np.float32)  # float32 products: 3× faster, and the loss is summed in float64
    n, d = X.shape
    M = Q.shape[1]
    Cs = np.broadcast_to(np.asarray(C, dtype=np.float64), (M,))
    known = np.isfinite(Q)
    coef, intercept = np.zeros((M, d)), np.zeros(M)
    fitted = []
    for j in range(M):
        y = Q[known[:, j], j]
        mean = float(y.mean()) if y.size else 0.5
        intercept[j] = _logit(mean)
        if y.size >= 2 and not np.all(y == y[0]):
            fitted.append(j)
    if not fitted:
        return coef, intercept
    cols = np.array(fitted)
    mask = known[:, cols].astype(np.float32)
    q = np.where(known[:, cols], Q[:, cols], 0.0).astype(np.float32)
    penalty = 1.0 / (2.0 * Cs[cols])
    scale = 1.0 / max(mask.sum(), 1.0)
    k = len(cols)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: d * k].reshape(d, k), theta[d * k :]
        z = X @ W.astype(np.float32) + b.astype(np.float32)
        data_loss = (mask * (np.logaddexp(0.0, z) - q * z)).sum(dtype=np.float64)
        loss = float(data_loss + (penalty * (W**2).sum(axis=0)).sum())
        with np.errstate(over="ignore"):  # exp(-z) = inf for z < -88 in float32: the sigmoid is 0 there, exactly
            residual = mask * (1.0 / (1.0 + np.exp(-z)) - q)
        grad_W = (X.T @ residual).astype(np.float64) + 2.0 * penalty * W
        grad_b = residual.sum(axis=0, dtype=np.float64)
        return loss * scale, np.concatenate([grad_W.ravel(), grad_b]) * scale

    if start is not None:
        theta0 = np.concatenate([start[0][cols].T.ravel(), start[1][cols]])
    else:
        theta0 = np.concatenate([np.zeros(d * k), intercept[cols]])
    result = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                      options={"maxiter": MAX_ITERATIONS, "ftol": 1e-9, "gtol": 1e-5})  # fmt: skip
    coef[cols] = result.x[: d * k].reshape(d, k).T
    intercept[cols] = result.x[d * k :]
    return coef, intercept


def soft_log_loss(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """[M] mean soft-label log loss per model over its known outcomes (NaN where it has none)."""
    P = np.clip(P, 1e-6, 1 - 1e-6)
    known = np.isfinite(Q)
    q = np.where(known, Q, 0.0)
    loss = np.where(known, -(q * np.log(P) + (1 - q) * np.log(1 - P)), 0.0)
    with np.errstate(invalid="ignore"):
        return loss.sum(axis=0) / known.sum(axis=0)


def subsample_rows(n: int, limit: int = SELECTION_ROWS) -> np.ndarray:
    """The rows inner CV selects on: all `n`, or a fixed random subsample of `limit` of them."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(INNER_SEED).choice(n, limit, replace=False))


def inner_folds(n: int) -> list[np.ndarray]:
    """The held-out rows of each inner fold over `n` selection rows: every selection uses these, so out-of-fold
    predictions of different candidates line up row by row."""
    return kfold_indices(n, INNER_FOLDS, INNER_SEED)


@dataclass(frozen=True)
class Selection:
    C: np.ndarray
    """[M] each model's constant, chosen by inner-CV log loss."""
    inner_loss: dict[float, list[float]]
    """Per candidate C, each model's inner-CV log loss."""
    oof: np.ndarray
    """[len(rows), M] inner out-of-fold success probabilities at each model's chosen C."""


def select_constants(X: np.ndarray, Q: np.ndarray, grid: tuple[float, ...] = C_GRID) -> Selection:
    """Each model's C chosen from `grid` by `INNER_FOLDS`-fold CV on these rows (call it on `subsample_rows`)."""
    out_of_fold = {C: np.full(Q.shape, np.nan) for C in grid}
    for held in inner_folds(len(X)):
        kept = np.setdiff1d(np.arange(len(X)), held)
        start = None
        for C in sorted(grid):  # along the path, each fit warm-starts the next
            start = fit_logistic(X[kept], Q[kept], C, start)
            out_of_fold[C][held] = predict_logistic(X[held], *start)
    losses = {C: soft_log_loss(out_of_fold[C], Q) for C in grid}
    table = np.nan_to_num(np.array([losses[C] for C in grid]), nan=np.inf)
    best = np.argmin(table, axis=0)
    oof = np.column_stack([out_of_fold[grid[b]][:, j] for j, b in enumerate(best)]) if len(best) else np.zeros(Q.shape)
    return Selection(np.array(grid)[best], {C: [float(v) for v in losses[C]] for C in grid}, oof)


def fit_selected(
    X: np.ndarray, Q: np.ndarray, grid: tuple[float, ...] = C_GRID, selection_rows: int = SELECTION_ROWS
) -> LogisticFit:
    """Each model's C chosen from `grid` by `INNER_FOLDS`-fold CV on these rows only (on a random subsample of
    `selection_rows` of them when there are more), then a fit on all of them."""
    if len(X) < MIN_ROWS_TO_SELECT or len(grid) == 1:
        fixed = np.full(Q.shape[1], grid[0] if len(grid) == 1 else DEFAULT_C)
        return LogisticFit(*fit_logistic(X, Q, fixed), C=fixed)
    rows = subsample_rows(len(X), selection_rows)
    chosen = select_constants(X[rows], Q[rows], grid)
    coef, intercept = fit_logistic(X, Q, chosen.C)  # warm-starting from a subsample fit costs what it saves
    return LogisticFit(coef, intercept, chosen.C, chosen.inner_loss, rows, chosen.oof)


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return float(np.log(p / (1 - p)))
