"""CLI commands of the replay tools: `autoroute replay-upstream` and `autoroute eval online`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

DEFAULT_REPLAY_PORT = 4020
DEFAULT_PROXY = "http://127.0.0.1:4000"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _replay_upstream(args: argparse.Namespace) -> int:
    from .upstream import serve

    try:
        serve(args.data, host=args.host, port=args.port)
    except (OSError, ValueError) as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    return 0


def _online(args: argparse.Namespace) -> int:
    from .dataset import read_records
    from .driver import OnlineSettings, drive, settings_json
    from .report import format_report, plot_report

    settings = OnlineSettings(
        proxy=args.proxy, data=Path(args.data), events=args.events, concurrency=args.concurrency,
        window=args.window, model=args.model, api_key=args.api_key, timeout_s=args.timeout,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        records = read_records(settings.data, settings.events)
    except (OSError, ValueError) as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    print(f"read {len(records)} records from {settings.data} in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    report = asyncio.run(drive(settings, records))
    print(format_report(report))
    if args.json:
        payload = {"settings": settings_json(settings), **report.to_json()}
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot_report(report, args.plot, title=f"online replay: {settings.data} via {settings.model}")
        print(f"wrote {args.plot}", file=sys.stderr)
    return 1 if report.overall.errors == report.overall.events else 0


def register(commands: argparse._SubParsersAction, eval_commands: argparse._SubParsersAction) -> None:
    """Add `replay-upstream` to the top-level commands and `online` to `autoroute eval`."""
    upstream = commands.add_parser(
        "replay-upstream", help="serve a routing-outcome set's recorded answers as an OpenAI-compatible upstream"
    )
    upstream.add_argument("--data", required=True, help="outcome file (jsonl, with models.json beside it)")
    upstream.add_argument("--host", default="127.0.0.1")
    upstream.add_argument("--port", type=int, default=DEFAULT_REPLAY_PORT)
    upstream.set_defaults(func=_replay_upstream)

    online = eval_commands.add_parser(
        "online", help="drive a running gateway over a set's prompts, posting each recorded quality as feedback"
    )
    online.add_argument("--proxy", default=DEFAULT_PROXY, help=f"the gateway (default: {DEFAULT_PROXY})")
    online.add_argument("--data", required=True, help="outcome file (jsonl, with models.json beside it)")
    online.add_argument("--events", type=_positive_int, help="send the first N records (default: all)")
    online.add_argument("--concurrency", type=_positive_int, default=4, help="calls in flight (default: 4)")
    online.add_argument("--window", type=_positive_int, default=100, help="events per report window (default: 100)")
    online.add_argument("--model", default="auto", help="model to request (default: auto; e.g. auto:cost)")
    online.add_argument("--api-key", default="unused", help="the gateway's client key, when auth is on")
    online.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds per call (default: 60)")
    online.add_argument("--json", metavar="OUT", help="write the report as JSON")
    online.add_argument("--plot", metavar="OUT.png", help="plot quality and cost against events")
    online.set_defaults(func=_online)
