"""CLI commands `autoroute router list | pin VERSION | rollback`: the learned router's and the tuned thresholds'
versions in a data directory (`proxy.versions`). A serving gateway on that data directory swaps in a moved pointer
within ~2 s; every move is recorded in the store's `learning_events`. On a store replicas share (Postgres), a move is
published to it and every replica's gateway adopts it within ~4 s (`proxy.shared_versions`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from router_plugins.datadir import DataDir

    from .events import LearningEvent
    from .store import Store


def register(commands: argparse._SubParsersAction) -> None:
    """Add `router` with `list`, `pin` and `rollback` to the `autoroute` commands."""
    from .versions import KINDS

    router = commands.add_parser("router", help="versions of the learned router and the tuned thresholds")
    actions = router.add_subparsers(dest="router_command", required=True)

    listing = actions.add_parser("list", help="every version, which is current, and its learning events")
    listing.add_argument("--json", help="write the listing here")
    pin = actions.add_parser("pin", help="make an existing version current (recorded)")
    pin.add_argument("version", help="a version shown by `autoroute router list`")
    pin.add_argument("--kind", choices=sorted(KINDS), help="needed only when both kinds have this version")
    rollback = actions.add_parser("rollback", help="make the version before the current one current (recorded)")
    rollback.add_argument("--kind", choices=sorted(KINDS), default="learned", help="(default: %(default)s)")
    for parser, func in ((listing, _list), (pin, _pin), (rollback, _rollback)):
        parser.add_argument("--config", default="config.yaml", help="its storage.data_dir holds the versions")
        parser.add_argument("--data-dir", help="overrides storage.data_dir of the config")
        parser.set_defaults(func=func)


def _open(args: argparse.Namespace, create: bool) -> tuple[DataDir, Store | None] | None:
    """The data directory and the config's store (`storage.url`, else the directory's file; None when that file is
    not there and `create` is false: listing must not create one). None, said why, when either cannot be had."""
    from router_plugins.datadir import DataDir

    from .store import configured_storage, open_configured_store

    try:
        data = DataDir.resolve(args.config, args.data_dir)
        return data, open_configured_store(configured_storage(args.config), data, create=create)
    except Exception as exc:  # noqa: BLE001 - a bad config, an unset variable, a database out of reach: said, exit 2
        print(f"autoroute: {exc}", file=sys.stderr)
        return None


def _list(args: argparse.Namespace) -> int:
    from .versions import format_versions, list_versions

    opened = _open(args, create=False)
    if opened is None:
        return 2
    data, store = opened
    try:
        listing = list_versions(data.artifacts, store)
    finally:
        if store is not None:
            store.close()
    print(f"versions in {data.artifacts} (* current)")
    print(format_versions(listing))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        content = {kind: [v.to_dict() for v in found] for kind, found in listing.items()}
        Path(args.json).write_text(json.dumps(content, indent=2))
    return 0


def _pin(args: argparse.Namespace) -> int:
    from .versions import pin

    return _move(args, lambda artifacts, store: pin(artifacts, store, args.version, args.kind))


def _rollback(args: argparse.Namespace) -> int:
    from .versions import rollback

    return _move(args, lambda artifacts, store: rollback(artifacts, store, args.kind))


def _move(args: argparse.Namespace, move: Callable[[Path, Store], LearningEvent]) -> int:
    from .versions import VersionError

    opened = _open(args, create=True)
    if opened is None:
        return 2
    data, store = opened
    assert store is not None
    try:
        event = move(data.artifacts, store)
    except VersionError as exc:
        print(f"autoroute: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"{event.router}: {event.champion_version or '(none)'} -> {event.version} ({event.kind}); a serving gateway "
          "picks it up within ~2 s" + (" (~4 s on other replicas)" if store.shares_artifacts else ""))  # fmt: skip
    return 0
