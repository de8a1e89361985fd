"""What the TF-IDF variant of the learned router would cost: per-request decision time and 100k-row training time.

    OMP_NUM_THREADS=1 LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 \\
      python bench/experiments/tfidf_cost.py --data-dir autoroute-data --out bench/experiments/tfidf_cost.json

Request path: the real prompt mix (`../shared/data/tasks/real_dev.jsonl`, 2,367 prompts in 31 languages), one prompt
at a time as the gateway decides: the shipped router's `predict` (static embedding + features + one product), and the
TF-IDF variant's extra work (the vectoriser's `transform` of the prompt and a sparse product with the per-model
weights), both fitted on the llmrouter train set (9 models). Training: 100,000 rows made by cycling the five train
sets' prompts, 11 models with outcomes drawn from a fixed logistic model; timed are the shipped trainer
(`LearnedRouter.fit`: features + C chosen by inner CV + refit) and the TF-IDF variant's extra fit (vectoriser and
one joint fit of the dense and sparse blocks at fixed constants, i.e. before any selection of its own).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SETS = ("routerbench", "llmrouter", "routellm", "mmlu_pro", "alpaca_eval")


def tfidf(max_features: int = 30000):  # type: ignore[no-untyped-def]
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), min_df=3, max_features=max_features, sublinear_tf=True, dtype=np.float32)


def fit_with_sparse(X, S, Q, C=0.3, CS=0.3, max_iter=300):  # type: ignore[no-untyped-def]
    """The variant's quality model: logistic on [dense X | sparse S] with separate L2 (1/2C, 1/2CS), joint L-BFGS."""
    from scipy.optimize import minimize

    X = X.astype(np.float32)
    S = S.tocsr().astype(np.float32)
    n, d = X.shape
    v, M = S.shape[1], Q.shape[1]
    known = np.isfinite(Q)
    mask, q = known.astype(np.float32), np.where(known, Q, 0).astype(np.float32)
    scale = 1.0 / mask.sum()

    def objective(theta):  # type: ignore[no-untyped-def]
        W = theta[: d * M].reshape(d, M)
        U = theta[d * M : d * M + v * M].reshape(v, M)
        b = theta[d * M + v * M :]
        z = X @ W.astype(np.float32) + S @ U.astype(np.float32) + b.astype(np.float32)
        loss = (mask * (np.logaddexp(0, z) - q * z)).sum(dtype=np.float64)
        loss += (W**2).sum() / (2 * C) + (U**2).sum() / (2 * CS)
        r = mask * (1 / (1 + np.exp(-z)) - q)
        grad = np.concatenate([(X.T @ r + W / C).ravel(), (S.T @ r + U / CS).ravel(), r.sum(0, dtype=np.float64)])
        return loss * scale, grad * scale

    theta0 = np.zeros(d * M + v * M + M)
    result = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "ftol": 1e-9})
    return result


def percentiles(samples: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3)}  # fmt: skip


def request_path(static_embed, out: dict) -> None:  # type: ignore[no-untyped-def]
    from proxy.evaluation.offline import registry_for
    from router_plugins.outcomes import load_outcomes
    from router_plugins.routers import LearnedRouter, PromptBatch, RouterContext

    train = load_outcomes(DATA / "routing" / "llmrouter" / "train.jsonl")
    router = LearnedRouter(registry_for(train), RouterContext(static_embed=static_embed))
    router.fit(train)
    vectoriser = tfidf().fit(train.texts)
    U = np.random.default_rng(0).normal(0, 0.01, (len(vectoriser.vocabulary_), len(train.models))).astype(np.float32)
    prompts = [json.loads(line)["text"] for line in open(DATA / "tasks" / "real_dev.jsonl")]
    for text in prompts[:50]:  # warm-up
        router.predict(PromptBatch([text], ["chat"]))
        vectoriser.transform([text]) @ U
    shipped, extra = [], []
    for text in prompts:
        started = time.perf_counter()
        router.predict(PromptBatch([text], ["chat"]))
        middle = time.perf_counter()
        vectoriser.transform([text]) @ U
        ended = time.perf_counter()
        shipped.append(middle - started)
        extra.append(ended - middle)
    out["request_path"] = {
        "prompts": len(prompts),
        "vocabulary": len(vectoriser.vocabulary_),
        "shipped_predict": percentiles(shipped),
        "tfidf_extra": percentiles(extra),
        "shipped_plus_tfidf": percentiles([a + b for a, b in zip(shipped, extra)]),
    }
    print(json.dumps(out["request_path"]), flush=True)


def training(static_embed, out: dict, rows: int) -> None:  # type: ignore[no-untyped-def]
    from proxy.evaluation.offline import registry_for
    from router_plugins.outcomes import OutcomeSet, load_outcomes
    from router_plugins.routers import LearnedRouter, RouterContext

    texts: list[str] = []
    for name in SETS:
        texts += load_outcomes(DATA / "routing" / name / "train.jsonl").texts
    texts = [texts[i % len(texts)] for i in range(rows)]
    models = [f"m{j}" for j in range(11)]
    rng = np.random.default_rng(0)
    emb = static_embed(texts[: len(set(texts))])  # a fixed logistic truth on the embedding, for plausible labels
    truth = rng.normal(0, 3, (emb.shape[1], len(models)))
    logits = np.tile(emb @ truth, (rows // len(emb) + 1, 1))[:rows] + rng.normal(0, 1, (rows, len(models)))
    Q = (rng.random((rows, len(models))) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    data = OutcomeSet([str(i) for i in range(rows)], texts, [None] * rows, ["synthetic"] * rows, models, Q,
                      np.full(Q.shape, np.nan), {})  # fmt: skip
    router = LearnedRouter(registry_for(data), RouterContext(static_embed=static_embed))
    started = time.perf_counter()
    router.fit(data)
    shipped = time.perf_counter() - started
    X = router.features(texts, [None] * rows)
    started = time.perf_counter()
    S = tfidf().fit_transform(texts)
    vectorise = time.perf_counter() - started
    started = time.perf_counter()
    result = fit_with_sparse(X, S, Q)
    joint = time.perf_counter() - started
    out["training"] = {
        "rows": rows, "models": len(models), "shipped_fit_s": round(shipped, 1),
        "shipped_C_chosen": sorted(set(router.regularisation.values())),
        "tfidf_vectorise_s": round(vectorise, 1), "tfidf_joint_fit_once_s": round(joint, 1),
        "tfidf_joint_fit_iterations": int(result.nit),
    }  # fmt: skip
    print(json.dumps(out["training"]), flush=True)


def main() -> None:
    from router_plugins.classify.static_embedding import StaticEmbedder

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("autoroute-data"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "experiments" / "tfidf_cost.json")
    parser.add_argument("--parts", nargs="+", default=["request", "training"])
    args = parser.parse_args()
    static = StaticEmbedder.load_or_build(args.data_dir)
    out: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    if "request" in args.parts:
        request_path(static.embed, out)
    if "training" in args.parts:
        training(static.embed, out, args.rows)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
