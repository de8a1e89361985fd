"""`autoroute feedback REQUEST_ID`: explicit feedback for a routed request, written into the config's store and synced
to disk before the command reports success (as `POST /v1/feedback` answers 200 only then).

It serves any request the store holds a decision for: the gateway's (its `x-autoroute-request-id`) and the LiteLLM
plugin's (`proxy/litellm_plugin.py`: its `x-litellm-call-id`, which is also its `x-autoroute-request-id`). A call's
decision is written a moment after it ends (the recorder's `storage.flush_interval_ms`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

FEEDBACK_SOURCE = "cli"


def register(commands: argparse._SubParsersAction) -> None:
    """Add `feedback` to the `autoroute` commands."""
    parser = commands.add_parser("feedback", help="score a routed request (of the gateway or the LiteLLM plugin)")
    parser.add_argument("request_id", help="x-autoroute-request-id (the plugin's: x-litellm-call-id)")
    grade = parser.add_mutually_exclusive_group()
    grade.add_argument("--score", type=float, help="0 (bad) to 1 (good)")
    grade.add_argument("--thumbs", choices=["up", "down"], help="up: score 1, down: score 0")
    parser.add_argument("--task", help="the task type the request really was (corrects the classifier)")
    parser.add_argument("--label", help="a short label (default thumbs_up / thumbs_down with --thumbs)")
    parser.add_argument("--comment")
    parser.add_argument("--config", default="config.yaml", help="its storage.data_dir locates the store")
    parser.add_argument("--data-dir", help="overrides storage.data_dir of the config")
    parser.set_defaults(func=_feedback)


def _feedback(args: argparse.Namespace) -> int:
    from router_plugins.datadir import DataDir
    from router_plugins.registry import load_registry
    from router_plugins.schema import ConfigError

    from .events import FeedbackRecord
    from .store import open_configured_store, redacted, store_location

    try:
        registry = load_registry(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    score, label = args.score, args.label
    if args.thumbs is not None:
        score, label = (1.0 if args.thumbs == "up" else 0.0), label or f"thumbs_{args.thumbs}"
    if score is None and args.task is None:
        return _fail("give --score (0..1) or --thumbs, and/or the request's right --task")
    if score is not None and not 0.0 <= score <= 1.0:
        return _fail("--score must be a number from 0 to 1")
    tasks = sorted(t.name for t in registry.tasks)
    if args.task is not None and args.task not in tasks:
        return _fail(f"--task must be one of the registry's task types: {', '.join(tasks)}")
    data = DataDir.resolve(registry, args.data_dir)
    try:
        store = open_configured_store(registry.storage, data, create=False)  # the config's store: SQLite or Postgres
        where = redacted(store_location(registry.storage, data))
    except ConfigError as exc:
        return _fail(str(exc))
    if store is None:
        return _fail(f"no store at {data.db}: nothing was routed with this config's data directory")
    try:
        if not store.decision_exists(args.request_id):
            return _fail(f"no request with id {args.request_id!r} was routed with {where}")
        extra = {"task": args.task} if args.task is not None else {}
        record = FeedbackRecord(args.request_id, time.time(), score, label, args.comment, FEEDBACK_SOURCE, extra)
        store.write_durable([record])
    finally:
        store.close()
    print(json.dumps({"object": "feedback", "request_id": args.request_id, "score": score, **extra,
                      "status": "recorded"}))  # fmt: skip
    return 0


def _fail(message: str) -> int:
    print(f"autoroute: {message}", file=sys.stderr)
    return 1
