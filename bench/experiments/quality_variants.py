"""Variants of the learned router against the shipped one, by nested CV on the five routing-outcome sets (issue 16.2).

    OMP_NUM_THREADS=1 LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 PYTHONPATH=. \\
      python bench/experiments/quality_variants.py --data-dir autoroute-data --variants shipped cost_ridge c_route
    python bench/experiments/quality_variants.py --table      # the deltas table from the JSON alone

A variant is a `+`-joined set of parts on top of the shipped `LearnedRouter` (same features, same per-model C chosen
by inner log loss, same linear cost, unless a part replaces one of them):
- `features`    language, format (fence, options, ?, list, JSON, math, lines) and length-bucket markers (2c);
- `features_cv` the same three groups, each kept only when adding it alone lowers the pooled inner OOF log loss;
- `cost_ridge`  per model, cost linear in chars or a ridge on log cost over the features, by inner CV (2d);
- `lowrank`     a shared low-rank component beside the per-model weights (IRT difficulty at rank 1) (2a);
- `stack`       logistic + kNN + matrix-factorisation heads mixed per model on inner OOF log loss (2b);
- `c_route`     one C for all models, chosen by the set's routing score on the inner OOF predictions (2e);
- `c_loglik`    one C for all models, chosen by the pooled inner OOF log loss (the control for `c_route`);
- `c_scale`     every regularisation constant of the quality model (shipped or `lowrank`) times one factor from
                `C_SCALES`, chosen by the set's routing score on the inner OOF predictions (2e, per-model C kept).
`shipped` is `LearnedRouter` itself, rerun. Every cell is `proxy.evaluation.offline.evaluate_cv` (5 outer folds,
pooled OOF) for fold seeds 0 and 1; everything a variant selects, it selects inside `fit`, on the outer fold's training
rows only (nested CV). Results are merged into bench/experiments/quality_variants.json (one set or variant at a time
is fine); `chosen` records per outer fold what each fit selected.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from router_plugins.outcomes import OutcomeSet
from router_plugins.registry import Registry
from router_plugins.routers import LearnedRouter, PromptBatch, RouterContext
from router_plugins.routers.base import Prediction
from router_plugins.routers.logistic import C_GRID, fit_logistic, fit_selected, predict_logistic, soft_log_loss

try:
    from . import quality_models as qm
except ImportError:  # run as a script
    import quality_models as qm  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("quality_variants.json")
BASELINE = ROOT / "docs" / "learned_vs_peers.json"
DOC = ROOT / "docs" / "EVALUATION.md"
START, END = "<!-- quality-variants:start -->", "<!-- quality-variants:end -->"
SETS = ("routerbench", "llmrouter", "routellm", "mmlu_pro", "alpaca_eval")
HEADLINE = {"routerbench": "aiq", "llmrouter": "aiq", "routellm": "apgr", "mmlu_pro": "gain_points",
            "alpaca_eval": "gain_points"}  # fmt: skip
PARTS = ("features", "features_cv", "cost_ridge", "lowrank", "stack", "c_route", "c_loglik", "c_scale")
QUALITY_PARTS = {"lowrank", "stack", "c_route", "c_loglik"}
"""At most one of these; `c_scale` combines with the shipped fit or with `lowrank`."""
KEYS = ("aiq", "max_quality", "quality_at_best_cost", "cost_to_match_best", "apgr", "cpt50", "oracle_gap_captured")
SHARED_C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)
C_SCALES = (0.1, 0.3, 1.0, 3.0)
"""`c_scale`: factors on every model's own C (chosen by inner log loss), one chosen per set by the routing score."""
LOWRANK_GRID = ((1, 0.1, 1.0), (4, 0.1, 1.0), (4, 0.1, 1 / 3))
"""(rank, C of the shared part, factor on each model's own selected C) candidates beside "none" (the shipped fit)."""
KNN_GRID = ((20, 1.0), (20, 5.0), (50, 1.0), (50, 5.0))
"""(k, shrinkage toward the model mean) candidates of the kNN head."""
MF_RANK, MF_C_GRID = 16, (0.03, 0.1)
MIX_STEP = 0.1
TIE = 1e-9
"""Cells closer than this to the shipped router's are ties (the same choices)."""


