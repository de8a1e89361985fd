"""`autoroute tune`: how each classifier layer's threshold fared on logged decisions, and a better one.

Every decision logs each layer's attempt (task, confidence, threshold). An attempt is judged against a truth:
the task feedback named for the request, or, a weaker proxy, the final task when a different, later layer accepted
it. The proxy can only judge attempts a layer passed on, so raising a threshold rests on feedback alone; and a
layer is only seen on the requests earlier layers passed on, so each layer is tuned given the others as they were.

Learned thresholds are versioned learned state beside the other artifacts (`thresholds-<version>.json`, pointed at
by `thresholds-current.json`); the YAML stays the human's. The serving runtime overlays them with
`apply_thresholds(registry, load_tuned_thresholds(artifacts_dir))`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from router_plugins.datadir import DataDir, write_atomically, write_pointer
from router_plugins.registry import Registry, StorageSettings
from router_plugins.thresholds import (
    ARTIFACT_FORMAT,
    LAYERS,
    POINTER_FILE,
)

log = logging.getLogger(__name__)

DEFAULT_TARGET_PRECISION = 0.9
DEFAULT_MIN_EVENTS = 30
_FALLBACK = "fallback"
_SKIPPED = "skipped: no embedding given"
"""router_plugins.classify.cascade's markers, spelled out so this module does not import numpy and the layers."""

Truth = Literal["feedback", "any"]
TruthSource = Literal["feedback", "later_layer"]


@dataclass(frozen=True, slots=True)
class LayerEvent:
    """One layer's attempt on one request, with the right task when something tells it."""

    layer: str
    task: str | None
    confidence: float
    truth: str | None = None
    source: TruthSource | None = None

    @property
    def judged(self) -> bool:
        return self.truth is not None

    @property
    def right(self) -> bool:
        return self.task is not None and self.task == self.truth


@dataclass(frozen=True, slots=True)
class LayerEvidence:
    layer: str
    current: float
    events: int
    """Attempts of this layer (skipped ones left out); `above` + `below` == `events`."""
    above: int
    """Attempts that named a task with confidence >= the current threshold: the layer decides these."""
    below: int
    judged: int
    truth_feedback: int
    truth_later_layer: int
    below_but_right: int
    above_but_wrong: int
    precision: float | None
    """Among judged attempts above the current threshold; None without any."""
    coverage: float | None
    """`above` / `events`."""
    proposed: float
    tuned: bool
    """True when the evidence was enough to propose a threshold; False keeps the current one (see `reason`)."""
    reason: str
    proposed_precision: float | None = None
    proposed_coverage: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class TuningReport:
    layers: tuple[LayerEvidence, ...]
    decisions: int
    truth_sources: Mapping[str, int]
    """Judged attempts per truth source (`feedback`, `later_layer`) over all layers."""
    target_precision: float
    min_events: int
    truth: Truth
    since: float | None = None

    def thresholds(self) -> dict[str, float]:
        """The proposed threshold of every layer that had evidence enough."""
        return {e.layer: e.proposed for e in self.layers if e.tuned}

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions, "truth_sources": dict(self.truth_sources), "truth": self.truth,
            "target_precision": self.target_precision, "min_events": self.min_events, "since": self.since,
            "layers": {e.layer: e.to_dict() for e in self.layers},
        }  # fmt: skip


# -- evidence ---------------------------------------------------------------------------------------------------


def layer_events(rows: Iterable[Mapping[str, Any]], truth: Truth = "any") -> list[LayerEvent]:
    """Every layer attempt in `rows` (as `Store.tuning_events` returns them), judged where a truth is known."""
    events: list[LayerEvent] = []
    for row in rows:
        attempts = [a for a in row.get("layer_attempts") or [] if isinstance(a, Mapping) and a.get("layer")]
        final_layer = row.get("classification_layer")
        decided_at = next(
            (i for i, a in enumerate(attempts) if a["layer"] == final_layer and a.get("accepted")), None
        ) if final_layer != _FALLBACK else None  # fmt: skip
        for i, attempt in enumerate(attempts):
            if attempt["layer"] == _FALLBACK or attempt.get("detail") == _SKIPPED:
                continue
            right: str | None = None
            source: TruthSource | None = None
            if row.get("feedback_task"):
                right, source = str(row["feedback_task"]), "feedback"
            elif truth == "any" and decided_at is not None and i < decided_at and row.get("task"):
                right, source = str(row["task"]), "later_layer"
            task = attempt.get("task")
            events.append(LayerEvent(attempt["layer"], task, float(attempt.get("confidence") or 0.0), right, source))
    return events


