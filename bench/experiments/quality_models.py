"""Model pieces for bench/experiments/quality_variants.py: each takes training rows only and picks its own constants
by inner cross-validation on them (the same 3 inner folds as `router_plugins.routers.logistic.fit_selected`).

- `format_features`: language, format and length-bucket markers (issue 16 item 2c).
- `CostModel`: per model, cost linear in prompt chars (shipped) or a ridge fit of log cost on the features (2d).
- `select_shared_c`: one C for every model, chosen by the routing score or the pooled log loss of inner OOF (2e);
  `select_scale`: every constant of a fitted structure times one factor chosen by the routing score.
- `fit_lowrank`: per-model logistic plus a shared low-rank component (IRT-style difficulty when rank 1) (2a).
- `knn_quality`: similarity-weighted kNN shrunk toward each model's mean, a stacking head (2b).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from router_plugins.language import detect_language
from router_plugins.outcomes import OutcomeSet, kfold_indices
from router_plugins.routers.logistic import (
    INNER_FOLDS,
    INNER_SEED,
    fit_logistic,
    predict_logistic,
    soft_log_loss,
)

LANGUAGES = ("en", "zh", "es", "fr", "de", "ru", "ja", "ko", "pt", "it")
LENGTH_EDGES = (100, 300, 1000, 3000)
"""Prompt-length buckets in chars: a step function beside the shipped log length."""
FORMAT_GROUPS = {"format": list(range(7)), "length_bucket": list(range(7, 7 + len(LENGTH_EDGES) + 1)),
                 "language": list(range(8 + len(LENGTH_EDGES), 9 + len(LENGTH_EDGES) + len(LANGUAGES)))}  # fmt: skip
"""Column groups of `format_features`."""
_FENCE = re.compile(r"```")
_OPTION = re.compile(r"(?m)^\s*\(?[A-Ja-j][).:]\s")
_INLINE_OPTION = re.compile(r"(?:^|\s)\(?[A-D]\)\s")
_LIST_ITEM = re.compile(r"(?m)^\s*(?:[-*•]|\d{1,2}[.)])\s")
_JSON = re.compile(r"[{\[]\s*\"[^\"\n]{1,40}\"\s*:")
_MATH = re.compile(r"[=+^<>]|\\frac|\\sqrt|\$|\d\s*[-*/]\s*\d")


def inner_folds(n: int) -> list[np.ndarray]:
    """The shipped selection's inner folds, so OOF predictions of different heads line up row by row."""
    return kfold_indices(n, INNER_FOLDS, INNER_SEED)


def format_features(texts: Sequence[str], language: Callable[[str], str] = detect_language) -> np.ndarray:
    """[n, 9 + buckets + languages]: code fence, multiple-choice options, question mark, list, JSON, math symbols,
    log line count, length bucket one-hot, language one-hot (other languages share the last column)."""
    rows = []
    for text in texts:
        options = len(_OPTION.findall(text)) + len(_INLINE_OPTION.findall(text))
        lines = text.count("\n") + 1
        bucket = [0.0] * (len(LENGTH_EDGES) + 1)
        bucket[int(np.searchsorted(LENGTH_EDGES, len(text), side="right"))] = 1.0
        code = language(text)
        lang = [1.0 if code == name else 0.0 for name in LANGUAGES] + [0.0 if code in LANGUAGES else 1.0]
        rows.append([
            1.0 if _FENCE.search(text) else 0.0,
            1.0 if options >= 2 else 0.0,
            1.0 if "?" in text else 0.0,
            min(len(_LIST_ITEM.findall(text)) / 5.0, 2.0),
            1.0 if _JSON.search(text) else 0.0,
            min(len(_MATH.findall(text)) / 10.0, 3.0),
            np.log1p(lines) / 3.0,
            *bucket,
            *lang,
        ])  # fmt: skip
    return np.array(rows, dtype=np.float32).reshape(len(texts), -1)


# -- cost (2d) ------------------------------------------------------------------------------------------------------

RIDGE_ALPHAS = (0.3, 3.0, 30.0)


@dataclass
class CostModel:
    """Per model either `a + b·chars` (kind "linear", the shipped fit) or `exp(X·w + c)·smear` (kind "ridge": ridge
    on log cost, Duan's smearing factor for the mean), whichever has the lower inner-CV squared error in USD."""

    kinds: list[str]
    linear: np.ndarray
    """[M, 2] (a, b); NaN where no cost is recorded."""
    ridge: list[tuple[np.ndarray, float, float] | None]
    """Per model (w, c, smear), None for linear ones."""
    chosen: list[str]

    @classmethod
    def fit(cls, X: np.ndarray, chars: np.ndarray, cost: np.ndarray, selectable: bool = True) -> CostModel:
        M = cost.shape[1]
        linear = np.array([_fit_linear(chars, cost[:, j]) for j in range(M)]).reshape(M, 2)
        kinds, ridge, chosen = ["linear"] * M, [None] * M, ["linear"] * M
        if not selectable:
            return cls(kinds, linear, ridge, chosen)
        X = np.asarray(X, dtype=np.float64)
        for j in range(M):
            known = np.flatnonzero(np.isfinite(cost[:, j]) & (cost[:, j] > 0))
            if len(known) < 30:
                continue
            errors = {"linear": 0.0, **{f"ridge{a:g}": 0.0 for a in RIDGE_ALPHAS}}
            for held in inner_folds(len(known)):
                train, test = np.delete(known, held), known[held]
                y = cost[test, j]
                ab = _fit_linear(chars[train], cost[train, j])
                errors["linear"] += float(np.sum((ab[0] + ab[1] * chars[test] - y) ** 2))
                for alpha, fitted in zip(RIDGE_ALPHAS, _fit_log_ridge(X[train], cost[train, j], RIDGE_ALPHAS)):
                    errors[f"ridge{alpha:g}"] += float(np.sum((_predict_log_ridge(X[test], fitted) - y) ** 2))
            best = min(errors, key=errors.__getitem__)
            chosen[j] = best
            if best != "linear":
                alpha = float(best.removeprefix("ridge"))
                kinds[j] = "ridge"
                ridge[j] = _fit_log_ridge(X[known], cost[known, j], (alpha,))[0]
        return cls(kinds, linear, ridge, chosen)

    def predict(self, X: np.ndarray, chars: np.ndarray) -> np.ndarray:
        out = np.full((len(chars), len(self.kinds)), np.nan)
        for j, kind in enumerate(self.kinds):
            if kind == "ridge" and self.ridge[j] is not None:
                out[:, j] = _predict_log_ridge(np.asarray(X, dtype=np.float64), self.ridge[j])
            elif np.isfinite(self.linear[j, 0]):
                out[:, j] = np.maximum(self.linear[j, 0] + self.linear[j, 1] * chars, 1e-9)
        return out


