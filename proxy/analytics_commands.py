"""CLI commands over `proxy.analytics`, both reading the store of the config's data directory:
`autoroute report --html OUT [--png-dir DIR] [--json OUT] [--since 24h]` (the analysis report) and
`autoroute top [-w HOURS] [--live]` (the terminal dashboard)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router_plugins.datadir import DataDir

    from .analytics import AnalyticsStore, FeatureImportance
    from .store import Store

DEFAULT_SINCE = "24h"
DEFAULT_TOP_HOURS = 1.0
LIVE_INTERVAL_S = 5.0


def register(commands: argparse._SubParsersAction, report: argparse.ArgumentParser) -> None:
    """Give `autoroute report` (without a subcommand) the analysis report's options, and add `autoroute top`."""
    report.add_argument("--html", metavar="OUT", help="write the analysis report here (one self-contained file)")
    report.add_argument("--png-dir", metavar="DIR", help="also write each figure here as a PNG")
    report.add_argument("--json", metavar="OUT", help="write every analysis as JSON (what the dashboard serves)")
    since_help = "window start: Unix seconds, ISO date/time (UTC) or 24h, 7d, 30m (default %(default)s)"
    report.add_argument("--since", default=DEFAULT_SINCE, help=since_help)
    report.add_argument("--config", default="config.yaml", help="its storage.data_dir locates the store")
    report.add_argument("--data-dir", help="overrides storage.data_dir of the config")
    report.set_defaults(func=_report)

    top = commands.add_parser("top", help="terminal dashboard: classifier cascade, layers, models over a window")
    top.add_argument("-w", "--window", type=float, default=DEFAULT_TOP_HOURS, metavar="HOURS",
                     help="the last HOURS (default %(default)s)")  # fmt: skip
    top.add_argument("--live", action="store_true", help=f"redraw every {LIVE_INTERVAL_S:g} s until Ctrl-C")
    top.add_argument("--interval", type=float, default=LIVE_INTERVAL_S, metavar="S", help="seconds between redraws")
    top.add_argument("--iterations", type=int, metavar="N", help="with --live, stop after N frames")
    top.add_argument("--config", default="config.yaml", help="its storage.data_dir locates the store")
    top.add_argument("--data-dir", help="overrides storage.data_dir of the config")
    top.set_defaults(func=_top)


def _fail(message: str) -> int:
    print(f"autoroute: {message}", file=sys.stderr)
    return 2


def _data_dir(args: argparse.Namespace) -> DataDir:
    from router_plugins.datadir import DataDir

    return DataDir.resolve(args.config, args.data_dir)


def _existing_store(args: argparse.Namespace) -> tuple[DataDir, Store] | str:
    """The data directory and the config's store (`storage.url`, else the data directory's file); or why not (a bad
    config, or no store yet: opening one would create it)."""
    from router_plugins.schema import ConfigError

    from .store import configured_storage, open_configured_store

    try:
        data_dir = _data_dir(args)
        store = open_configured_store(configured_storage(args.config), data_dir, create=False)
    except (ConfigError, ValueError) as exc:
        return str(exc)
    return (data_dir, store) if store is not None else f"no store at {data_dir.db}"


def _importance(args: argparse.Namespace, data_dir: DataDir, store: AnalyticsStore,
                request_ids: set[str]) -> FeatureImportance:  # fmt: skip
    from router_plugins.registry import load_registry
    from router_plugins.schema import ConfigError

    from .analytics import feature_importance, load_learned_router

    try:
        registry = load_registry(args.config)
    except (ConfigError, OSError) as exc:
        return feature_importance(None, [], f"the registry is needed to load the learned router: {exc}")
    router, status = load_learned_router(registry, data_dir)
    outcomes = [row for row in store.labelled_outcomes() if row["request_id"] in request_ids] if router else []
    return feature_importance(router, outcomes, status)


def _report(args: argparse.Namespace) -> int:

    from .analytics import Window, analyze, load_window
    from .analytics.html import write_report
    from .analytics.overview import MAX_LEARNING_EVENTS
    from .evaluation.ab import parse_since

    if not (args.html or args.png_dir or args.json):
        return _fail("report: give --html OUT (and/or --png-dir DIR, --json OUT), or a report name: ab")
    try:
        now = time.time()
        window = Window(parse_since(args.since, now), now)
    except ValueError as exc:
        return _fail(str(exc))
    opened = _existing_store(args)
    if isinstance(opened, str):
        return _fail(opened)
    data_dir, store = opened
    try:
        data = load_window(store, window)
        importance = _importance(args, data_dir, store, {r.request_id for r in data.requests})
        analysis = analyze(data, store.ab_outcomes(window.since), store.learning_events(MAX_LEARNING_EVENTS),
                           importance)  # fmt: skip
    finally:
        store.close()
    html, png_dir = (Path(p) if p else None for p in (args.html, args.png_dir))
    written = write_report(analysis, html, png_dir)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(analysis.to_dict(), indent=2))
        written.append(Path(args.json))
    print(f"{analysis.totals.requests} requests in the window; wrote " + ", ".join(str(p) for p in written))
    return 0


def _top(args: argparse.Namespace) -> int:

    from .analytics import Window, load_window
    from .analytics.top import render_top, run_top

    if args.window <= 0 or args.interval <= 0 or (args.iterations is not None and args.iterations < 1):
        return _fail("top: -w, --interval and --iterations must be positive")
    opened = _existing_store(args)
    if isinstance(opened, str):
        return _fail(opened)
    _, store = opened

    def frame() -> str:
        return render_top(load_window(store, Window.last(args.window * 3600)), args.window)

    try:
        return run_top(frame, sys.stdout, live=args.live, interval_s=args.interval, iterations=args.iterations)
    finally:
        store.close()
