"""Modelling variants of the learned router, scored by 5-fold CV on the routing-outcome train sets.

    LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE \
      .venv/bin/python bench/experiments/learned_variants.py --sets routerbench llmrouter routellm mmlu_pro alpaca_eval \
      --seeds 0 1 --variants base cvC shared mix platt

Features are exactly LearnedRouter.features (static embedding of the focused prompt, length, task one-hot, digit
and code markers); cost is exactly learned._fit_cost; scoring is proxy.evaluation.offline.score. Only the quality
model changes. Every hyper-parameter choice (C, mix weight, calibration) is made by an inner CV on the outer
fold's train split only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from proxy.evaluation.offline import registry_for, score  # noqa: E402
from router_plugins.outcomes import kfold_indices, load_outcomes  # noqa: E402
from router_plugins.routers.base import RouterContext  # noqa: E402
from router_plugins.routers.learned import LearnedRouter, _fit_cost  # noqa: E402

torch.set_num_threads(1)
DATA = Path("/work/shared/data/routing")
CACHE = Path("/tmp/learned_variants_cache")
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)


# -- features ---------------------------------------------------------------------------------------------------

def load(name: str):
    d = load_outcomes(DATA / name / "train.jsonl")
    CACHE.mkdir(exist_ok=True)
    f = CACHE / f"{name}.npy"
    if f.exists():
        X = np.load(f)
    else:
        from router_plugins.classify.static_embedding import StaticEmbedder
        static = StaticEmbedder.load_or_build(Path("autoroute-data"))
        router = LearnedRouter(registry_for(d), RouterContext(static_embed=static.embed))
        X = router.features(d.texts, d.tasks)
        np.save(f, X)
    return d, X.astype(np.float64)


# -- batched logistic regression (all models at once, soft labels, per-model L2 = 1/(2C), intercept free) -----------

def fit_logreg(X, Q, C, shared_ratio=None, iters=200, S=None, CS=None):
    """Returns (W [d, M], b [M]). Objective per model: sum_i softBCE + ||w||²/(2C), as sklearn's with soft labels.

    shared_ratio r: w_j = w0 + v_j, penalty ||w0||²/(2C) + r·||v_j||²/(2C) (multi-task shrinkage toward a shared
    'difficulty' direction); None = independent models.
    """
    n, d = X.shape
    M = Q.shape[1]
    C = np.broadcast_to(np.asarray(C, dtype=np.float64), (M,))
    mask = np.isfinite(Q)
    Xt = torch.tensor(X)
    Qt = torch.tensor(np.nan_to_num(Q))
    Mt = torch.tensor(mask, dtype=torch.float64)
    p = np.clip(np.nanmean(Q, 0), 1e-3, 1 - 1e-3)
    b = torch.tensor(np.log(p / (1 - p)), requires_grad=True)
    V = torch.zeros(d, M, dtype=torch.float64, requires_grad=True)
    params = [V, b]
    if S is not None:  # an extra sparse block (scipy CSR) with its own L2 = 1/(2·CS)
        coo = S.tocoo()
        St = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, coo.shape, dtype=torch.float64).coalesce()
        U = torch.zeros(S.shape[1], M, dtype=torch.float64, requires_grad=True)
        params.append(U)
    if shared_ratio is not None:
        w0 = torch.zeros(d, 1, dtype=torch.float64, requires_grad=True)
        params.append(w0)
    lam = torch.tensor(1.0 / (2 * C))
    opt = torch.optim.LBFGS(params, lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        W = V + w0 if shared_ratio is not None else V
        z = Xt @ W + b
        if S is not None:
            z = z + torch.sparse.mm(St, U)
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, Qt, reduction="none") * Mt).sum()
        if shared_ratio is not None:
            loss = loss + (lam * shared_ratio * (V ** 2).sum(0)).sum() + lam.mean() * (w0 ** 2).sum()
        else:
            loss = loss + (lam * (V ** 2).sum(0)).sum()
        if S is not None:
            loss = loss + (U ** 2).sum() / (2 * CS)
        loss = loss / n
        loss.backward()
        return loss

    opt.step(closure)
    W = (V + w0) if shared_ratio is not None else V
    if S is not None:
        return W.detach().numpy(), b.detach().numpy(), U.detach().numpy()
    return W.detach().numpy(), b.detach().numpy()


def logits(X, Wb):
    W, b = Wb
    return X @ W + b


def sig(z):
    return 1 / (1 + np.exp(-z))


def loss_per_model(P, Q):
    P = np.clip(P, 1e-6, 1 - 1e-6)
    L = -(Q * np.log(P) + (1 - Q) * np.log(1 - P))
    return np.nanmean(np.where(np.isfinite(Q), L, np.nan), 0)


def inner_oof(X, Q, fitpred, folds=3, seed=123):
    out = np.zeros_like(Q)
    for te in kfold_indices(len(X), folds, seed):
        tr = np.setdiff1d(np.arange(len(X)), te)
        out[te] = fitpred(X[tr], Q[tr], X[te])
    return out


# -- smoothed kNN on the embedding part -------------------------------------------------------------------------

def knn_pred(Xtr, Qtr, Xte, k=40, alpha=5.0, temp=0.05, dim=384):
    E = Xtr[:, :dim] / np.linalg.norm(Xtr[:, :dim], axis=1, keepdims=True)
    En = Xte[:, :dim] / np.linalg.norm(Xte[:, :dim], axis=1, keepdims=True)
    prior = np.nanmean(Qtr, 0)
    Qf = np.where(np.isfinite(Qtr), Qtr, prior)
    out = np.empty((len(Xte), Qtr.shape[1]))
    k = min(k, len(Xtr) - 1)
    for s in range(0, len(Xte), 1024):
        S = En[s:s + 1024] @ E.T
        idx = np.argpartition(-S, k, axis=1)[:, :k]
        sv = np.take_along_axis(S, idx, 1)
        w = np.exp((sv - sv.max(1, keepdims=True)) / temp)
        out[s:s + 1024] = (np.einsum("nk,nkm->nm", w, Qf[idx]) + alpha * prior) / (w.sum(1, keepdims=True) + alpha)
    return out


# -- variants: each is (Xtr, Qtr, Xte) -> predicted quality [n_te, M] --------------------------------------------

def v_base(Xtr, Qtr, Xte):
    return sig(logits(Xte, fit_logreg(Xtr, Qtr, 1.0)))


def v_sklearn(Xtr, Qtr, Xte):
    from sklearn.linear_model import LogisticRegression
    out = np.zeros((len(Xte), Qtr.shape[1]))
    for j in range(Qtr.shape[1]):
        y = Qtr[:, j]
        m = LogisticRegression(C=1.0, max_iter=300).fit(
            np.vstack([Xtr, Xtr]), np.r_[np.ones(len(Xtr)), np.zeros(len(Xtr))], sample_weight=np.r_[y, 1 - y] + 1e-6)
        out[:, j] = m.predict_proba(Xte)[:, 1]
    return out


def choose_C(Xtr, Qtr, grid=C_GRID, per_model=True):
    losses = []
    for C in grid:
        oof = inner_oof(Xtr, Qtr, lambda a, q, b, C=C: sig(logits(b, fit_logreg(a, q, C))))
        losses.append(loss_per_model(oof, Qtr))
    losses = np.array(losses)  # [G, M]
    if per_model:
        return np.array(grid)[np.argmin(losses, 0)]
    return np.full(Qtr.shape[1], grid[int(np.argmin(losses.mean(1)))])


def v_cvC(Xtr, Qtr, Xte):
    C = choose_C(Xtr, Qtr)
    v_cvC.chosen.append(C.tolist())
    return sig(logits(Xte, fit_logreg(Xtr, Qtr, C)))


v_cvC.chosen = []


def v_setC(Xtr, Qtr, Xte):
    C = choose_C(Xtr, Qtr, per_model=False)
    v_setC.chosen.append(float(C[0]))
    return sig(logits(Xte, fit_logreg(Xtr, Qtr, C)))


v_setC.chosen = []


def make_fixedC(C):
    return lambda Xtr, Qtr, Xte: sig(logits(Xte, fit_logreg(Xtr, Qtr, C)))


def make_shared(r):
    return lambda Xtr, Qtr, Xte: sig(logits(Xte, fit_logreg(Xtr, Qtr, 1.0, shared_ratio=r)))


def v_shared_cv(Xtr, Qtr, Xte):
    grid = (None, 1.0, 3.0, 10.0)
    losses = [loss_per_model(inner_oof(Xtr, Qtr, make_shared(r) if r else v_base), Qtr).mean() for r in grid]
    r = grid[int(np.argmin(losses))]
    v_shared_cv.chosen.append(r)
    return (make_shared(r) if r else v_base)(Xtr, Qtr, Xte)


v_shared_cv.chosen = []


def v_mix(Xtr, Qtr, Xte):
    """Convex mix of logreg and smoothed kNN; weight per set by inner-CV log loss."""
    a = inner_oof(Xtr, Qtr, v_base)
    k = inner_oof(Xtr, Qtr, knn_pred)
    grid = np.linspace(0, 1, 11)
    losses = [loss_per_model(w * a + (1 - w) * k, Qtr).mean() for w in grid]
    w = grid[int(np.argmin(losses))]
    v_mix.chosen.append(float(w))
    return w * v_base(Xtr, Qtr, Xte) + (1 - w) * knn_pred(Xtr, Qtr, Xte)


v_mix.chosen = []


def v_platt(Xtr, Qtr, Xte):
    """Per-model Platt scaling (a·z + b) of the logreg logit, fitted on inner out-of-fold logits."""
    z = inner_oof(Xtr, Qtr, lambda a, q, b: logits(b, fit_logreg(a, q, 1.0)))
    zt = logits(Xte, fit_logreg(Xtr, Qtr, 1.0))
    out = np.empty_like(zt)
    for j in range(Qtr.shape[1]):
        zz = torch.tensor(z[:, j]); y = torch.tensor(np.nan_to_num(Qtr[:, j]))
        ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([ab], max_iter=100, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(ab[0] * zz + ab[1], y)
            loss.backward()
            return loss
        opt.step(closure)
        a, b = ab.detach().numpy()
        out[:, j] = sig(a * zt[:, j] + b)
    return out


def v_isotonic(Xtr, Qtr, Xte):
    from sklearn.isotonic import IsotonicRegression
    z = inner_oof(Xtr, Qtr, lambda a, q, b: logits(b, fit_logreg(a, q, 1.0)))
    zt = logits(Xte, fit_logreg(Xtr, Qtr, 1.0))
    out = np.empty_like(zt)
    for j in range(Qtr.shape[1]):
        iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(z[:, j], Qtr[:, j])
        out[:, j] = iso.predict(zt[:, j])
    return out


def v_pair(Xtr, Qtr, Xte):
    """Two models: quality of each as logreg predicts, but the strong-minus-weak gap predicted directly.

    E[q_s − q_w] = P(s wins) − P(w wins), a 3-class multinomial on sign(q_s − q_w) (soft for non-binary).
    Only the gap is replaced: q_w stays the logreg prediction, q_s = q_w + gap.
    """
    from sklearn.linear_model import LogisticRegression
    base = v_base(Xtr, Qtr, Xte)
    if Qtr.shape[1] != 2:
        return base
    s = int(np.argmax(np.nanmean(Qtr, 0))); w = 1 - s
    diff = Qtr[:, s] - Qtr[:, w]
    y = np.sign(np.round(diff, 6)).astype(int)
    m = LogisticRegression(C=1.0, max_iter=500).fit(Xtr, y)
    P = m.predict_proba(Xte)
    cls = list(m.classes_)
    gap = P[:, cls.index(1)] - P[:, cls.index(-1)]
    out = base.copy()
    out[:, s] = np.clip(base[:, w] + gap, 0, 1)
    return out


CUR = {}
"""The outer fold's texts, for variants that read the prompt text itself: CUR['tr'], CUR['te'] (inner CV: by index)."""


