"""Logistic regression over dense features and a sparse block, each with its own L2 constant, chosen by inner CV.

Each model's objective is the soft-label log loss over the prompts with a known outcome plus ‖w‖²/(2C) on the dense
weights and ‖u‖²/(2CS) on the block's, intercept unpenalised: with C = CS, exactly scikit-learn's
`LogisticRegression(C)` on [X | S] with each prompt counted as a success with weight q and a failure with weight
1 − q. The models are independent, so their sum is minimised at once (`logistic.fit_logistic`'s idea), here by a
plain L-BFGS (`minimise`): scipy's L-BFGS-B spent ~70 % of a fit in its own bookkeeping over 10⁵–10⁶ weights.

(C, CS) are never chosen on data a caller scores on: `fit_selected` picks them per model (or per set, by the `choose`
given) by `INNER_FOLDS`-fold CV inside the rows it is given, on a random subsample of `Effort.selection_rows` when
there are more, walking the grid so that each fit warm-starts the next; then it fits all rows, warm-started from the
folds' average at the chosen constants. An evaluation harness that calls it per outer fold is nested CV. `Effort`
bounds the work: the retrain's time (bench/experiments/tfidf_nested.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router_plugins.outcomes import kfold_indices
from router_plugins.routers.logistic import soft_log_loss

C_GRID = (0.3, 1.0)
"""Candidate constants of the dense weights."""
CS_GRID = (0.3, 1.0, 3.0)
"""Candidate constants of the block's weights."""
DEFAULT_C, DEFAULT_CS = 0.3, 1.0
"""Used when there are too few prompts to cross-validate (fewer than `MIN_ROWS_TO_SELECT`)."""
INNER_FOLDS = 3
INNER_SEED = 7919
MIN_ROWS_TO_SELECT = 30
MEMORY = 6
"""L-BFGS: the number of past steps its curvature estimate keeps."""
GTOL, FTOL = 1e-6, 1e-9
"""L-BFGS stops when no gradient component (of the loss per known outcome) exceeds GTOL, or a step lowers the loss by
less than FTOL of itself."""


@dataclass(frozen=True)
class Effort:
    """How much work the selection and the final fit may do: what bounds the training time."""

    selection_rows: int = 4_000
    """Rows the inner CV selects on; larger training sets select on a random subsample of this many."""
    inner_iterations: int = 100
    """For each fit of the inner CV (warm-started along the grid: many stop earlier)."""
    final_iterations: int = 150
    """For the fit on all rows, which starts from the folds' average at the chosen constants."""


THOROUGH = Effort()
FAST = Effort(selection_rows=2_000, inner_iterations=60, final_iterations=75)
"""Half the selection rows, ~60 % of the iterations: aimed at the 60 s retrain (bench/experiments/tfidf_nested.py)."""


# -- the fit ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    coef: np.ndarray
    """[M, d] dense weights."""
    text_coef: np.ndarray
    """[terms, M] the block's weights (a prompt's logits gather the rows of its terms)."""
    intercept: np.ndarray
    """[M]"""
    iterations: int = 0


def logits(X: np.ndarray, S: Any, weights: Weights) -> np.ndarray:
    """[n, M] for dense features X [n, d] and the block S [n, terms] (sparse)."""
    z = np.asarray(X, dtype=np.float32) @ weights.coef.T.astype(np.float32) + weights.intercept
    return z + np.asarray(S @ weights.text_coef.astype(np.float32), dtype=np.float64)


def predict(X: np.ndarray, S: Any, weights: Weights) -> np.ndarray:
    """[n, M] success probabilities."""
    return 1.0 / (1.0 + np.exp(-logits(X, S, weights)))


