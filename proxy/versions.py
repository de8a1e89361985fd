"""Versions of the learned artifacts you can operate: which exist, which is current, what happened to each, and
moving the current pointer (pin, rollback), by hand or when a promoted version does worse live.

Two kinds of versioned artifact live in a data directory's `artifacts/`, each with a pointer to its current version
(`router_plugins.datadir`): the learned router (`learned-<version>.npz`, `learned-current.json`) and the tuned
classifier thresholds (`thresholds-<version>.json`, `thresholds-current.json`). A serving gateway swaps in a changed
pointer within ~2 s. Every move of a pointer made here is a `learning_events` row.

Versions are ordered by name: the tools that write them name them by UTC time first (`20250101120000-n300`), so
"the version before" is the one written before.

On a store that replicas share (Postgres), every move made here is published to it first (`publish`): the other
replicas, each with its own data directory, fetch the version and move their pointer (`proxy.shared_versions`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from router_plugins.datadir import read_pointer, write_pointer
from router_plugins.routers.learned import POINTER_FILE as LEARNED_POINTER
from router_plugins.thresholds import POINTER_FILE as THRESHOLDS_POINTER

from .evaluation.stats import CONTROL, DEFAULT_ALPHA, TREATMENT, Sequential, msprt
from .events import LearningEvent
from .store_api import ArtifactStore

LEARNED = "learned"
THRESHOLDS = "thresholds"

# `learning_events.kind`: what happened to a version.
PROMOTION = "promotion"
"""The trainer's gate (or `autoroute train`'s) found the challenger better on enough evidence: it became current."""
FORCED = "forced-promotion"
"""`autoroute train --force`: current without the gate."""
REJECTION = "rejection"
"""The gate kept the champion; the reason and the evidence are in the row."""
PIN = "pin"
ROLLBACK = "rollback"
"""`autoroute router pin` / `rollback`: an operator moved the pointer."""
AUTO_ROLLBACK = "auto-rollback"
"""The trainer moved the pointer back: the promoted version did worse live than the one it replaced."""
POINTER_MOVES = frozenset({PROMOTION, FORCED, PIN, ROLLBACK, AUTO_ROLLBACK})


@dataclass(frozen=True)
class Kind:
    """One kind of versioned artifact: `<prefix><version><suffix>` files beside a pointer."""

    name: str
    prefix: str
    suffix: str
    pointer: str

    def version_of(self, path: Path) -> str:
        return path.name.removeprefix(self.prefix).removesuffix(self.suffix)

    def path(self, artifacts: Path, version: str) -> Path:
        return artifacts / f"{self.prefix}{version}{self.suffix}"


KINDS = {
    LEARNED: Kind(LEARNED, "learned-", ".npz", LEARNED_POINTER),
    THRESHOLDS: Kind(THRESHOLDS, "thresholds-", ".json", THRESHOLDS_POINTER),
}


class VersionError(ValueError):
    """A pin or rollback that cannot be done (no such version, nothing before the current one)."""


class EventStore(Protocol):
    def write_batch(self, records: Sequence[LearningEvent]) -> None: ...

    def learning_events(self, limit: int = 1000) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Version:
    kind: str
    version: str
    path: Path
    current: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    """Its `learning_events` rows (as subject or as the champion it replaced), newest first."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "file": self.path.name, "current": self.current,
                "events": self.events}  # fmt: skip


def versions(artifacts: Path, kind: str) -> list[str]:
    """The versions of `kind` in `artifacts`, oldest first (the pointer itself is not one)."""
    spec = KINDS[kind]
    paths = artifacts.glob(f"{spec.prefix}*{spec.suffix}") if artifacts.is_dir() else []
    return sorted(spec.version_of(p) for p in paths if p.name != spec.pointer and p.is_file())


def current_version(artifacts: Path, kind: str) -> str | None:
    """The version the pointer of `kind` names, when it names a file that is there."""
    path = read_pointer(artifacts, KINDS[kind].pointer)
    return KINDS[kind].version_of(path) if path is not None else None


