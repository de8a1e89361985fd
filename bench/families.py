"""Compare model families for the learned router on one routing-outcome set (5-fold CV, same features).

    python bench/families.py --data ../shared/data/routing/routerbench/train.jsonl knn40 logreg mlp irt16 ens

Features are the learned router's: static embedding of the focused prompt, log length, task one-hot, digit and
code markers. Each family predicts every model's success probability; cost is a per-model linear fit on length.
"""
import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE","1")
from pathlib import Path

import torch

from proxy.evaluation.offline import score
from router_plugins.outcomes import kfold_indices, load_outcomes

TASKS = ["coding", "math", "reasoning", "knowledge", "writing"]
import re


def feats(d, E):
    L = np.array([np.log1p(len(t)) for t in d.texts])[:, None]
    T = np.array([[1.0 if t == k else 0.0 for k in TASKS] for t in d.tasks])
    digits = np.array([min(len(re.findall(r"\d", t)) / 20, 3) for t in d.texts])[:, None]
    code = np.array([1.0 if re.search(r"```|def |return |\{|;\n", t) else 0.0 for t in d.texts])[:, None]
    return np.hstack([E, (L - 6) / 2, T, digits, code]).astype(np.float32)

def fit_mlp(X, Q, seed=0, hidden=256, epochs=60, wd=1e-3, drop=0.2, lr=2e-3):
    torch.manual_seed(seed)
    M = Q.shape[1]
    mask = np.isfinite(Q); Qf = np.nan_to_num(Q)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(drop), torch.nn.Linear(hidden, M))
    # init output bias to logit of mean
    p = np.clip(np.nanmean(Q, 0), 0.02, 0.98)
    with torch.no_grad(): net[-1].bias.copy_(torch.tensor(np.log(p/(1-p)), dtype=torch.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    Xt = torch.tensor(X); Qt = torch.tensor(Qf, dtype=torch.float32); Mt = torch.tensor(mask, dtype=torch.float32)
    n = len(X); bs = 128
    for ep in range(epochs):
        perm = torch.randperm(n)
        net.train()
        for s in range(0, n, bs):
            b = perm[s:s+bs]
            logit = net(Xt[b])
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logit, Qt[b], reduction="none") * Mt[b]).sum() / Mt[b].sum()
            opt.zero_grad(); loss.backward(); opt.step()
    net.eval()
    return lambda Xn: torch.sigmoid(net(torch.tensor(Xn))).detach().numpy()

def fit_logreg(X, Q, C=1.0):
    from sklearn.linear_model import LogisticRegression
    models = []
    for j in range(Q.shape[1]):
        y = Q[:, j]; ok = np.isfinite(y)
        yb = (y[ok] >= 0.5).astype(int)
        if yb.min() == yb.max(): models.append(float(yb.mean())); continue
        # soft labels via sample weights duplication
        Xd = np.vstack([X[ok], X[ok]]); yd = np.r_[np.ones(ok.sum()), np.zeros(ok.sum())]; w = np.r_[y[ok], 1 - y[ok]]
        m = LogisticRegression(C=C, max_iter=500).fit(Xd, yd, sample_weight=w + 1e-6)
        models.append(m)
    def pred(Xn):
        out = np.zeros((len(Xn), len(models)))
        for j, m in enumerate(models):
            out[:, j] = m if isinstance(m, float) else m.predict_proba(Xn)[:, 1]
        return out
    return pred

def fit_knn(X, Q, k=40, alpha=5.0, temp=0.05):
    E = X[:, :384]; E = E / np.linalg.norm(E, axis=1, keepdims=True)
    prior = np.nanmean(Q, 0); Qf = np.where(np.isfinite(Q), Q, prior)
    def pred(Xn):
        En = Xn[:, :384]; En = En / np.linalg.norm(En, axis=1, keepdims=True)
        S = En @ E.T
        idx = np.argpartition(-S, k, axis=1)[:, :k]
        s = np.take_along_axis(S, idx, 1); w = np.exp((s - s.max(1, keepdims=True)) / temp)
        num = np.einsum('nk,nkm->nm', w, Qf[idx]) + alpha * prior
        return num / (w.sum(1, keepdims=True) + alpha)
    return pred