def fit_joint(
    X: np.ndarray,
    S: Any,
    Q: np.ndarray,
    C: float | np.ndarray,
    CS: float | np.ndarray,
    start: Weights | None = None,
    max_iterations: int = THOROUGH.final_iterations,
) -> Weights:
    """Per model, soft-label log loss over [X | S] + ‖w‖²/(2C) + ‖u‖²/(2CS), summed over models and minimised at once.

    Q [n, M] holds soft labels (NaN = unknown). A model with fewer than two known outcomes, or the same outcome
    everywhere, gets zero weights and the logit of its mean as intercept. The block's columns no row uses keep zero
    weights (their optimum) and are left out of the solve. `start` warm-starts the solver.
    """
    X = np.asarray(X, dtype=np.float32)
    S = S.tocsr().astype(np.float32)
    n, d = X.shape
    v, M = S.shape[1], Q.shape[1]
    Cs = np.broadcast_to(np.asarray(C, dtype=np.float64), (M,))
    CSs = np.broadcast_to(np.asarray(CS, dtype=np.float64), (M,))
    known = np.isfinite(Q)
    coef, text_coef, intercept = np.zeros((M, d)), np.zeros((v, M)), np.zeros(M)
    fitted = []
    for j in range(M):
        y = Q[known[:, j], j]
        intercept[j] = _logit(float(y.mean()) if y.size else 0.5)
        if y.size >= 2 and not np.all(y == y[0]):
            fitted.append(j)
    if not fitted:
        return Weights(coef, text_coef, intercept)
    cols = np.array(fitted)
    used = np.unique(S.indices)
    Su = S[:, used]
    SuT = Su.T.tocsr()
    u, k = len(used), len(cols)
    mask = known[:, cols].astype(np.float32)
    q = np.where(known[:, cols], Q[:, cols], 0.0).astype(np.float32)
    penalty, text_penalty = 1.0 / (2.0 * Cs[cols]), 1.0 / (2.0 * CSs[cols])
    scale = 1.0 / max(float(mask.sum()), 1.0)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, U, b = theta[: d * k].reshape(d, k), theta[d * k : (d + u) * k].reshape(u, k), theta[(d + u) * k :]
        z = X @ W.astype(np.float32) + Su @ U.astype(np.float32) + b.astype(np.float32)
        data_loss = (mask * (np.logaddexp(0.0, z) - q * z)).sum(dtype=np.float64)
        loss = float(data_loss + (penalty * (W**2).sum(axis=0)).sum() + (text_penalty * (U**2).sum(axis=0)).sum())
        residual = mask * (1.0 / (1.0 + np.exp(-z)) - q)
        grad_W = (X.T @ residual).astype(np.float64) + 2.0 * penalty * W
        grad_U = np.asarray(SuT @ residual, dtype=np.float64) + 2.0 * text_penalty * U
        grad_b = residual.sum(axis=0, dtype=np.float64)
        return loss * scale, np.concatenate([grad_W.ravel(), grad_U.ravel(), grad_b]) * scale

    if start is not None:
        text_start = start.text_coef[used][:, cols]
        theta0 = np.concatenate([start.coef[cols].T.ravel(), text_start.ravel(), start.intercept[cols]])
    else:
        theta0 = np.concatenate([np.zeros((d + u) * k), intercept[cols]])
    theta, iterations = minimise(objective, theta0, max_iterations)
    coef[cols] = theta[: d * k].reshape(d, k).T
    text_coef[np.ix_(used, cols)] = theta[d * k : (d + u) * k].reshape(u, k)
    intercept[cols] = theta[(d + u) * k :]
    return Weights(coef, text_coef, intercept, iterations)


