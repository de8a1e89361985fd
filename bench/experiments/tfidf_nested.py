"""The TF-IDF variant of the learned router, its constants chosen inside each fit, scored by nested CV (issue 16.2).

    OMP_NUM_THREADS=1 LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 \\
      python bench/experiments/tfidf_nested.py --data-dir autoroute-data --parts cv training request

The variant is the shipped `LearnedRouter` (same dense features, cost and latency models, same `predict`) with a
TF-IDF block of the prompt's words and word pairs beside the dense features, fitted jointly (the block:
`bench/experiments/tfidf_text_block.py`; the fit: `tfidf_joint_logistic.py`). Its constants, the dense C and the block's CS
(grid C ∈ {0.3, 1} × CS ∈ {0.3, 1, 3}), are chosen inside `fit` by 3-fold CV on the training rows it is given (at
most 4,000 of them), so `evaluate_cv`'s 5 outer folds are nested: no reported prompt is fitted or scored while
choosing. Two criteria on the same inner out-of-fold predictions:

- `learned-tfidf`, per model, the candidate of least inner-CV soft log loss (as the shipped router chooses C). Named
  as THE variant before any outer result was seen.
- `learned-tfidf-route`, one candidate per set: the best routing score of the inner out-of-fold predictions, of the
  kind the set is judged by (APGR with two models, else AIQ when it records costs, else max quality).

`learned-tfidf-fast` and `learned-tfidf-fast-route` are the same with less work (`joint_logistic.FAST`: selection on at
most 2,000 rows, inner fits capped at 60 iterations, the final fit at 75), added after the first two had been scored
and timed, because their retrain missed the 60 s budget; the cut was sized on training time alone.

`--parts cv`: all four, 5-fold CV on the five routing train sets × fold seeds 0 and 1, the metrics of
bench/learned_table.py, then a table against the shipped `learned` in docs/learned_vs_peers.json on each set's
headline metric. `--parts training`: one complete fit (features, vocabulary, selection, final fit, cost) on the
100,000-row, 11-model synthetic set of bench/experiments/tfidf_cost.py, on all rows and on a random 50,000 (the
shipped trainer's `learning.max_train_rows`), beside the shipped fit on the same rows. `--parts request`: per single
prompt of the real mix (`../shared/data/tasks/real_dev.jsonl`), the shipped `predict` plus the block's logits, as the
gateway would decide with the variant, fitted on the llmrouter train set. Everything goes to
bench/experiments/tfidf_nested.json (merged, so parts and sets can be run one at a time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "experiments" / "tfidf_nested.json"
BASELINE = ROOT / "docs" / "learned_vs_peers.json"
SETS = ("routerbench", "llmrouter", "routellm", "mmlu_pro", "alpaca_eval")
SEEDS = (0, 1)
VARIANTS = ("learned-tfidf", "learned-tfidf-route", "learned-tfidf-fast", "learned-tfidf-fast-route")
PREREGISTERED = "learned-tfidf"
HEADLINE = {"routerbench": "aiq", "llmrouter": "aiq", "routellm": "apgr", "mmlu_pro": "gain_points",
            "alpaca_eval": "gain_points"}  # fmt: skip
KEYS = ("aiq", "max_quality", "quality_at_best_cost", "cost_to_match_best", "apgr", "cpt50", "oracle_gap_captured")
MAX_TRAIN_ROWS = 50_000
"""The shipped trainer's `learning.max_train_rows` (main, c120dd4): larger sets are fitted on a random sample."""

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from router_plugins.outcomes import OutcomeSet  # noqa: E402 - after the path is set, for `python bench/...`
from router_plugins.routers import LearnedRouter  # noqa: E402
import tfidf_joint_logistic as jl  # noqa: E402
import tfidf_text_block as tb  # noqa: E402

_INNER: dict[str, jl.InnerCV] = {}
"""Inner CVs by training split, so the second criterion reuses the first one's fits (the same rows, the same fits)."""


def _digest(data: OutcomeSet) -> str:
    h = hashlib.sha1("\n".join(data.ids).encode())
    h.update(np.ascontiguousarray(data.quality).tobytes())
    return h.hexdigest()


def headline(report: dict[str, Any], models: int) -> float:
    """The routing score a set is judged by, from what its data holds: APGR with two models, else AIQ with costs,
    else max quality."""
    if models == 2 and report.get("apgr") is not None:
        return float(report["apgr"])
    if report.get("aiq") is not None:
        return float(report["aiq"])
    return float(report["max_quality"])


