"""The learned router against its strongest simple peer on the five routing-outcome sets, by nested CV.

    OMP_NUM_THREADS=1 LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 \\
      python bench/learned_table.py --data ../shared/data/routing --data-dir autoroute-data

Every cell is 5-fold CV on a set's train file, pooled out of fold, for fold seeds 0 and 1. The learned router makes
every choice (format groups, each model's C, low-rank part, scale on C, cost model) by CV inside each outer fold's
training split (router_plugins/routers/fitting.py), so the reported folds select nothing. Peers, on the same
features and the same harness (`proxy.evaluation.offline.evaluate_cv`): `logreg-plain` (per-model logistic
regression, fixed C = 1: the issue's "plain logistic peer"), `knn-static` (the gateway's kNN router over the static
embedding table), `static-rules`, `best-single`. Results go to docs/learned_vs_peers.json (merged, so sets can be
run one at a time, or in parallel, one process per set) and the table between the markers in docs/EVALUATION.md is
rewritten from that JSON alone (`--render-only` rewrites it without running anything).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _tables import cv_arguments, merge_row, write_between

SETS = ("routerbench", "llmrouter", "routellm", "mmlu_pro", "alpaca_eval")
PEERS = ("logreg-plain", "knn-static", "static-rules", "best-single")
ROUTERS = ("learned", *PEERS)
SEEDS = (0, 1)
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "learned_vs_peers.json"
DOC = ROOT / "docs" / "EVALUATION.md"
START, END = "<!-- learned-table:start -->", "<!-- learned-table:end -->"
KEYS = ("aiq", "max_quality", "quality_at_best_cost", "cost_to_match_best", "apgr", "cpt50", "oracle_gap_captured")

# (metric, target, higher is better, how it is shown): the targets, one or two per set.
TARGETS: dict[str, list[tuple[str, float, bool, str]]] = {
    "routerbench": [("aiq", 0.87, True, "AIQ"), ("cost_to_match_best", 0.40, False, "cost to match best single")],
    "llmrouter": [("aiq", 0.60, True, "AIQ")],
    "routellm": [("apgr", 0.70, True, "APGR"), ("cpt50", 0.25, False, "CPT(50%)")],
    "mmlu_pro": [("gain_points", 2.0, True, "max quality − best single (points)")],
    "alpaca_eval": [("gain_points", 2.0, True, "max quality − best single (points)")],
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from proxy.evaluation.offline import embed_sets, evaluate_cv
    from router_plugins.classify.static_embedding import StaticEmbedder
    from router_plugins.outcomes import load_outcomes
    from router_plugins.routers import LearnedRouter, RouterContext, default_table
    from router_plugins.routers.predictive import KnnRouter

    class PlainLogistic(LearnedRouter):
        name = "logreg-plain"
        c_grid = (1.0,)
        refine = False

    class KnnStatic(KnnRouter):
        name = "knn-static"

    class LightLearned(LearnedRouter):
        """`learned` with the light `learning.selection_rows` (docs/PERFORMANCE.md §4); measured, not the default.
        Only `--routers learned-sel3000` runs it; on RouterBench and AlpacaEval (training folds under 3,000 rows)
        it is `learned` itself."""

        name = "learned-sel3000"

        def __init__(self, registry: Any, context: Any = None) -> None:
            super().__init__(registry, context)
            self._selection_rows = 3_000

    table = default_table(with_plugins=False)
    table.register(PlainLogistic.name, PlainLogistic)
    table.register(KnnStatic.name, KnnStatic)
    table.register(LightLearned.name, LightLearned)
    static = StaticEmbedder.load_or_build(args.data_dir)
    context = RouterContext(embed=static.embed, static_embed=static.embed)
    for name in args.sets:
        data = load_outcomes(args.data / name / "train.jsonl")
        embed_sets([data], static.embed)
        for router in args.routers:
            for seed in args.seeds:
                started = time.perf_counter()
                report = evaluate_cv(router, data, args.folds, context=context, seed=seed, table=table)
                row = {k: report.get(k) for k in KEYS}
                row["best_single"] = report["best_single"]["quality"]
                row["gain_points"] = 100 * (report["max_quality"] - report["best_single"]["quality"])
                row["seconds"] = round(time.perf_counter() - started, 1)
                merge_row(args.out, (name, router, str(seed)), row)
                print(name, router, seed, json.dumps({k: _round(v) for k, v in row.items()}), flush=True)
    return json.loads(args.out.read_text())


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _mean(rows: dict[str, dict], metric: str) -> float | None:
    values = [r[metric] for r in rows.values() if r.get(metric) is not None]
    return sum(values) / len(values) if len(values) == len(rows) and values else None


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if metric == "gain_points" else f"{value:.3f}"


def _signed(value: float, metric: str) -> str:
    return f"{value:+.1f}" if metric == "gain_points" else f"{value:+.3f}"


def _status(mine: float | None, target: float, higher: bool, metric: str) -> str:
    if mine is None:
        return "missed: never reached" if metric == "cost_to_match_best" else "-"
    gap = (mine - target) if higher else (target - mine)
    if gap >= 0:
        return "met"
    return f"missed by {abs(gap):.1f} points" if metric == "gain_points" else f"missed by {abs(gap):.3f}"


def render(results: dict[str, Any]) -> str:
    lines = [
        "| set | metric | target | learned (seed 0 / 1) | strongest peer (seed 0 / 1) | learned − peer | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in SETS:
        routers = results.get(name, {})
        if "learned" not in routers:
            lines.append(f"| {name} | not run | | | | | |")
            continue
        for metric, target, higher, label in TARGETS[name]:
            learned = routers["learned"]
            peers = {p: routers[p] for p in PEERS if p in routers and _mean(routers[p], metric) is not None}
            sign = 1 if higher else -1
            peer = max(peers, key=lambda p: sign * (_mean(peers[p], metric) or 0.0)) if peers else None
            mine = _mean(learned, metric)
            cells = " / ".join(_fmt(learned[s].get(metric), metric) for s in sorted(learned))
            if peer is None:
                peer_cells, delta = "-", "-"
            else:
                runs = peers[peer]
                peer_cells = f"{peer} " + " / ".join(_fmt(runs[s].get(metric), metric) for s in sorted(runs))
                theirs = _mean(runs, metric)
                delta = "-" if mine is None or theirs is None else _signed(mine - theirs, metric)
            status = _status(mine, target, higher, metric)
            shown = f"≥ {target:g}" if higher else f"≤ {target:g}"
            lines.append(f"| {name} | {label} | {shown} | {cells} | {peer_cells} | {delta} | {status} |")
    return "\n".join(lines)


def main() -> None:
    parser = cv_arguments(__doc__.splitlines()[0], SETS, SEEDS)
    parser.add_argument("--routers", nargs="+", default=list(ROUTERS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.render_only else run(args)
    table = render(results)
    write_between(DOC, START, END, table)
    print(table)


if __name__ == "__main__":
    main()