def minimise(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    max_iterations: int,
    memory: int = MEMORY,
    gtol: float = GTOL,
    ftol: float = FTOL,
) -> tuple[np.ndarray, int]:
    """(minimiser, iterations) of a smooth convex `objective` (value, gradient) by L-BFGS with backtracking.

    scipy's L-BFGS-B spends ~70 % of a fit here in its own bookkeeping (bounds we do not have, over 10⁵-10⁶ weights);
    the two-loop recursion is a few passes of vector arithmetic."""
    f, g = objective(x)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        if np.max(np.abs(g)) <= gtol:
            return x, iteration - 1
        direction = -g
        alphas = []
        for s, y, rho in reversed(steps):
            alpha = rho * float(s @ direction)
            direction = direction - alpha * y
            alphas.append(alpha)
        if steps:
            s, y, _ = steps[-1]
            direction *= float(s @ y) / float(y @ y)
            for (s, y, rho), alpha in zip(steps, reversed(alphas)):
                direction = direction + s * (alpha - rho * float(y @ direction))
        else:
            direction /= max(1.0, float(np.linalg.norm(g)))
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction (numerical trouble): restart from the gradient
            steps.clear()
            direction, slope = -g, -float(g @ g)
        step = 1.0
        for _ in range(30):
            candidate = x + step * direction
            f_new, g_new = objective(candidate)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            return x, iteration  # no decrease found: as close as float32 products can tell
        s, y = candidate - x, g_new - g
        sy = float(s @ y)
        if sy > 1e-12:
            steps.append((s, y, 1.0 / sy))
            del steps[:-memory]
        decrease = (f - f_new) / max(abs(f), abs(f_new), 1.0)
        x, f, g = candidate, f_new, g_new
        if decrease <= ftol:
            break
    return x, iteration


# -- selection ------------------------------------------------------------------------------------------------------

Chooser = Callable[[Sequence[np.ndarray], np.ndarray, np.ndarray], np.ndarray]
"""(inner out-of-fold probabilities [n, M] per candidate, soft labels [n, M], the rows they are of) -> [M] the index
of each model's candidate."""