class TfidfRouter(LearnedRouter):
    """The learned router with the TF-IDF block; (C, CS) per model by inner-CV log loss."""

    name = "learned-tfidf"
    effort = jl.THOROUGH
    chosen_log: ClassVar[list[dict[str, Any]]] = []
    """One entry per fit: what was chosen and how long each step took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._vocabulary: tb.Vocabulary | None = None
        self.timings: dict[str, float] = {}

    def features(self, texts: Sequence[str], tasks: Sequence[str | None]) -> Any:
        """[dense | block]: `predict`'s one product covers both (a CSR matrix once the block is fitted)."""
        from scipy.sparse import csr_matrix, hstack

        dense = super().features(texts, tasks)
        if self._vocabulary is None:
            return dense
        return hstack([csr_matrix(dense), self._vocabulary.transform(texts)], format="csr")

    def choose(self, data: OutcomeSet, inner: jl.InnerCV) -> np.ndarray:
        return jl.by_log_loss(inner.oof, data.quality[inner.rows], inner.rows)

    def fit(self, data: OutcomeSet) -> None:
        from router_plugins.routers.learned import _fit_cost

        started = time.perf_counter()
        self._vocabulary = None
        X = self.features(data.texts, data.tasks)
        featured = time.perf_counter()
        vocabulary, S = tb.fit_vocabulary(data.texts)
        vectorised = time.perf_counter()
        key = f"{_digest(data)} {self.effort}"
        inner = _INNER.get(key) or jl.inner_cv(X, S, data.quality, effort=self.effort)
        _INNER[key] = inner
        for stale in list(_INNER)[:-5]:
            _INNER.pop(stale)
        fitted = jl.fit_chosen(X, S, data.quality, inner, self.choose(data, inner), self.effort)
        self._vocabulary = vocabulary
        self._coef = np.hstack([fitted.weights.coef, fitted.weights.text_coef.T])
        self._intercept = fitted.weights.intercept
        self.regularisation = {m: float(c) for m, c in zip(data.models, fitted.C)}
        self.models = tuple(data.models)
        self._counts = np.isfinite(data.quality).sum(axis=0).astype(np.float64)
        self._cost_coef = _fit_cost(data)
        self.trained_on = len(data)
        self.version = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + f"-n{len(data)}"
        ended = time.perf_counter()
        self.timings = {"features_s": featured - started, "vocabulary_s": vectorised - featured,
                        "selection_s": inner.seconds, "final_fit_s": fitted.seconds["final"],
                        "total_s": ended - started}  # fmt: skip
        self.chosen_log.append({
            "C": dict(Counter(f"{c:g}" for c in fitted.C)), "CS": dict(Counter(f"{c:g}" for c in fitted.CS)),
            "terms": len(vocabulary), "selection_rows": fitted.selection_rows,
            "final_iterations": fitted.weights.iterations, "seconds": round(ended - started, 1),
        })  # fmt: skip

    def feature_importance(self, data: OutcomeSet, seed: int = 0) -> dict[str, float]:
        return {}  # the permutation importance of the shipped router shuffles dense columns only


class TfidfRouteRouter(TfidfRouter):
    """The same, with one (C, CS) per set: the best routing score of the inner out-of-fold predictions."""

    name = "learned-tfidf-route"

    def choose(self, data: OutcomeSet, inner: jl.InnerCV) -> np.ndarray:
        from proxy.evaluation.offline import score
        from router_plugins.routers.learned import _fit_cost

        sample = data.subset(inner.rows)
        line = _fit_cost(data)  # two numbers per model: nothing to select, so fitted on the split as `fit` does
        chars = np.array([len(t) for t in sample.texts], dtype=np.float64)[:, None]
        cost = np.maximum(line[:, 0] + line[:, 1] * chars, 1e-9)
        train_quality = np.tile(np.nanmean(sample.quality, axis=0), (len(sample), 1))
        scores = [headline(score(self.name, sample, P, cost, train_quality, per_task=False), len(data.models))
                  for P in inner.oof]  # fmt: skip
        return np.full(len(data.models), int(np.argmax(scores)))


class TfidfFastRouter(TfidfRouter):
    """Per-model log loss, with the selection and the final fit cut to fit the retrain budget (`text_block.FAST`)."""

    name = "learned-tfidf-fast"
    effort = jl.FAST


class TfidfFastRouteRouter(TfidfRouteRouter):
    name = "learned-tfidf-fast-route"
    effort = jl.FAST


ROUTERS: dict[str, type[LearnedRouter]] = {
    "learned": LearnedRouter,
    **{r.name: r for r in (TfidfRouter, TfidfRouteRouter, TfidfFastRouter, TfidfFastRouteRouter)},
}