def cost_model(d_train):
    # per model: cost ≈ a + b*chars (least squares, clipped ≥0)
    L = np.array([len(t) for t in d_train.texts], float)
    A = np.vstack([np.ones_like(L), L]).T
    coefs = []
    for j in range(len(d_train.models)):
        y = d_train.cost[:, j]; ok = np.isfinite(y)
        if ok.sum() < 2: coefs.append(None); continue
        c, *_ = np.linalg.lstsq(A[ok], y[ok], rcond=None); coefs.append(c)
    def pred(texts):
        L = np.array([len(t) for t in texts], float); A = np.vstack([np.ones_like(L), L]).T
        return np.stack([np.maximum(A @ c, 1e-9) if c is not None else np.full(len(L), np.nan) for c in coefs], 1)
    return pred

def run(name, fitter, d, E, folds=5):
    X = feats(d, E)
    Qh = np.zeros_like(d.quality); Ch = np.zeros_like(d.quality); TQ = np.zeros_like(d.quality)
    for te in kfold_indices(len(d), folds, 0):
        tr = np.setdiff1d(np.arange(len(d)), te)
        f = fitter(X[tr], d.quality[tr])
        Qh[te] = f(X[te])
        dtr = d.subset(tr)
        Ch[te] = cost_model(dtr)([d.texts[i] for i in te]) if d.has_cost else np.nan
        TQ[te] = np.nanmean(d.quality[tr], 0)
    r = score(name, d, Qh, Ch, TQ, per_task=False)
    brier = np.nanmean((Qh - d.quality) ** 2)
    keys = ["max_quality", "aiq", "quality_at_best_cost", "cost_to_match_best", "apgr", "cpt50"]
    print(f"{name:<22} best={r['best_single']['quality']:.4f} " + " ".join(f"{k}={r[k]:.4f}" if isinstance(r.get(k), float) else f"{k}=-" for k in keys if k in r) + f" brier={brier:.4f}", flush=True)
    return r


def fit_irt(X, Q, rank=16, epochs=80, wd=1e-3, lr=3e-3, seed=0, hidden=0):
    """P(m correct | p) = sigmoid(b_m + a_m · f(p)), f a small projection of the embedding shared by all models."""
    torch.manual_seed(seed)
    M = Q.shape[1]; mask = np.isfinite(Q); Qf = np.nan_to_num(Q)
    if hidden:
        proj = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(hidden, rank))
    else:
        proj = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(X.shape[1], rank))
    A = torch.nn.Parameter(torch.randn(M, rank) * 0.1)
    p = np.clip(np.nanmean(Q, 0), 0.02, 0.98)
    b = torch.nn.Parameter(torch.tensor(np.log(p / (1 - p)), dtype=torch.float32))
    params = list(proj.parameters()) + [A, b]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    Xt = torch.tensor(X); Qt = torch.tensor(Qf, dtype=torch.float32); Mt = torch.tensor(mask, dtype=torch.float32)
    n = len(X); bs = 128
    for ep in range(epochs):
        perm = torch.randperm(n); proj.train()
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            logit = proj(Xt[idx]) @ A.T + b
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logit, Qt[idx], reduction="none") * Mt[idx]).sum() / Mt[idx].sum()
            opt.zero_grad(); loss.backward(); opt.step()
    proj.eval()
    return lambda Xn: torch.sigmoid(proj(torch.tensor(Xn)) @ A.T + b).detach().numpy()

def ens(*fitters):
    def fit(X, Q):
        fs = [f(X, Q) for f in fitters]
        return lambda Xn: np.mean([f(Xn) for f in fs], 0)
    return fit


def main() -> None:
    import argparse

    from router_plugins.classify.static_embedding import StaticEmbedder
    from router_plugins.embeddings import focus

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--data-dir", default="autoroute-data", help="where the static embedding table lives")
    parser.add_argument("families", nargs="+")
    args = parser.parse_args()
    d = load_outcomes(args.data)
    E = StaticEmbedder.load_or_build(Path(args.data_dir)).embed([focus(x) for x in d.texts])
    fam = {
        "knn40": lambda X, Q: fit_knn(X, Q, 40, 5.0),
        "logreg": lambda X, Q: fit_logreg(X, Q, 1.0),
        "mlp": lambda X, Q: fit_mlp(X, Q, epochs=30),
        "irt16": lambda X, Q: fit_irt(X, Q, 16, epochs=40),
        "ens": ens(lambda X, Q: fit_logreg(X, Q, 1.0), lambda X, Q: fit_knn(X, Q, 40, 5.0)),
    }
    for name in args.families:
        run(name, fam[name], d, E)


if __name__ == "__main__":
    main()
