"""The `autoroute` command."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import analytics_commands, feedback_command, router_commands
from .evaluation import commands as evaluation_commands
from .replay import commands as replay_commands

if TYPE_CHECKING:
    from router_plugins.registry import Registry

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4000
FAKE_UPSTREAM_PORT = 4010
GRACEFUL_SHUTDOWN_S = 10


def _offline_defaults() -> None:
    # LiteLLM fetches its price map and Hugging Face looks for model updates unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Idle OpenMP threads otherwise spin on the CPU torch shares with the event loop: ~30× slower embeddings
    # under load here. It only takes effect when set before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _load_config(path: str | Path) -> Registry:
    """The one validation `serve` and `check-config` both run: the schema, then what only the environment can say
    (an auth key variable that is not set). Raises ConfigError."""
    from router_plugins.registry import load_registry

    from .runtime import client_keys

    registry = load_registry(path)
    client_keys(registry)
    return registry


def _serve(args: argparse.Namespace) -> int:
    from router_plugins.schema import ConfigError

    from .settings import AppSettings

    config = Path(args.config)
    try:
        registry = _load_config(config)
    except ConfigError as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    if not registry.auth.api_key_envs and not _is_loopback(args.host) and not args.insecure:
        print(f"autoroute: refusing to serve {args.host} without client keys: anyone who reaches it could spend "
              "the backends' credits. Set auth.api_key_envs in the config, bind 127.0.0.1, or pass --insecure.",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.workers < 1:
        print(f"autoroute: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    settings = AppSettings(config, Path(args.data_dir) if args.data_dir else None, watch_config=not args.no_reload,
                           shutdown_grace_s=args.graceful_timeout, answer_while_starting=True)  # fmt: skip
    options = {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "log_level": args.log_level,
        "access_log": args.access_log,
    }
    if args.workers > 1:  # a supervisor and N worker processes on one socket; each drains on SIGTERM
        from .workers import serve_workers

        return serve_workers(settings, args.workers, args.host, args.port, **options)
    from .app import create_app
    from .server import serve

    # on SIGTERM: drain (readiness 503, new chats refused, streams get the grace), flush, exit 0
    return serve(create_app(settings), host=args.host, port=args.port, **options)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _check_config(args: argparse.Namespace) -> int:
    from router_plugins.schema import ConfigError

    try:
        registry = _load_config(args.file)
    except ConfigError as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    missing = sorted(
        {m.litellm_params.api_key_env for m in registry.models if m.litellm_params.api_key_env}
        - {k for k in os.environ}
    )
    print(
        f"{args.file}: ok ({len(registry.models)} models, {len(registry.tasks)} task types, "
        f"{len(registry.routing_rules)} routing rules, registry version {registry.version})"
    )
    if missing:
        print(f"note: unset key variables (their models are left out of routing): {', '.join(missing)}")
    return 0


def _fake_upstream(args: argparse.Namespace) -> int:
    from .fake_upstream import serve

    serve(host=args.host, port=args.port)
    return 0


def _build_embeddings(args: argparse.Namespace) -> int:
    from router_plugins.classify.static_embedding import TABLE_FILE, build_static_table
    from router_plugins.datadir import DataDir

    path = build_static_table(DataDir.resolve(args.config, args.data_dir).path(TABLE_FILE))
    print(f"wrote {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import json

    from router_plugins.datadir import DataDir
    from router_plugins.schema import ConfigError

    from .training import train

    try:
        data_dir = DataDir.resolve(args.config, args.data_dir)
        report = train(Path(args.config), [Path(p) for p in args.data], data_dir, args.folds, args.force,
                       args.cv_sample)  # fmt: skip
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    import json

    from router_plugins.datadir import DataDir
    from router_plugins.schema import ConfigError

    from .training import train_classifier

    try:
        report = train_classifier(
            Path(args.config),
            [Path(p) for p in args.labelled],
            DataDir.resolve(args.config, args.data_dir),
            transformer=not args.no_transformer,
        )
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def _tune(args: argparse.Namespace) -> int:
    import json
    import time

    from router_plugins.datadir import DataDir
    from router_plugins.registry import load_registry
    from router_plugins.schema import ConfigError
    from router_plugins.thresholds import apply_thresholds, load_tuned_thresholds

    from .evaluation.ab import parse_since
    from .tuning import current_thresholds, format_report, read_events, save_thresholds, tune

    try:
        registry = load_registry(args.config)
        since = parse_since(args.since, time.time()) if args.since else None
    except (ConfigError, ValueError) as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    data_dir = DataDir.resolve(registry, args.data_dir)
    tuned = load_tuned_thresholds(data_dir.artifacts) or {}
    current = current_thresholds(apply_thresholds(registry, tuned))
    try:
        events = read_events(registry.storage, data_dir, since)
        report = tune(events, current, target_precision=args.target_precision, min_events=args.min_events,
                      truth=args.truth, since=since)  # fmt: skip
    except ValueError as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    print(format_report(report, {layer: "tuned" if layer in tuned else "config" for layer in current}))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    if args.dry_run:
        print("dry run: no thresholds written")
        return 0
    path = save_thresholds(data_dir.artifacts, report, previous=tuned)
    print(f"wrote {path} (a running gateway uses it once it reloads its runtime)")
    return 0


def _report_ab(args: argparse.Namespace) -> int:
    import json
    import time

    from router_plugins.datadir import DataDir
    from router_plugins.schema import ConfigError

    from .evaluation.ab import ab_report, format_ab_report, parse_since
    from .store import configured_storage, open_configured_store

    try:
        since = parse_since(args.since, time.time()) if args.since else None
        data = DataDir.resolve(args.config, args.data_dir)
        storage = configured_storage(args.config)
    except (ConfigError, ValueError) as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    if not 0.0 < args.alpha < 1.0:
        print(f"autoroute: --alpha must be in (0, 1), got {args.alpha}", file=sys.stderr)
        return 2
    store = open_configured_store(storage, data, create=False)  # a report must not create an empty store
    if store is None:
        print(f"autoroute: no store at {data.db}", file=sys.stderr)
        return 2
    try:
        rows = store.ab_outcomes(since)
    finally:
        store.close()
    report = ab_report(rows, metric=args.metric, alpha=args.alpha, since=since)
    print(format_ab_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoroute", description="OpenAI-compatible routing gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default="config.yaml", help="registry YAML (default: config.yaml)")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--data-dir", help="overrides storage.data_dir of the config")
    serve.add_argument("--no-reload", action="store_true", help="do not pick up config edits while serving")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action="store_true", help="log every request line")
    serve.add_argument("--insecure", action="store_true",
                       help="serve a non-loopback --host without client keys (auth.api_key_envs)")  # fmt: skip
    serve.add_argument("--graceful-timeout", type=float, default=GRACEFUL_SHUTDOWN_S, metavar="S",
                       help="on SIGTERM, seconds requests in flight get to finish (default %(default)s)")  # fmt: skip
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="processes serving the port; background learning runs in one elected worker "
                       "(default %(default)s)")  # fmt: skip
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check-config", help="validate a registry YAML")
    check.add_argument("file")
    check.set_defaults(func=_check_config)

    fake = commands.add_parser("fake-upstream", help="run the fake OpenAI-compatible upstream (tests, demos)")
    fake.add_argument("--host", default=DEFAULT_HOST)
    fake.add_argument("--port", type=int, default=FAKE_UPSTREAM_PORT)
    fake.set_defaults(func=_fake_upstream)

    evaluate = commands.add_parser("eval", help="evaluate routers and the task classifier")
    eval_commands = evaluate.add_subparsers(dest="eval_command", required=True)
    evaluation_commands.register(eval_commands)
    replay_commands.register(commands, eval_commands)

    training = commands.add_parser("train", help="train the learned router; write a new artifact version")
    training.add_argument("--config", default="config.yaml")
    training.add_argument("--data", nargs="*", default=[], help="routing-outcome JSONL files (models.json beside)")
    training.add_argument("--data-dir", help="overrides storage.data_dir of the config")
    training.add_argument("--folds", type=int, default=5, help="cross-validation folds for the printed score")
    training.add_argument("--cv-sample", type=int, default=5_000, help="prompts the printed score is computed on")
    training.add_argument(
        "--force",
        action="store_true",
        help="promote the new version without the champion/challenger gate on logged decisions",
    )
    training.set_defaults(func=_train)

    classifier = commands.add_parser(
        "train-classifier", help="fit the task classifier's text model (layer 2) and transformer layers (3-4)"
    )
    classifier.add_argument("--config", default="config.yaml")
    classifier.add_argument(
        "--labelled", nargs="*", default=[], help="JSONL of {text, task} (beside the registry's examples)"
    )
    classifier.add_argument("--data-dir", help="overrides storage.data_dir of the config")
    classifier.add_argument("--no-transformer", action="store_true", help="fit the text model only (no MiniLM)")
    classifier.set_defaults(func=_train_classifier)

    tuning = commands.add_parser("tune", help="propose classifier thresholds from logged decisions; write them")
    tuning.add_argument("--dry-run", action="store_true", help="show the table, write nothing")
    tuning.add_argument("--config", default="config.yaml")
    tuning.add_argument("--data-dir", help="overrides storage.data_dir of the config")
    tuning.add_argument("--since", help="only decisions from then on: Unix seconds, ISO date/time (UTC) or 24h, 7d")
    tuning.add_argument("--target-precision", type=float, default=0.9, help="(default: %(default)s)")
    tuning.add_argument("--min-events", type=int, default=30, help="judged events a layer needs (default: %(default)s)")
    tuning.add_argument(
        "--truth",
        choices=["feedback", "any"],
        default="any",
        help="feedback: only tasks named by feedback; any: also the task a later layer accepted",
    )
    tuning.add_argument("--json", help="write the full report here")
    tuning.set_defaults(func=_tune)

    report = commands.add_parser("report", help="reports over the logged decisions")
    reports = report.add_subparsers(dest="report_command")  # none: the analysis report (`--html`)
    ab = reports.add_parser("ab", help="A/B test: control (static rules) vs treatment (learned routers)")
    ab.add_argument("--since", help="only decisions from then on: Unix seconds, ISO date/time (UTC) or 24h, 7d, 30m")
    ab.add_argument("--json", help="write the full report here")
    ab.add_argument("--config", default="config.yaml", help="its storage.data_dir locates the store")
    ab.add_argument("--data-dir", help="overrides storage.data_dir of the config")
    ab.add_argument("--metric", choices=["quality", "success"], default="quality",
                    help="primary metric of the sequential stopping rule (default: %(default)s)")  # fmt: skip
    ab.add_argument("--alpha", type=float, default=0.05, help="significance level (default: %(default)s)")
    ab.set_defaults(func=_report_ab)
    analytics_commands.register(commands, report)

    router_commands.register(commands)
    feedback_command.register(commands)
    build = commands.add_parser("build-embeddings", help="distil the static embedding table now (else at first serve)")
    build.add_argument("--config", default="config.yaml", help="its storage.data_dir receives the table")
    build.add_argument("--data-dir", help="overrides storage.data_dir of the config")
    build.set_defaults(func=_build_embeddings)
    return parser


SERVERS = frozenset({"serve", "fake-upstream", "replay-upstream"})
"""Commands that run until stopped: they log, and show no progress of their own long work."""


def main(argv: Sequence[str] | None = None) -> int:
    _offline_defaults()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command in SERVERS:
        return int(args.func(args))
    from router_plugins.progress import shown

    with shown():  # a bar on a terminal, a log line every few seconds otherwise
        return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