def _decides(event: LayerEvent, threshold: float) -> bool:
    return event.task is not None and event.confidence >= threshold


def propose_threshold(
    events: Sequence[LayerEvent], current: float, target_precision: float, min_events: int
) -> tuple[float, bool, str]:
    """(threshold, tuned, why): the lowest threshold at which at least `min_events` judged attempts decide and a
    share >= `target_precision` of them is right. It lies halfway between the lowest such confidence and the next
    lower judged one, so confidences rounded in the log do not land on it. Without such a threshold the current
    one is kept."""
    judged = sorted((e for e in events if e.judged and e.task is not None), key=lambda e: -e.confidence)
    if len(judged) < min_events:
        return current, False, f"{len(judged)} judged events, fewer than the {min_events} required"
    best: tuple[float, float] | None = None  # (confidence, precision) of the lowest qualifying cut so far
    # (precision, -confidence) of the most precise cut with min_events judged events; the lowest on ties
    best_seen: tuple[float, float] = (-1.0, 0.0)
    right = 0
    for n, event in enumerate(judged, start=1):
        right += event.right
        if n < len(judged) and judged[n].confidence == event.confidence:
            continue  # a threshold cannot split equal confidences
        precision = right / n
        if n >= min_events:
            best_seen = max(best_seen, (precision, -event.confidence))
            if precision >= target_precision:
                best = (event.confidence, precision)
    if best is None:
        top, at = best_seen
        return current, False, (
            f"no threshold reaches precision {target_precision:g} over {min_events}+ judged events "
            f"(best {top:.3f} at {-at:.4g})"
        )  # fmt: skip
    cut, precision = best
    lower = max((e.confidence for e in judged if e.confidence < cut), default=None)
    threshold = cut if lower is None else round((cut + lower) / 2, 4)
    if lower is not None and not lower < threshold <= cut:
        threshold = cut
    threshold = min(max(threshold, 0.0), 1.0)
    decided = sum(1 for e in judged if e.confidence >= threshold)
    why = f"lowest threshold with precision {precision:.3f} >= {target_precision:g} over {decided} judged events"
    return threshold, True, why


def layer_evidence(
    layer: str, current: float, events: Sequence[LayerEvent], target_precision: float, min_events: int
) -> LayerEvidence:
    above = [e for e in events if _decides(e, current)]
    below = [e for e in events if not _decides(e, current)]
    judged_above = [e for e in above if e.judged]
    proposed, tuned, reason = propose_threshold(events, current, target_precision, min_events)
    proposed_judged = [e for e in events if e.judged and _decides(e, proposed)]
    return LayerEvidence(
        layer=layer,
        current=current,
        events=len(events),
        above=len(above),
        below=len(below),
        judged=sum(e.judged for e in events),
        truth_feedback=sum(e.source == "feedback" for e in events),
        truth_later_layer=sum(e.source == "later_layer" for e in events),
        below_but_right=sum(e.right for e in below),
        above_but_wrong=sum(not e.right for e in judged_above),
        precision=sum(e.right for e in judged_above) / len(judged_above) if judged_above else None,
        coverage=len(above) / len(events) if events else None,
        proposed=proposed,
        tuned=tuned,
        reason=reason,
        proposed_precision=(
            sum(e.right for e in proposed_judged) / len(proposed_judged) if tuned and proposed_judged else None
        ),
        proposed_coverage=sum(_decides(e, proposed) for e in events) / len(events) if tuned and events else None,
    )