def list_versions(artifacts: Path, store: EventStore | None) -> dict[str, list[Version]]:
    """Per kind, every version (oldest first) with whether it is current and the events that name it."""
    events = store.learning_events(limit=100_000) if store is not None else []
    out: dict[str, list[Version]] = {}
    for kind in KINDS:
        current = current_version(artifacts, kind)
        mine = [e for e in events if e.get("router") == kind]
        out[kind] = [
            Version(kind, v, KINDS[kind].path(artifacts, v), v == current,
                    [e for e in mine if v in (e.get("version"), e.get("champion_version"))])
            for v in versions(artifacts, kind)
        ]  # fmt: skip
    return out


def publish(store: object, artifacts: Path, kind: str, version: str) -> bool:
    """Make `version` of `kind` (a file in `artifacts`) the current one of every replica, when `store` is shared
    (a no-op otherwise); returns whether it was published."""
    if not isinstance(store, ArtifactStore) or not store.shares_artifacts:
        return False
    store.publish_artifact(kind, version, KINDS[kind].path(artifacts, version).read_bytes())
    return True


def move_pointer(
    artifacts: Path, store: EventStore | None, kind: str, version: str, event_kind: str, reason: str,
    scores: dict[str, Any] | None = None,
) -> LearningEvent:  # fmt: skip
    """Point `kind`'s pointer at `version` (an existing artifact) and record the move as a `learning_events` row;
    on a shared store, every replica's pointer (published first: a move the store refused is not made here)."""
    spec = KINDS[kind]
    path = spec.path(artifacts, version)
    if not path.is_file():
        raise VersionError(f"no {kind} version {version!r} in {artifacts}")
    previous = current_version(artifacts, kind)
    publish(store, artifacts, kind, version)
    write_pointer(artifacts, spec.pointer, path, version)
    event = LearningEvent(time.time(), event_kind, kind, version, previous, scores or {}, reason)
    if store is not None:
        store.write_batch([event])
    return event


def pin(artifacts: Path, store: EventStore | None, version: str, kind: str | None = None) -> LearningEvent:
    """Make `version` current. Without `kind`, the kind that has a version of that name (both: say which)."""
    kinds = [kind] if kind is not None else [k for k in KINDS if version in versions(artifacts, k)]
    if not kinds:
        raise VersionError(f"no version {version!r} in {artifacts} (see `autoroute router list`)")
    if len(kinds) > 1:
        raise VersionError(f"both a learned router and thresholds have version {version!r}: name the kind")
    return move_pointer(artifacts, store, kinds[0], version, PIN, "pinned by `autoroute router pin`")


def rollback(artifacts: Path, store: EventStore | None, kind: str = LEARNED) -> LearningEvent:
    """Make the version before the current one current."""
    names = versions(artifacts, kind)
    current = current_version(artifacts, kind)
    if current is None:
        raise VersionError(f"no current {kind} version to roll back from")
    older = [v for v in names if v < current]
    if not older:
        raise VersionError(f"no {kind} version before {current}")
    reason = f"rolled back from {current} by `autoroute router rollback`"
    return move_pointer(artifacts, store, kind, older[-1], ROLLBACK, reason)


def format_versions(listing: dict[str, list[Version]]) -> str:
    """A readable listing: per kind, each version (current marked) and its events."""
    lines = []
    for kind, found in listing.items():
        lines.append(f"{kind}: {len(found)} version(s)" + ("" if found else " (none)"))
        for v in found:
            lines.append(f"  {'*' if v.current else ' '} {v.version}" + ("  (current)" if v.current else ""))
            for e in v.events:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["created_at"]))
                role = "" if e.get("version") == v.version else f" of {e.get('version')} while this one was current"
                lines.append(f"      {when} {e['kind']}{role}: {e.get('reason') or ''}")
    return "\n".join(lines)


