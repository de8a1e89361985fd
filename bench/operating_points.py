"""Where each preference of the learned router lands, with its cost weight calibrated inside each training split.

    OMP_NUM_THREADS=1 LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 \\
      python bench/operating_points.py --data ../shared/data/routing --data-dir autoroute-data \\
        --json docs/operating_points.json

On the three sets that record costs (routerbench, llmrouter, routellm), 5-fold CV for fold seeds 0 and 1
(`proxy.evaluation.offline.evaluate_cv`, the data sets' own task labels, as bench/learned_table.py). Each outer
fold's router calibrates `balanced` (the knee) and `cost` (the cheapest point reaching the best single model's
quality) on its own inner out-of-fold predictions
(router_plugins/routers/operating.py); every test prompt is routed with the weights of the router that never saw it,
and the choices are pooled. The JSON is merged (sets can be run one at a time); the table between the markers in
docs/EVALUATION.md is written from the JSON alone (`--render-only`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _tables import cv_arguments, merge_row, write_between

SETS = ("routerbench", "llmrouter", "routellm")
SEEDS = (0, 1)
SHOWN = ("quality", "balanced", "cost")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "operating_points.json"
DOC = ROOT / "docs" / "EVALUATION.md"
START, END = "<!-- operating-points:start -->", "<!-- operating-points:end -->"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from proxy.evaluation.offline import embed_sets, evaluate_cv
    from router_plugins.classify.static_embedding import StaticEmbedder
    from router_plugins.outcomes import load_outcomes
    from router_plugins.routers import RouterContext, default_table

    table = default_table(with_plugins=False)
    static = StaticEmbedder.load_or_build(args.data_dir)
    context = RouterContext(embed=static.embed, static_embed=static.embed)
    for name in args.sets:
        data = load_outcomes(args.data / name / "train.jsonl")
        embed_sets([data], static.embed)
        for seed in args.seeds:
            started = time.perf_counter()
            report = evaluate_cv("learned", data, args.folds, context=context, seed=seed, table=table)
            row = {
                "folds": args.folds,
                "n": report["n_test"],
                "best_single": report["best_single"],
                "max_quality": report["max_quality"],
                "aiq": report["aiq"],
                **report["operating_points"],
                "seconds": round(time.perf_counter() - started, 1),
            }
            merge_row(args.json, (name, str(seed)), row)  # runs of different sets may share the file
            landed = {p: (round(v["quality"], 4), f"{v['cost']:.3g}") for p, v in row["preferences"].items()}
            print(name, seed, json.dumps(landed), flush=True)
    return json.loads(args.json.read_text())


def _per_seed(runs: dict[str, Any], cell: Any) -> str:
    return " / ".join(cell(runs[s]) for s in sorted(runs))


def _weights(runs: dict[str, Any], preference: str) -> str:
    values = sorted(w for r in runs.values() for w in r["preferences"][preference]["cost_weights"])
    return f"{values[0]:.3g}" if values[0] == values[-1] else f"{values[0]:.3g}–{values[-1]:.3g}"


def _status(runs: dict[str, Any], preference: str) -> str:
    """Per seed: where the preference landed against the test curve's knee and against the best single model."""
    if preference == "quality":
        return "registry weight (not calibrated)"
    parts = []
    for r in (runs[s] for s in sorted(runs)):
        p, gap, knee = r["preferences"][preference], r["from_knee"][preference], r["test_knee"]
        best = (
            "reaches the best single"
            if p["reaches_best"]
            else (f"below the best single by {-100 * p['quality_minus_best']:.1f} points")
        )
        parts.append(f"{best}; {gap['quality_points']:+.1f} points and {gap['cost_ratio']:.2f}× the cost of the test "
                     f"knee ({knee['quality']:.3f} at {knee['cost']:.3g}), above the chord {gap['above_chord']:.3f} "
                     f"vs the knee's {knee['above_chord']:.3f}")  # fmt: skip
    return "; ".join(parts)


def render(results: dict[str, Any]) -> str:
    lines = [
        "| set | preference | cost weight (all folds) | quality (seed 0 / 1) | $ per request (seed 0 / 1) | share of "
        "best single's cost | quality − best single (points) | where it lands |",
        "|---|---|---|---|---|---|---|---|",
    ]
    inverted = []
    for name in SETS:
        runs = results.get(name)
        if not runs:
            lines.append(f"| {name} | not run | | | | | | |")
            continue
        best = runs[sorted(runs)[0]]["best_single"]["model"]
        quality = _per_seed(runs, lambda r: f"{r['best_single']['quality']:.3f}")
        cost = _per_seed(runs, lambda r: f"{r['best_single']['cost']:.3g}")
        lines.append(
            f"| {name} | best single ({best}, chosen on the training folds) | - | {quality} | {cost} | 100% | 0 | |"
        )
        for preference in SHOWN:
            q = _per_seed(runs, lambda r, p=preference: f"{r['preferences'][p]['quality']:.3f}")
            c = _per_seed(runs, lambda r, p=preference: f"{r['preferences'][p]['cost']:.3g}")
            share = _per_seed(runs, lambda r, p=preference: f"{100 * r['preferences'][p]['cost_share_of_best']:.0f}%")
            gain = _per_seed(runs, lambda r, p=preference: f"{100 * r['preferences'][p]['quality_minus_best']:+.1f}")
            lines.append(f"| {name} | `{preference}` | {_weights(runs, preference)} | {q} | {c} | {share} | {gain} | "
                         f"{_status(runs, preference)} |")  # fmt: skip
        if any(r["preferences"]["cost"]["cost"] > r["preferences"]["balanced"]["cost"] for r in runs.values()):
            inverted.append(name)
    lines.append("")
    if inverted:
        lines.append(f"`cost` routes dearer than `balanced` on: {', '.join(inverted)} (the knee lies below the best "
                     "single model's quality there).")  # fmt: skip
    else:
        lines.append("`cost` never routes dearer than `balanced` here.")
    return "\n".join(lines)


def main() -> None:
    parser = cv_arguments(__doc__.splitlines()[0], SETS, SEEDS)
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args()
    results = json.loads(args.json.read_text()) if args.render_only else run(args)
    table = render(results)
    write_between(DOC, START, END, table)
    print(table)


if __name__ == "__main__":
    main()