def make_tfidf(C=0.3, CS=1.0, max_features=30000):
    """Logreg on the learned router's features plus a TF-IDF bag of words/bigrams of the prompt (own L2)."""
    def f(Xtr, Qtr, Xte):
        from sklearn.feature_extraction.text import TfidfVectorizer
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=3, max_features=max_features, sublinear_tf=True,
                              dtype=np.float64)
        Str = vec.fit_transform(CUR["tr"])
        Ste = vec.transform(CUR["te"])
        W, b, U = fit_logreg(Xtr, Qtr, C, S=Str, CS=CS)
        return sig(Xte @ W + b + Ste @ U)
    return f


def v_tfidf_mix(Xtr, Qtr, Xte):
    """Convex mix (weight by inner-CV log loss) of the TF-IDF logreg (C 0.3) and the smoothed kNN."""
    f = make_tfidf(0.3, 1.0)
    texts_tr, texts_te = CUR["tr"], CUR["te"]
    a = np.zeros_like(Qtr)
    for te in kfold_indices(len(Xtr), 3, 123):
        tr = np.setdiff1d(np.arange(len(Xtr)), te)
        CUR["tr"], CUR["te"] = [texts_tr[i] for i in tr], [texts_tr[i] for i in te]
        a[te] = f(Xtr[tr], Qtr[tr], Xtr[te])
    CUR["tr"], CUR["te"] = texts_tr, texts_te
    k = inner_oof(Xtr, Qtr, knn_pred)
    grid = np.linspace(0, 1, 11)
    w = grid[int(np.argmin([loss_per_model(g * a + (1 - g) * k, Qtr).mean() for g in grid]))]
    v_tfidf_mix.chosen.append(float(w))
    return w * f(Xtr, Qtr, Xte) + (1 - w) * knn_pred(Xtr, Qtr, Xte)


