"""A shared low-rank component beside the per-model logistic regressions (IRT-style when rank 1).

logit p_ij = x_i·(u_j + V a_j) + b_j: every model keeps its own weights u_j, and a rank-r part V a_j lets models
share directions of the prompt space (at rank 1, one difficulty d(x) = v·x that every model feels with its own
slope). The fit collapses to per-model weights (u_j + V a_j), so prediction and artifacts are those of the plain fit.
`fitting.select_structure` keeps it only when it lowers the inner out-of-fold log loss (RouteLLM: APGR +0.005).
"""

from __future__ import annotations

import numpy as np

from ..routing_metrics import nan_mean


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
    means = np.clip(np.nan_to_num(nan_mean(np.where(known, Q, np.nan), axis=0), nan=0.5), 1e-3, 1 - 1e-3)
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
        with np.errstate(over="ignore"):  # exp(-z) = inf for z < -88 in float32: the sigmoid is 0 there, exactly
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