def by_log_loss(oof: Sequence[np.ndarray], Q: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each model's candidate of least inner-CV soft log loss."""
    table = np.nan_to_num(np.array([soft_log_loss(P, Q) for P in oof]), nan=np.inf)
    return np.argmin(table, axis=0)


def candidates(c_grid: Sequence[float] = C_GRID, cs_grid: Sequence[float] = CS_GRID) -> tuple[tuple[float, float], ...]:
    """Every (C, CS), ordered so that consecutive ones differ in one constant (each fit warm-starts the next)."""
    path: list[tuple[float, float]] = []
    for i, c in enumerate(sorted(c_grid)):
        path += [(c, cs) for cs in sorted(cs_grid, reverse=bool(i % 2))]
    return tuple(path)


@dataclass(frozen=True)
class InnerCV:
    """Every candidate's inner out-of-fold predictions, and its fits averaged over the folds (a warm start)."""

    grid: tuple[tuple[float, float], ...]
    rows: np.ndarray
    """Indices (into the rows given) the inner CV ran on: all, or a random subsample."""
    oof: tuple[np.ndarray, ...]
    """Per candidate, [len(rows), M] inner out-of-fold success probabilities."""
    mean_fits: tuple[Weights, ...]
    """Per candidate, its fits' weights averaged over the inner folds."""
    seconds: float


@dataclass(frozen=True)
class JointFit:
    weights: Weights
    C: np.ndarray
    """[M] each model's dense constant."""
    CS: np.ndarray
    """[M] each model's block constant."""
    inner_loss: dict[str, list[float]] | None = None
    """Per candidate ("C=…,CS=…"), each model's inner-CV log loss (None when nothing was selected)."""
    selection_rows: int = 0
    """How many rows the inner CV ran on."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Time spent selecting and in the final fit."""


def inner_cv(
    X: np.ndarray,
    S: Any,
    Q: np.ndarray,
    grid: Sequence[tuple[float, float]] | None = None,
    effort: Effort = THOROUGH,
) -> InnerCV:
    """`INNER_FOLDS`-fold CV of every candidate (C, CS) of `grid` inside these rows (a random subsample of
    `effort.selection_rows` of them when there are more); along the grid, each fit warm-starts the next."""
    started = time.perf_counter()
    grid = tuple(grid or candidates())
    S = S.tocsr()
    rows = np.arange(len(X))
    if len(X) > effort.selection_rows:
        rows = np.sort(np.random.default_rng(INNER_SEED).choice(len(X), effort.selection_rows, replace=False))
    Xs, Ss, Qs = X[rows], S[rows], Q[rows]
    oof = [np.full(Qs.shape, np.nan) for _ in grid]
    means: list[Weights | None] = [None] * len(grid)
    for held in kfold_indices(len(rows), INNER_FOLDS, INNER_SEED):
        kept = np.setdiff1d(np.arange(len(rows)), held)
        Xk, Sk, Qk = Xs[kept], Ss[kept], Qs[kept]
        weights = None
        for i, (C, CS) in enumerate(grid):
            weights = fit_joint(Xk, Sk, Qk, C, CS, start=weights, max_iterations=effort.inner_iterations)
            oof[i][held] = predict(Xs[held], Ss[held], weights)
            means[i] = _add_share(means[i], weights)
    mean_fits = tuple(m for m in means if m is not None)
    return InnerCV(grid, rows, tuple(oof), mean_fits, time.perf_counter() - started)


def _add_share(total: Weights | None, fit: Weights) -> Weights:
    """`total` plus one inner fold's share of the folds' average."""
    share = Weights(fit.coef / INNER_FOLDS, fit.text_coef / INNER_FOLDS, fit.intercept / INNER_FOLDS)
    if total is None:
        return share
    return Weights(total.coef + share.coef, total.text_coef + share.text_coef, total.intercept + share.intercept)


def fit_chosen(
    X: np.ndarray, S: Any, Q: np.ndarray, inner: InnerCV, chosen: np.ndarray, effort: Effort = THOROUGH
) -> JointFit:
    """The fit on all rows with each model's candidate `chosen[j]` of `inner.grid`, warm-started from its folds."""
    started = time.perf_counter()
    chosen = np.asarray(chosen, dtype=np.int64)
    C = np.array([inner.grid[i][0] for i in chosen])
    CS = np.array([inner.grid[i][1] for i in chosen])
    fits = [inner.mean_fits[i] for i in chosen]
    start = Weights(np.stack([f.coef[j] for j, f in enumerate(fits)]),
                    np.stack([f.text_coef[:, j] for j, f in enumerate(fits)], axis=1),
                    np.array([f.intercept[j] for j, f in enumerate(fits)]))  # fmt: skip
    weights = fit_joint(X, S, Q, C, CS, start=start, max_iterations=effort.final_iterations)
    Qs = Q[inner.rows]
    losses = {f"C={c:g},CS={cs:g}": [float(v) for v in soft_log_loss(P, Qs)]
              for (c, cs), P in zip(inner.grid, inner.oof)}  # fmt: skip
    seconds = {"selection": inner.seconds, "final": time.perf_counter() - started}
    return JointFit(weights, C, CS, losses, len(inner.rows), seconds)


def fit_selected(
    X: np.ndarray,
    S: Any,
    Q: np.ndarray,
    grid: Sequence[tuple[float, float]] | None = None,
    choose: Chooser = by_log_loss,
    effort: Effort = THOROUGH,
) -> JointFit:
    """Each model's (C, CS) chosen from `grid` by `choose` on the inner CV (`inner_cv`), then a fit on all rows."""
    grid = tuple(grid or candidates())
    if len(X) < MIN_ROWS_TO_SELECT or len(grid) == 1:
        C, CS = grid[0] if len(grid) == 1 else (DEFAULT_C, DEFAULT_CS)
        started = time.perf_counter()
        weights = fit_joint(X, S, Q, C, CS, max_iterations=effort.final_iterations)
        M = Q.shape[1]
        return JointFit(weights, np.full(M, C), np.full(M, CS), seconds={"final": time.perf_counter() - started})
    inner = inner_cv(X, S, Q, grid, effort)
    return fit_chosen(X, S, Q, inner, choose(inner.oof, Q[inner.rows], inner.rows), effort)


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return float(np.log(p / (1 - p)))