class VariantRouter(LearnedRouter):
    """The shipped learned router with some of its parts replaced (class attribute `parts`)."""

    parts: frozenset[str] = frozenset()

    def __init__(self, registry: Registry, context: RouterContext | None = None) -> None:
        super().__init__(registry, context)
        self.chosen: dict[str, Any] = {}
        self._cost_model: qm.CostModel | None = None
        self._heads: dict[str, Any] = {}
        self._mix: np.ndarray | None = None
        self._format_columns: list[int] = []
        """Columns of `quality_models.format_features` appended to the shipped features."""
        if "features" in self.parts:
            self._format_columns = list(range(len(_format_row(""))))

    def features(self, texts: Sequence[str], tasks: Sequence[str | None]) -> np.ndarray:
        base = super().features(texts, tasks)
        if not self._format_columns:
            return base
        extra = np.array([_format_row(t) for t in texts], dtype=np.float32)[:, self._format_columns]
        return np.hstack([base, extra])

    def _select_format_groups(self, data: OutcomeSet) -> None:
        """`features_cv`: each group of format columns that, added alone, lowers the pooled inner OOF log loss."""
        self._format_columns = []
        base = self.features(data.texts, data.tasks).astype(np.float64)
        extra = np.array([_format_row(t) for t in data.texts])
        counts = np.isfinite(data.quality).sum(axis=0)
        loglik = {"none": _pooled_loglik(fit_selected(base, data.quality, C_GRID).oof, data.quality, counts)}
        for group, columns in qm.FORMAT_GROUPS.items():
            if np.ptp(extra[:, columns], axis=0).max() == 0:
                continue  # constant on these rows (e.g. one language): nothing to learn
            X = np.hstack([base, extra[:, columns]])
            loglik[group] = _pooled_loglik(fit_selected(X, data.quality, C_GRID).oof, data.quality, counts)
        kept = [g for g in qm.FORMAT_GROUPS if loglik.get(g, -np.inf) > loglik["none"]]
        self._format_columns = [c for g in kept for c in qm.FORMAT_GROUPS[g]]
        self.chosen.update(format_groups=kept, format_loglik={k: round(v, 2) for k, v in loglik.items()})

    def feature_importance(self, data: OutcomeSet, seed: int = 0) -> dict[str, float]:
        return {}  # the shipped groups do not describe the variants' features or heads

    def fit(self, data: OutcomeSet) -> None:
        if "features_cv" in self.parts:
            self._select_format_groups(data)
        X = self.features(data.texts, data.tasks).astype(np.float64)
        chars = np.array([len(t) for t in data.texts], dtype=np.float64)
        self.models = tuple(data.models)
        self._counts = np.isfinite(data.quality).sum(axis=0).astype(np.float64)
        self.trained_on = len(data)
        self.version = f"variant-n{len(data)}"
        self._cost_model = qm.CostModel.fit(X, chars, data.cost, selectable="cost_ridge" in self.parts)
        if "cost_ridge" in self.parts:
            self.chosen["cost"] = self._cost_model.chosen
        if "c_route" in self.parts or "c_loglik" in self.parts:
            self._fit_shared_c(X, chars, data)
        elif "stack" in self.parts:
            self._fit_stack(X, data.quality)
        else:
            structure = self._fit_lowrank(X, data.quality) if "lowrank" in self.parts else _per_model(X, data.quality)
            self._coef, self._intercept = structure.coef, structure.intercept
            self.chosen["C"] = np.round(structure.C, 4).tolist()
            if "c_scale" in self.parts:
                picked = qm.select_scale(
                    X, data, structure.refit, structure.oof, C_SCALES, self._inner_cost(X, chars, data)
                )
                if picked.scale != 1.0:
                    self._coef, self._intercept = structure.refit(X, data.quality, picked.scale)
                self.chosen.update(scale=picked.scale, scores={str(c): round(s, 5) for c, s in picked.scores.items()})

    def predict(self, prompts: PromptBatch) -> Prediction:
        X = self.features(list(prompts.texts), list(prompts.tasks)).astype(np.float64)
        chars = np.array([len(t) for t in prompts.texts], dtype=np.float64)
        quality = predict_logistic(X, self._coef, self._intercept)
        if self._mix is not None:
            keys, outcomes, k, shrink = self._heads["knn"]
            knn = qm.knn_quality(keys, outcomes, X[:, : self._heads["dim"]], k, shrink)
            heads = {"logistic": quality, "knn": knn, "mf": predict_logistic(X, *self._heads["mf"])}
            quality = sum(self._mix[:, h] * heads[name] for h, name in enumerate(("logistic", "knn", "mf")))
        assert self._cost_model is not None
        return Prediction(self.models, quality, self._cost_model.predict(X, chars))

    # -- quality models --------------------------------------------------------------------------------------------

    def _inner_cost(self, X: np.ndarray, chars: np.ndarray, data: OutcomeSet) -> qm.InnerCost | None:
        """Cost predictions for inner folds (the routing score's cost axis), by this variant's cost model."""
        ridge = "cost_ridge" in self.parts

        def inner_cost(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            model = qm.CostModel.fit(X[train], chars[train], data.cost[train], selectable=ridge)
            return model.predict(X[test], chars[test])

        return inner_cost if data.has_cost else None

    def _fit_shared_c(self, X: np.ndarray, chars: np.ndarray, data: OutcomeSet) -> None:
        criterion = "route" if "c_route" in self.parts else "loglik"
        picked = qm.select_shared_c(X, data, SHARED_C_GRID, criterion, self._inner_cost(X, chars, data))
        self._coef, self._intercept = fit_logistic(X, data.quality, picked.C)
        self.chosen.update(C=picked.C, scores={str(c): round(s, 5) for c, s in picked.scores.items()})

    def _fit_lowrank(self, X: np.ndarray, Q: np.ndarray) -> qm.Structure:
        """The shipped fit, or one with a shared low-rank part (`LOWRANK_GRID`), by pooled inner OOF log loss."""
        shipped = _per_model(X, Q)
        counts = np.isfinite(Q).sum(axis=0)
        candidates = {"none": shipped}
        loglik = {"none": _pooled_loglik(shipped.oof, Q, counts)}
        for rank, c_shared, factor in LOWRANK_GRID:
            name = f"r{rank}-cs{c_shared:g}-f{factor:.2g}"

            def refit(X: np.ndarray, Q: np.ndarray, scale: float, rank=rank, c_shared=c_shared, factor=factor):
                return qm.fit_lowrank(X, Q, shipped.C * factor * scale, rank, c_shared * scale)

            oof = np.full(Q.shape, np.nan)
            for held in qm.inner_folds(len(X)):
                kept = np.setdiff1d(np.arange(len(X)), held)
                oof[held] = predict_logistic(X[held], *refit(X[kept], Q[kept], 1.0))
            candidates[name] = qm.Structure(shipped.C, None, None, oof, refit)
            loglik[name] = _pooled_loglik(oof, Q, counts)
        best = max(loglik, key=loglik.__getitem__)
        self.chosen.update(lowrank=best, loglik={k: round(v, 2) for k, v in loglik.items()})
        chosen = candidates[best]
        if chosen.coef is None:
            coef, intercept = chosen.refit(X, Q, 1.0)
            chosen = qm.Structure(chosen.C, coef, intercept, chosen.oof, chosen.refit)
        return chosen

    def _fit_stack(self, X: np.ndarray, Q: np.ndarray) -> None:
        shipped = fit_selected(X, Q, C_GRID)
        self._coef, self._intercept = shipped.coef, shipped.intercept
        dim = X.shape[1] - self._extra_columns()
        E = X[:, :dim]
        counts = np.isfinite(Q).sum(axis=0)
        folds = qm.inner_folds(len(X))
        knn_oof, knn_loglik = {}, {}
        for k, shrink in KNN_GRID:
            oof = np.full(Q.shape, np.nan)
            for held in folds:
                kept = np.setdiff1d(np.arange(len(X)), held)
                oof[held] = qm.knn_quality(E[kept], Q[kept], E[held], k, shrink)
            knn_oof[(k, shrink)], knn_loglik[(k, shrink)] = oof, _pooled_loglik(oof, Q, counts)
        knn_best = max(knn_loglik, key=knn_loglik.__getitem__)
        mf_oof, mf_loglik = {}, {}
        for c_shared in MF_C_GRID:
            oof = np.full(Q.shape, np.nan)
            for held in folds:
                kept = np.setdiff1d(np.arange(len(X)), held)
                oof[held] = predict_logistic(X[held], *qm.fit_lowrank(X[kept], Q[kept], None, MF_RANK, c_shared))
            mf_oof[c_shared], mf_loglik[c_shared] = oof, _pooled_loglik(oof, Q, counts)
        mf_best = max(mf_loglik, key=mf_loglik.__getitem__)
        self._mix = _mix_weights([shipped.oof, knn_oof[knn_best], mf_oof[mf_best]], Q)
        self._heads = {"dim": dim, "knn": (E.astype(np.float32), Q, *knn_best),
                       "mf": qm.fit_lowrank(X, Q, None, MF_RANK, mf_best)}  # fmt: skip
        self.chosen.update(C=[float(c) for c in shipped.C], knn=list(knn_best), mf_C=mf_best,
                           mix=np.round(self._mix, 2).tolist())  # fmt: skip

    def _extra_columns(self) -> int:
        return len(self._tasks) + 3 + len(self._format_columns)


@lru_cache(maxsize=200_000)
def _format_row(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in qm.format_features([text])[0])


def _per_model(X: np.ndarray, Q: np.ndarray) -> qm.Structure:
    """The shipped quality model: each model's C by inner log loss (`fit_selected`)."""
    fitted = fit_selected(X, Q, C_GRID)

    def refit(X: np.ndarray, Q: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        return fit_logistic(X, Q, fitted.C * scale)

    return qm.Structure(fitted.C, fitted.coef, fitted.intercept, fitted.oof, refit)


def _pooled_loglik(oof: np.ndarray, Q: np.ndarray, counts: np.ndarray) -> float:
    return -float(np.nansum(soft_log_loss(oof, Q) * counts))


def _mix_weights(oofs: Sequence[np.ndarray], Q: np.ndarray) -> np.ndarray:
    """[M, heads]: per model, the simplex point (step `MIX_STEP`) with the lowest inner OOF log loss."""
    steps = round(1 / MIX_STEP)
    grid = np.array([(a, b, steps - a - b) for a in range(steps + 1) for b in range(steps + 1 - a)]) / steps
    stacked = np.stack(oofs, axis=-1)  # [n, M, heads]
    losses = np.stack([soft_log_loss(stacked @ w, Q) for w in grid])  # [grid, M]
    return grid[np.argmin(np.nan_to_num(losses, nan=np.inf), axis=0)]


def variant_class(name: str) -> type[LearnedRouter]:
    if name == "shipped":
        return type("ShippedRerun", (LearnedRouter,), {"name": "shipped"})
    parts = frozenset(name.split("+"))
    if unknown := parts - set(PARTS):
        raise SystemExit(f"unknown part(s) {sorted(unknown)} in {name!r}; known: {', '.join(PARTS)}")
    if {"features", "features_cv"} <= parts:
        raise SystemExit(f"{name!r}: features or features_cv, not both")
    if len(parts & QUALITY_PARTS) > 1:
        raise SystemExit(f"{name!r}: at most one of {sorted(QUALITY_PARTS)}")
    return type(f"Variant_{name}", (VariantRouter,), {"name": name, "parts": parts})


def run(args: argparse.Namespace) -> None:
    from proxy.evaluation.offline import evaluate_cv
    from router_plugins.classify.static_embedding import StaticEmbedder
    from router_plugins.outcomes import load_outcomes
    from router_plugins.routers import RouterTable

    static = StaticEmbedder.load_or_build(args.data_dir)
    context = RouterContext(static_embed=_cached(static.embed))
    fitted: list[Any] = []
    table = RouterTable()
    for variant in args.variants:
        cls = variant_class(variant)
        table.register(variant, lambda registry, ctx, cls=cls: fitted.append(cls(registry, ctx)) or fitted[-1])
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.sets:
        data = load_outcomes(args.data / name / "train.jsonl")
        for variant in args.variants:
            for seed in args.seeds:
                fitted.clear()
                started = time.perf_counter()
                report = evaluate_cv(variant, data, args.folds, context=context, seed=seed, table=table)
                row: dict[str, Any] = {k: report.get(k) for k in KEYS}
                row["best_single"] = report["best_single"]["quality"]
                row["gain_points"] = 100 * (report["max_quality"] - report["best_single"]["quality"])
                row["seconds"] = round(time.perf_counter() - started, 1)
                row["chosen"] = [getattr(router, "chosen", None) for router in fitted]
                results = json.loads(args.out.read_text()) if args.out.exists() else {}
                results.setdefault(name, {}).setdefault(variant, {})[str(seed)] = row
                args.out.write_text(json.dumps(results, indent=1) + "\n")
                shown = {k: round(v, 4) for k, v in row.items() if isinstance(v, float)}
                print(name, variant, seed, json.dumps(shown), flush=True)


def _cached(embed: Any) -> Any:
    cache: dict[str, np.ndarray] = {}

    def cached(texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            cache.update(zip(missing, embed(missing)))
        return np.array([cache[t] for t in texts])

    return cached


def deltas(results: dict[str, Any], baseline: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per variant, per "set/seed" cell: headline metric minus the shipped router's (the `shipped` rerun when
    present, else docs/learned_vs_peers.json's `learned`)."""
    out: dict[str, dict[str, float | None]] = {}
    variants = sorted({v for s in results.values() for v in s})
    for variant in variants:
        cells: dict[str, float | None] = {}
        for name in SETS:
            base = results.get(name, {}).get("shipped") or baseline.get(name, {}).get("learned", {})
            for seed in ("0", "1"):
                mine = results.get(name, {}).get(variant, {}).get(seed)
                theirs = base.get(seed)
                metric = HEADLINE[name]
                ok = mine and theirs and mine.get(metric) is not None and theirs.get(metric) is not None
                cells[f"{name}/{seed}"] = mine[metric] - theirs[metric] if ok else None
        out[variant] = cells
    return out


def _delta(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if abs(value) <= TIE:
        return "="
    return f"{value:+.3f}" if metric == "gain_points" else f"{value:+.5f}"


def render(results: dict[str, Any], baseline: dict[str, Any]) -> str:
    table = deltas(results, baseline)
    cells = [f"{s}/{seed}" for s in SETS for seed in ("0", "1")]
    head = "| variant | " + " | ".join(c.replace("/", " s") for c in cells) + " | won/tied/lost | seconds |"
    lines = [head, "|" + "---|" * (len(cells) + 3)]
    for variant, row in table.items():
        values = [row[c] for c in cells]
        shown = [_delta(v, HEADLINE[c.split("/")[0]]) for v, c in zip(values, cells)]
        wins = sum(1 for v in values if v is not None and v > TIE)
        losses = sum(1 for v in values if v is not None and v < -TIE)
        done = sum(1 for v in values if v is not None)
        seconds = sum(r.get("seconds", 0) for s in results.values() for r in s.get(variant, {}).values())
        lines.append(
            f"| {variant} | " + " | ".join(shown) + f" | {wins}/{done - wins - losses}/{losses} | {seconds:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routing")
    parser.add_argument("--data-dir", type=Path, default=Path("autoroute-data"), help="holds the static table")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--variants", nargs="+", default=["shipped", "cost_ridge", "features", "lowrank"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true", help="print the deltas table from the JSON and stop")
    args = parser.parse_args()
    if not args.table:
        run(args)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    table = render(results, json.loads(BASELINE.read_text()))
    if args.out == OUT:  # the committed JSON: its table in docs/EVALUATION.md is rewritten from it
        from bench._tables import write_between

        write_between(DOC, START, END, table)
    print(table)


if __name__ == "__main__":
    main()