def table() -> Any:
    from router_plugins.routers import default_table

    routers = default_table(with_plugins=False)
    for name in VARIANTS:
        routers.register(name, ROUTERS[name])
    return routers


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# -- parts ----------------------------------------------------------------------------------------------------------


def cross_validation(static_embed: Any, out: dict[str, Any], args: argparse.Namespace) -> None:
    from proxy.evaluation.offline import evaluate_cv
    from router_plugins.outcomes import load_outcomes
    from router_plugins.routers import RouterContext

    context = RouterContext(static_embed=static_embed)
    routers = table()
    for name in args.sets:
        data = load_outcomes(DATA / "routing" / name / "train.jsonl")
        for seed in args.seeds:
            for router in args.routers:
                TfidfRouter.chosen_log.clear()
                started, load = time.perf_counter(), load_average()
                report = evaluate_cv(router, data, args.folds, context=context, seed=seed, table=routers)
                row = {k: report.get(k) for k in KEYS}
                row["best_single"] = report["best_single"]["quality"]
                row["gain_points"] = 100 * (report["max_quality"] - report["best_single"]["quality"])
                row["seconds"] = round(time.perf_counter() - started, 1)
                row["load_average_at_start"] = load
                row["chosen_per_fold"] = list(TfidfRouter.chosen_log)
                out.setdefault("cv", {}).setdefault(name, {}).setdefault(router, {})[str(seed)] = row
                shown = {
                    k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if k != "chosen_per_fold"
                }
                print(name, router, seed, json.dumps(shown), flush=True)
                write(out, args.out)
        _INNER.clear()


def training(static_embed: Any, out: dict[str, Any], rows: int, names: Sequence[str]) -> None:
    from tfidf_cost import synthetic

    from proxy.evaluation.offline import registry_for
    from router_plugins.routers import RouterContext

    data = synthetic(static_embed, rows)
    sample = data.subset(np.sort(np.random.default_rng(0).choice(len(data), MAX_TRAIN_ROWS, replace=False)))
    context = RouterContext(static_embed=static_embed)
    result: dict[str, Any] = {"offered_rows": rows, "models": len(data.models), "budget_s": 60.0}
    out["training"] = result
    for label, subset in (("all_rows", data), (f"sample_{MAX_TRAIN_ROWS}", sample)):
        for name in names:
            _INNER.clear()  # no fit borrows another's inner CV here
            router = ROUTERS[name](registry_for(subset), context)
            load = load_average()
            started = time.perf_counter()
            router.fit(subset)
            seconds = time.perf_counter() - started
            entry: dict[str, Any] = {"rows": len(subset), "total_s": round(seconds, 1), "load_average_at_start": load}
            if isinstance(router, TfidfRouter):
                entry.update({k: round(v, 1) for k, v in router.timings.items()})
                entry["chosen"] = router.chosen_log[-1]
            else:
                entry["C_chosen"] = dict(Counter(f"{c:g}" for c in router.regularisation.values()))
            result.setdefault(label, {})[name] = entry
            print(label, name, json.dumps(entry), flush=True)


def request_path(static_embed: Any, out: dict[str, Any], name: str) -> None:
    from tfidf_cost import percentiles

    from proxy.evaluation.offline import registry_for
    from router_plugins.outcomes import load_outcomes
    from router_plugins.routers import PromptBatch, RouterContext

    train = load_outcomes(DATA / "routing" / "llmrouter" / "train.jsonl")
    context = RouterContext(static_embed=static_embed)
    variant = ROUTERS[name](registry_for(train), context)
    assert isinstance(variant, TfidfRouter)
    variant.fit(train)
    assert variant._vocabulary is not None
    vocabulary, d = variant._vocabulary, variant._coef.shape[1] - len(variant._vocabulary)
    text_coef = np.ascontiguousarray(variant._coef[:, d:].T).astype(np.float32)
    dense = LearnedRouter(registry_for(train), context)  # the shipped predict, with the variant's dense weights
    dense.models, dense._counts, dense._cost_coef = variant.models, variant._counts, variant._cost_coef
    dense._coef, dense._intercept = variant._coef[:, :d], variant._intercept
    prompts = [json.loads(line)["text"] for line in open(DATA / "tasks" / "real_dev.jsonl")]
    for text in prompts[:50]:  # warm-up
        dense.predict(PromptBatch([text], ["chat"]))
        tb.text_logits(vocabulary, text_coef, text)
    shipped, total = [], []
    load = load_average()
    for text in prompts:
        started = time.perf_counter()
        prediction = dense.predict(PromptBatch([text], ["chat"]))
        middle = time.perf_counter()
        z = np.log(prediction.quality[0] / (1 - prediction.quality[0])) + tb.text_logits(vocabulary, text_coef, text)
        1.0 / (1.0 + np.exp(-z))
        ended = time.perf_counter()
        shipped.append(middle - started)
        total.append(ended - started)
    check = variant.predict(PromptBatch(prompts[:200], ["chat"] * 200)).quality
    again = []
    for text in prompts[:200]:
        q = dense.predict(PromptBatch([text], ["chat"])).quality[0]
        again.append(1.0 / (1.0 + np.exp(-(np.log(q / (1 - q)) + tb.text_logits(vocabulary, text_coef, text)))))
    out["request_path"] = {
        "router": name, "prompts": len(prompts), "terms": len(vocabulary), "models": len(variant.models),
        "load_average_at_start": load, "budget_p99_ms": 5.0,
        "shipped_predict": percentiles(shipped), "variant_predict": percentiles(total),
        "max_abs_difference_vs_batch_predict": float(np.max(np.abs(np.array(again) - check))),
    }  # fmt: skip
    print(json.dumps(out["request_path"]), flush=True)


