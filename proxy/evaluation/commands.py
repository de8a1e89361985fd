"""CLI commands `autoroute eval offline` and `autoroute eval tasks`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router_plugins.datadir import DataDir


def register(eval_commands: argparse._SubParsersAction) -> None:
    """Add `offline` and `tasks` to `autoroute eval`."""
    offline = eval_commands.add_parser("offline", help="fit a router on routing outcomes and score it on others")
    offline.add_argument("--train", required=True, help="routing-outcome JSONL to fit on")
    split = offline.add_mutually_exclusive_group(required=True)
    split.add_argument("--test", help="routing-outcome JSONL to score on")
    split.add_argument("--folds", type=int, help="k-fold cross-validation on --train instead of a test file")
    offline.add_argument(
        "--router", required=True, help="router name (random, cheapest, best-single, static-rules, knn, ...)"
    )
    offline.add_argument("--models", help="models.json (default: beside --train)")
    offline.add_argument("--json", help="write the full report here")
    offline.add_argument("--plot", help="write the quality-cost plot here (PNG)")
    offline.add_argument("--cache-dir", help="embedding cache (default: the data dir's cache)")
    offline.add_argument("--seed", type=int, default=0)
    offline.add_argument("--data-dir", help="the static table and classifier's data dir (default: the config's)")
    offline.add_argument("--tasks", choices=["classifier", "dataset"], default="classifier",
                         help="each prompt's task: the one the gateway's classifier assigns (what users get) or the "
                              "data set's own label (default: %(default)s)")  # fmt: skip
    offline.add_argument("--config", default="config.yaml",
                         help="registry whose task classifier labels the prompts with --tasks classifier")  # fmt: skip
    offline.set_defaults(func=_offline)

    tasks = eval_commands.add_parser("tasks", help="score the task classifier on labelled prompts")
    tasks.add_argument("--test", required=True, help="JSONL of {text, task, accept}")
    tasks.add_argument("--config", default="config.yaml", help="registry whose task types and cascade to use")
    tasks.add_argument("--data-dir", help="the gateway's data directory (default: the config's storage.data_dir)")
    tasks.add_argument("--json", help="write the full report here")
    tasks.set_defaults(func=_tasks)


def _data_dir(args: argparse.Namespace) -> DataDir:
    """`--data-dir`, else the config's (when it loads: offline data sets need no config), else the default one."""
    from router_plugins.datadir import DataDir
    from router_plugins.registry import StorageSettings
    from router_plugins.schema import ConfigError

    try:
        return DataDir.resolve(args.config, args.data_dir)
    except (ConfigError, FileNotFoundError, OSError):
        return DataDir(Path(StorageSettings().data_dir))


def _offline(args: argparse.Namespace) -> int:
    from router_plugins.classify import StaticEmbedder
    from router_plugins.embeddings import EmbeddingCache
    from router_plugins.outcomes import load_outcomes
    from router_plugins.routers import RouterContext, default_table

    from .offline import embed_sets, evaluate_cv, evaluate_split, registry_for, with_classifier_tasks

    started = time.perf_counter()
    train = load_outcomes(args.train, args.models)
    test = load_outcomes(args.test, args.models) if args.test else None
    table = default_table()
    if args.router not in table.names():
        print(f"autoroute: no router named {args.router!r}; known: {', '.join(table.names())}", file=sys.stderr)
        return 2
    data_dir = _data_dir(args)
    cache = EmbeddingCache(Path(args.cache_dir) if args.cache_dir else data_dir.cache)
    task_report: dict[str, Any] = {"tasks": args.tasks}
    if args.tasks == "classifier":
        from router_plugins.schema import ConfigError

        from .tasks import served_classifier

        try:
            classifier = served_classifier(Path(args.config), data_dir)
        except (ConfigError, FileNotFoundError) as exc:
            print(f"autoroute: {exc}", file=sys.stderr)
            return 2
        sets, task_report["task_agreement"] = with_classifier_tasks(
            [train] + ([test] if test else []), classifier, embed=cache.embed
        )
        train, test = sets[0], (sets[1] if test else None)
    static = StaticEmbedder.load_or_build(data_dir)
    context = RouterContext(embed=cache.embed, static_embed=static.embed, seed=args.seed)
    if getattr(table.create(args.router, registry_for(train), context), "needs_embeddings", False):
        embed_sets([train] + ([test] if test else []), cache.embed)
    try:
        if test is not None:
            report = evaluate_split(args.router, train, test, context=context)
        else:
            report = evaluate_cv(args.router, train, args.folds, context=context, seed=args.seed)
    except ValueError as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    report.update(task_report)
    report["train"] = str(args.train)
    report["test"] = str(args.test) if args.test else f"{args.folds}-fold cross-validation of train"
    report["seconds"] = round(time.perf_counter() - started, 2)
    print(format_offline(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.plot:
        from .plot import plot_offline

        plot_offline(report, Path(args.plot))
    return 0


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 0.01 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def format_offline(report: dict[str, Any]) -> str:
    best, oracle = report["best_single"], report["oracle"]
    lines = [
        f"router {report['router']} on {report['n_test']} test prompts ({report.get('test', '')})",
        f"  best single   {best['model']}: quality {_fmt(best['quality'])}, cost {_fmt(best['cost'])}",
        f"  oracle        quality {_fmt(oracle['quality'])}, cost {_fmt(oracle['cost'])}",
        f"  max quality   {_fmt(report['max_quality'])}",
        f"  AIQ           {_fmt(report['aiq'])}",
        f"  quality at best single's cost   {_fmt(report['quality_at_best_cost'])}",
        f"  cost to match best single       {_fmt(report['cost_to_match_best'])} (share of its cost)",
        f"  oracle gap captured             {_fmt(report['oracle_gap_captured'])}",
    ]
    if report.get("tasks"):
        agreement = report.get("task_agreement")
        source = "the gateway's classifier" if report["tasks"] == "classifier" else "the data set's labels"
        if agreement and agreement["share"] is not None:
            source += f" (agrees with the data set's on {_fmt(agreement['share'], 3)} of {agreement['labelled']})"
        lines.append(f"  tasks from    {source}")
    if "apgr" in report:
        lines.append(
            f"  APGR {_fmt(report['apgr'])}  CPT(50%) {_fmt(report['cpt50'])}  CPT(80%) {_fmt(report['cpt80'])}"
            f"  (share of calls to {report['strong_model']})"
        )
    if report.get("calibration"):
        lines.append(f"  Brier score   {_fmt(report['calibration']['brier'])} (reliability curve in the JSON)")
    if report.get("feature_importance"):
        ranked = sorted(report["feature_importance"].items(), key=lambda kv: -kv[1])
        lines.append(
            "  feature importance (Brier increase when shuffled): " + ", ".join(f"{k} {v:.4f}" for k, v in ranked)
        )
    if report.get("operating_points"):
        from .operating import format_operating

        lines.extend(format_operating(report["operating_points"]))
    for task, sub in report.get("per_task", {}).items():
        lines.append(
            f"  task {task:<14} n={sub['n_test']:<5} best single {_fmt(sub['best_single']['quality'])}"
            f"  max {_fmt(sub['max_quality'])}  AIQ {_fmt(sub['aiq'])}"
        )
    return "\n".join(lines)


def _tasks(args: argparse.Namespace) -> int:
    from router_plugins.datadir import DataDir

    from .tasks import evaluate_tasks, format_tasks

    report = evaluate_tasks(Path(args.test), Path(args.config), DataDir.resolve(args.config, args.data_dir))
    print(format_tasks(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