def _fit_linear(chars: np.ndarray, y: np.ndarray) -> np.ndarray:
    """As `learned._fit_cost` for one model."""
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
    return np.exp(X @ w + c) * smear


InnerCost = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(train rows, test rows) -> predicted costs of the test rows by a cost model fitted on the train rows."""
Refit = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]
"""(X, Q, scale) -> (coef, intercept) of a quality model whose regularisation constants are all multiplied by scale."""


# -- one C per set (2e) -----------------------------------------------------------------------------------------------


def headline(data: OutcomeSet) -> str:
    """The routing score a set is judged by: APGR for two models, AIQ with costs, else max quality (argmax)."""
    if len(data.models) == 2:
        return "apgr"
    return "aiq" if data.has_cost else "max_quality"


def routing_score(data: OutcomeSet, quality: np.ndarray, cost: np.ndarray, train_means: np.ndarray) -> float:
    """The harness's headline score of (OOF) predictions on `data`; `train_means` [n, M] names the best single."""
    from proxy.evaluation.offline import score

    value = score("inner", data, quality, cost, train_means, per_task=False)[headline(data)]
    return float(value) if value is not None else -np.inf


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


def fit_lowrank(
    X: np.ndarray,
    Q: np.ndarray,
    C_model: np.ndarray | None,
    rank: int,
    C_shared: float,
    seed: int = 0,
    max_iterations: int = 400,
) -> tuple[np.ndarray, np.ndarray]:
    """(coef [M, d], intercept [M]) of logit p_ij = x_i·(u_j + V a_j) + b_j: a per-model part u_j with L2
    1/(2·C_model_j) (None: no per-model part, pure matrix factorisation) and a shared rank-`rank` part V [d, r],
    a_j [r] with L2 (|V|² + |A|²)/(2·C_shared). With rank 1 this is the IRT form a_j·(θ_j − d(x)) + w_j·x with
    difficulty d(x) = v·x shared by every model. Fitted jointly by L-BFGS on soft labels (NaN = unknown)."""
    from scipy.optimize import minimize

    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    M = Q.shape[1]
    known = np.isfinite(Q)
    mask = known.astype(np.float32)
    q = np.where(known, Q, 0.0).astype(np.float32)
    means = np.clip(np.nanmean(np.where(known, Q, np.nan), axis=0), 1e-3, 1 - 1e-3)
    per_model = C_model is not None
    penalty_u = 1.0 / (2.0 * np.broadcast_to(np.asarray(C_model if per_model else 1.0, dtype=np.float64), (M,)))
    penalty_s = 1.0 / (2.0 * C_shared)
    scale = 1.0 / max(float(mask.sum()), 1.0)
    nu = d * M if per_model else 0
    nv, na = d * rank, rank * M

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        U = theta[:nu].reshape(d, M) if per_model else np.zeros((d, M))
        V = theta[nu : nu + nv].reshape(d, rank)
        A = theta[nu + nv : nu + nv + na].reshape(rank, M)
        return U, V, A, theta[nu + nv + na :]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        U, V, A, b = unpack(theta)
        XV = X @ V.astype(np.float32)
        z = XV @ A.astype(np.float32) + b.astype(np.float32)
        if per_model:
            z += X @ U.astype(np.float32)
        loss = float((mask * (np.logaddexp(0.0, z) - q * z)).sum(dtype=np.float64))
        loss += penalty_s * float((V**2).sum() + (A**2).sum())
        R = mask * (1.0 / (1.0 + np.exp(-z)) - q)
        grad_V = (X.T @ (R @ A.T.astype(np.float32))).astype(np.float64) + 2.0 * penalty_s * V
        grad_A = (XV.T @ R).astype(np.float64) + 2.0 * penalty_s * A
        parts = [grad_V.ravel(), grad_A.ravel(), R.sum(axis=0, dtype=np.float64)]
        if per_model:
            loss += float((penalty_u * (U**2).sum(axis=0)).sum())
            parts.insert(0, ((X.T @ R).astype(np.float64) + 2.0 * penalty_u * U).ravel())
        return loss * scale, np.concatenate(parts) * scale

    rng = np.random.default_rng(seed)
    theta0 = np.concatenate([
        np.zeros(nu), rng.normal(0.0, 0.3, nv), rng.normal(0.0, 0.3, na), np.log(means / (1 - means)),
    ])  # fmt: skip
    result = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iterations, "ftol": 1e-10, "gtol": 1e-6})  # fmt: skip
    U, V, A, b = unpack(result.x)
    return (U + V @ A).T.copy(), b.copy()


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