v_tfidf_mix.chosen = []


VARIANTS = {
    "base": v_base, "sklearn": v_sklearn, "cvC": v_cvC, "setC": v_setC, "mix": v_mix, "platt": v_platt,
    "isotonic": v_isotonic, "shared3": make_shared(3.0), "shared10": make_shared(10.0), "sharedcv": v_shared_cv,
    "pair": v_pair, "C0.1": make_fixedC(0.1), "C0.3": make_fixedC(0.3), "C3": make_fixedC(3.0),
    "knn": knn_pred, "tfidf": make_tfidf(0.3, 1.0), "tfidf_c1": make_tfidf(1.0, 1.0), "tfidf_s3": make_tfidf(0.3, 3.0),
    "tfidf_s03": make_tfidf(0.3, 0.3), "tfidf_mix": v_tfidf_mix,
}


def run(set_name, d, X, variant, seed, folds=5):
    Q = d.quality
    Qh = np.zeros_like(Q); Ch = np.zeros_like(Q); TQ = np.zeros_like(Q)
    for te in kfold_indices(len(d), folds, seed):
        tr = np.setdiff1d(np.arange(len(d)), te)
        CUR["tr"] = [d.texts[i] for i in tr]
        CUR["te"] = [d.texts[i] for i in te]
        Qh[te] = VARIANTS[variant](X[tr], Q[tr], X[te])
        if d.has_cost:
            a_b = _fit_cost(d.subset(tr))
            chars = np.array([len(d.texts[i]) for i in te], float)
            Ch[te] = np.maximum(a_b[:, 0][None] + a_b[:, 1][None] * chars[:, None], 1e-9)
        else:
            Ch[te] = np.nan
        TQ[te] = np.nanmean(Q[tr], 0)
    r = score(variant, d, Qh, Ch, TQ, per_task=False)
    out = {"set": set_name, "variant": variant, "seed": seed, "best_single": r["best_single"]["quality"],
           "max_quality": r["max_quality"], "aiq": r["aiq"], "apgr": r.get("apgr"), "cpt50": r.get("cpt50"),
           "brier": float(np.nanmean((Qh - Q) ** 2))}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=["routerbench", "llmrouter", "routellm", "mmlu_pro", "alpaca_eval"])
    ap.add_argument("--variants", nargs="+", default=["base"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--out", default="/tmp/learned_variants.jsonl")
    args = ap.parse_args()
    for s in args.sets:
        d, X = load(s)
        for v in args.variants:
            for seed in args.seeds:
                for f in (v_cvC, v_setC, v_mix, v_shared_cv, v_tfidf_mix):
                    f.chosen = []
                t = time.time()
                r = run(s, d, X, v, seed)
                r["seconds"] = round(time.time() - t, 1)
                chosen = next((f.chosen for f in (v_cvC, v_setC, v_mix, v_shared_cv, v_tfidf_mix) if VARIANTS[v] is f), None)
                if chosen:
                    r["chosen"] = chosen if v != "cvC" else np.round(np.median(np.array(chosen), 0), 3).tolist()
                fmt = {k: (round(x, 4) if isinstance(x, float) else x) for k, x in r.items()}
                print(json.dumps(fmt), flush=True)
                with open(args.out, "a") as h:
                    h.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