def tune(
    rows: Sequence[Mapping[str, Any]],
    current: Mapping[str, float],
    *,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    min_events: int = DEFAULT_MIN_EVENTS,
    truth: Truth = "any",
    since: float | None = None,
) -> TuningReport:
    """Evidence and a proposed threshold for each layer in `current` (layer -> threshold in effect)."""
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"the target precision must be in (0, 1], got {target_precision}")
    if min_events < 1:
        raise ValueError(f"the minimum number of events must be >= 1, got {min_events}")
    events = layer_events(rows, truth)
    by_layer: dict[str, list[LayerEvent]] = {name: [] for name in current}
    for event in events:
        if event.layer in by_layer:
            by_layer[event.layer].append(event)
    layers = tuple(
        layer_evidence(name, level, by_layer[name], target_precision, min_events) for name, level in current.items()
    )
    sources = Counter(e.source for e in events if e.source is not None)
    return TuningReport(
        layers, len(rows), {"feedback": sources["feedback"], "later_layer": sources["later_layer"]},
        target_precision, min_events, truth, since,
    )  # fmt: skip


# -- thresholds in the registry and on disk ---------------------------------------------------------------------


def current_thresholds(registry: Registry) -> dict[str, float]:
    settings = registry.router.classifier
    return {name: getattr(settings, name).level for name in LAYERS}


def save_thresholds(artifacts_dir: Path, report: TuningReport, previous: Mapping[str, float] | None = None) -> Path:
    """Write a new thresholds version, then point `thresholds-current.json` at it (both writes atomic).

    Layers without evidence enough keep their `previous` tuned value (or stay with the YAML's when they had none)."""
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    created_at = time.time()
    version = time.strftime("%Y%m%d%H%M%S", time.gmtime(created_at)) + f"-n{report.decisions}"
    path, n = artifacts_dir / f"thresholds-{version}.json", 1
    while path.exists():  # two runs within one second
        n += 1
        path = artifacts_dir / f"thresholds-{version}-{n}.json"
    version = path.stem.removeprefix("thresholds-")
    artifact = {
        "format": ARTIFACT_FORMAT, "version": version, "created_at": created_at,
        "thresholds": {**(previous or {}), **report.thresholds()},
        "evidence": {e.layer: e.to_dict() for e in report.layers},
        "settings": {"target_precision": report.target_precision, "min_events": report.min_events,
                     "truth": report.truth, "since": report.since},
        "decisions": report.decisions, "truth_sources": dict(report.truth_sources),
    }  # fmt: skip
    text = json.dumps(artifact, indent=2).encode()
    write_atomically(path, lambda handle: handle.write(text))
    write_pointer(artifacts_dir, POINTER_FILE, path, version)
    return path


# -- the command ------------------------------------------------------------------------------------------------


def read_events(storage: StorageSettings, data: DataDir, since: float | None = None) -> list[dict[str, Any]]:
    """`Store.tuning_events` of the config's store (`storage`, in `data`); none when there is no store (it is not
    created)."""
    from .store import open_configured_store

    store = open_configured_store(storage, data, create=False)
    if store is None:
        return []
    try:
        return store.tuning_events(since)
    finally:
        store.close()


def format_report(report: TuningReport, sources: Mapping[str, str] | None = None) -> str:
    """The per-layer table; `sources` says where each current threshold came from (config or tuned)."""
    header = ("layer", "current", "events", "below", "above", "below-but-right", "above-but-wrong", "proposed")
    rows = [header]
    for e in report.layers:
        current = f"{e.current:g}" + (f" ({sources[e.layer]})" if sources and e.layer in sources else "")
        proposed = f"{e.proposed:g}" if e.tuned else f"{e.proposed:g} (kept)"
        rows.append((e.layer, current, str(e.events), str(e.below), str(e.above), str(e.below_but_right),
                     str(e.above_but_wrong), proposed))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]  # fmt: skip
    lines.append("")
    for e in report.layers:
        precision = "n/a" if e.precision is None else f"{e.precision:.3f}"
        coverage = "n/a" if e.coverage is None else f"{e.coverage:.3f}"
        lines.append(f"{e.layer}: precision {precision}, coverage {coverage} at the current threshold; {e.reason}")
    lines.append(
        f"{report.decisions} decisions; judged attempts by truth source: feedback {report.truth_sources['feedback']}, "
        f"later layer {report.truth_sources['later_layer']} (--truth {report.truth}); "
        f"target precision {report.target_precision:g}, at least {report.min_events} judged events"
    )
    return "\n".join(lines)