# -- rolled back when worse live ----------------------------------------------------------------------------------

LIVE_ROWS = 5000
"""Live decisions compared per side at most: the replaced version's newest before the promotion, the promoted
version's first after it (the always-valid test may be looked at after every one of them)."""


class LiveStore(EventStore, Protocol):
    def logged_decisions(self, limit: int = 100_000) -> list[dict[str, Any]]: ...

    def decision(self, request_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class LiveComparison:
    """The promoted learned-router version (treatment) against the one it replaced (control), on live feedback."""

    promoted: str
    replaced: str
    promoted_at: float
    n: dict[str, int]
    mean_quality: dict[str, float | None]
    sequential: Sequential

    def scores(self) -> dict[str, Any]:
        return {"n": self.n, "mean_quality": self.mean_quality, "promoted_at": self.promoted_at,
                "sequential": asdict(self.sequential)}  # fmt: skip


def live_comparison(store: LiveStore, artifacts: Path, alpha: float = DEFAULT_ALPHA) -> LiveComparison | None:
    """When the last move of the learned router's pointer was a promotion that replaced another learned version
    (still on disk) and the pointer still names it: the two versions' live decisions (router `learned`, with
    feedback, told apart by the decision's router_version) compared by the A/B report's mixture SPRT on quality.
    None otherwise: an operator's pin or rollback stands, and a first promotion has no learned version to go back to.
    """
    moves = (e for e in store.learning_events(10_000) if e.get("router") == LEARNED and e["kind"] in POINTER_MOVES)
    latest = next(moves, None)
    if latest is None or latest["kind"] not in (PROMOTION, FORCED):
        return None
    promoted, replaced, at = str(latest["version"]), latest.get("champion_version"), float(latest["created_at"])
    if current_version(artifacts, LEARNED) != promoted or not replaced or replaced not in versions(artifacts, LEARNED):
        return None
    rows = [r for r in store.logged_decisions() if r.get("router_name") == LEARNED]
    nearby = [r for r in rows if r["created_at"] < at][-LIVE_ROWS:] + [r for r in rows if r["created_at"] >= at][
        :LIVE_ROWS
    ]
    arm_of = {replaced: CONTROL, promoted: TREATMENT}
    arms, values = [], []
    for row in nearby:
        decision = store.decision(row["request_id"])
        arm = arm_of.get(str(decision.get("router_version"))) if decision is not None else None
        if arm is not None:
            arms.append(arm)
            values.append(float(row["quality"]))
    by_arm = {arm: [v for a, v in zip(arms, values) if a == arm] for arm in (CONTROL, TREATMENT)}
    return LiveComparison(
        promoted, replaced, at, {a: len(v) for a, v in by_arm.items()},
        {a: (sum(v) / len(v) if v else None) for a, v in by_arm.items()},
        msprt(arms, values, metric="quality", alpha=alpha),
    )  # fmt: skip


def check_rollback(store: LiveStore, artifacts: Path, alpha: float = DEFAULT_ALPHA) -> LearningEvent | None:
    """Point the learned router back at the version the last promotion replaced when the always-valid test says that
    one did better live; the move is an `auto-rollback` row with the comparison. None when nothing was moved."""
    comparison = live_comparison(store, artifacts, alpha)
    if comparison is None or comparison.sequential.decision != "stop: control better":
        return None
    seq, mean = comparison.sequential, comparison.mean_quality
    reason = (
        f"{comparison.promoted} did worse live than {comparison.replaced}, which it replaced: quality "
        f"{mean[TREATMENT]:.3f} vs {mean[CONTROL]:.3f} on {comparison.n[TREATMENT]} vs {comparison.n[CONTROL]} "
        f"decisions with feedback (always-valid p {seq.p_value:.3g} < {alpha}, {seq.test})"
    )
    return move_pointer(artifacts, store, LEARNED, comparison.replaced, AUTO_ROLLBACK, reason, comparison.scores())