# -- comparison -----------------------------------------------------------------------------------------------------


def compare(out: dict[str, Any]) -> str:
    """Each variant against the shipped `learned` of docs/learned_vs_peers.json, cell by cell, on the set's headline."""
    baseline = json.loads(BASELINE.read_text())
    lines = ["| set | headline | seed | shipped learned | " + " | ".join(f"{v} (Δ)" for v in VARIANTS) + " |",
             "|---|---|---|---|" + "---|" * len(VARIANTS)]  # fmt: skip
    wins = dict.fromkeys(VARIANTS, 0)
    cells = dict.fromkeys(VARIANTS, 0)
    for name in SETS:
        metric = HEADLINE[name]
        for seed in (str(s) for s in SEEDS):
            shipped = baseline.get(name, {}).get("learned", {}).get(seed, {}).get(metric)
            shown = []
            for variant in VARIANTS:
                mine = out.get("cv", {}).get(name, {}).get(variant, {}).get(seed, {}).get(metric)
                if shipped is None or mine is None:
                    shown.append(_fmt(mine, metric))
                    continue
                cells[variant] += 1
                wins[variant] += mine > shipped
                shown.append(f"{_fmt(mine, metric)} ({_fmt(mine - shipped, metric, signed=True)})")
            lines.append(f"| {name} | {metric} | {seed} | {_fmt(shipped, metric)} | {' | '.join(shown)} |")
    lines.append("")
    for variant in VARIANTS:
        chosen = " (named before any outer result was seen)" if variant == PREREGISTERED else ""
        lines.append(f"{variant}{chosen} beats the shipped router in {wins[variant]} of {cells[variant]} cells.")
    return "\n".join(lines)


def _fmt(value: float | None, metric: str, signed: bool = False) -> str:
    if value is None:
        return "-"
    if metric == "gain_points":
        return f"{value:+.2f}"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def write(out: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("autoroute-data"), help="holds the static table")
    parser.add_argument("--parts", nargs="+", default=["cv", "training", "request"], help="or only `compare`")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--routers", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--training-routers", nargs="+", default=list(ROUTERS))
    parser.add_argument("--request-router", default="learned-tfidf-fast-route")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from router_plugins.classify.static_embedding import StaticEmbedder

    static = StaticEmbedder.load_or_build(args.data_dir)
    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    out["design"] = {
        "edge_chars": tb.EDGE_CHARS, "ngrams": list(tb.NGRAMS), "min_df": tb.MIN_DF, "max_terms": tb.MAX_TERMS,
        "grid": [list(c) for c in jl.candidates()], "inner_folds": jl.INNER_FOLDS,
        "effort": {r.name: vars(r.effort) for r in map(ROUTERS.__getitem__, VARIANTS) if issubclass(r, TfidfRouter)},
        "preregistered": PREREGISTERED,
    }  # fmt: skip
    if "cv" in args.parts:
        cross_validation(static.embed, out, args)
    if "training" in args.parts:
        training(static.embed, out, args.rows, args.training_routers)
        write(out, args.out)
    if "request" in args.parts:
        request_path(static.embed, out, args.request_router)
        write(out, args.out)
    write(out, args.out)
    print(compare(out))


if __name__ == "__main__":
    main()
