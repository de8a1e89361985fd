"""Cross-validated scores of routers on the routing-outcome sets; writes autoroute-data/baselines.json and a table.

    python bench/baselines.py --data ../shared/data/routing --routers random cheapest best-single static-rules knn

Each router is scored with 5-fold cross-validation on each set's train file (pooled out-of-fold predictions).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SETS = ("routerbench", "llmrouter", "routellm", "mmlu_pro", "alpaca_eval")


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from proxy.evaluation.offline import embed_sets, evaluate_cv
    from router_plugins.embeddings import EmbeddingCache
    from router_plugins.outcomes import load_outcomes
    from router_plugins.routers import RouterContext

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--routers", nargs="+", default=["random", "cheapest", "best-single", "static-rules", "knn"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=Path("autoroute-data/cache"))
    parser.add_argument("--out", type=Path, default=Path("autoroute-data/baselines.json"))
    args = parser.parse_args()

    cache = EmbeddingCache(args.cache_dir)
    results: dict[str, dict[str, dict]] = {}
    if args.out.exists():
        results = json.loads(args.out.read_text())
    for name in args.sets:
        data = load_outcomes(args.data / name / "train.jsonl")
        embed_sets([data], cache.embed)
        for router in args.routers:
            started = time.perf_counter()
            try:
                report = evaluate_cv(router, data, args.folds, context=RouterContext(embed=cache.embed))
            except ValueError as exc:  # a router that cannot apply to this set (cheapest without costs)
                print(f"{name:<12} {router:<14} n/a: {exc}", flush=True)
                results.setdefault(name, {}).pop(router, None)
                continue
            report.pop("curve")
            report["seconds"] = round(time.perf_counter() - started, 2)
            results.setdefault(name, {})[router] = report
            print(f"{name:<12} {router:<14} {summary(report)}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))


def summary(report: dict) -> str:
    keys = ("max_quality", "aiq", "quality_at_best_cost", "cost_to_match_best", "apgr", "cpt50")
    return "  ".join(f"{k}={report[k]:.4f}" if isinstance(report.get(k), float) else f"{k}=-" for k in keys if k in report)


def markdown(results: dict[str, dict[str, dict]]) -> str:
    rows = ["| set | router | max quality | best single | oracle | AIQ | quality at best's cost | cost to match best | APGR | CPT50 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, routers in results.items():
        for router, r in routers.items():
            cells = [r["max_quality"], r["best_single"]["quality"], r["oracle"]["quality"], r["aiq"],
                     r["quality_at_best_cost"], r["cost_to_match_best"], r.get("apgr"), r.get("cpt50")]
            rows.append(f"| {name} | {router} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
