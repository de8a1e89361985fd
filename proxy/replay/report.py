"""What an online replay run measured: per-event outcomes, aggregated per window of events, per task and overall.

Quality and cost are the recorded ones of the model the gateway chose, so the learning curve of a router is
directly comparable to the set's fixed baselines (each single model, and the per-prompt oracle).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset import Record

NO_TASK = "none"


@dataclass(frozen=True)
class Event:
    """One record sent through the gateway. `error` set: the call failed and holds no quality."""

    index: int
    record_id: str
    task: str | None
    model: str | None = None
    quality: float | None = None
    cost_usd: float | None = None
    request_id: str | None = None
    latency_s: float = 0.0
    error: str | None = None
    feedback_error: str | None = None
    arm: str | None = None
    """The A/B arm that served it (x-autoroute-arm), when the gateway runs a test."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Stats:
    events: int
    errors: int
    mean_quality: float | None
    """Over the calls that succeeded; None when none did."""
    mean_cost: float | None
    """Recorded USD per call over the successful calls whose cost the set records; None when it records none."""
    share: dict[str, float]
    """Model -> fraction of the successful calls it answered."""


@dataclass(frozen=True)
class Window:
    start: int
    """Index of the window's first event (0-based); `end` is one past its last."""
    end: int
    stats: Stats
    cumulative_quality: float | None
    cumulative_cost: float | None


@dataclass(frozen=True)
class Baseline:
    """A fixed policy over the same records: always one model, or the per-prompt oracle."""

    mean_quality: float | None
    mean_cost: float | None


@dataclass(frozen=True)
class OnlineReport:
    overall: Stats
    windows: tuple[Window, ...]
    by_task: dict[str, Stats]
    feedback_errors: int
    total_cost: float
    elapsed_s: float
    baselines: dict[str, Baseline]
    """Each model of the set, and `oracle` (the best quality per prompt, cheapest among equals)."""
    events: tuple[Event, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def stats(events: Sequence[Event]) -> Stats:
    ok = [e for e in events if e.ok]
    counts = Counter(e.model for e in ok if e.model is not None)
    return Stats(
        events=len(events),
        errors=len(events) - len(ok),
        mean_quality=_mean([e.quality for e in ok if e.quality is not None]),
        mean_cost=_mean([e.cost_usd for e in ok if e.cost_usd is not None]),
        share={model: counts[model] / len(ok) for model in sorted(counts)},
    )


def windows(events: Sequence[Event], size: int) -> tuple[Window, ...]:
    """Consecutive windows of `size` events in record order; the last may be shorter."""
    if size < 1:
        raise ValueError("the window must hold at least one event")
    ordered = sorted(events, key=lambda e: e.index)
    out = []
    for start in range(0, len(ordered), size):
        chunk = ordered[start : start + size]
        so_far = stats(ordered[: start + len(chunk)])
        out.append(Window(start, start + len(chunk), stats(chunk), so_far.mean_quality, so_far.mean_cost))
    return tuple(out)


def baselines(records: Sequence[Record], models: Sequence[str]) -> dict[str, Baseline]:
    out: dict[str, Baseline] = {}
    oracle_quality: list[float] = []
    oracle_cost: list[float] = []
    for model in models:
        outcomes = [o for r in records if (o := r.outcome(model)) is not None]
        out[model] = Baseline(
            _mean([o.quality for o in outcomes]), _mean([o.cost_usd for o in outcomes if o.cost_usd is not None])
        )
    for record in records:
        outcomes = [o for m in models if (o := record.outcome(m)) is not None]
        if not outcomes:
            continue
        best = max(o.quality for o in outcomes)
        oracle_quality.append(best)
        costs = [o.cost_usd for o in outcomes if o.quality == best and o.cost_usd is not None]
        if costs:
            oracle_cost.append(min(costs))
    out["oracle"] = Baseline(_mean(oracle_quality), _mean(oracle_cost))
    return out


def build_report(
    events: Sequence[Event], window: int, elapsed_s: float, fixed: dict[str, Baseline] | None = None
) -> OnlineReport:
    by_task: dict[str, list[Event]] = {}
    for event in events:
        by_task.setdefault(event.task or NO_TASK, []).append(event)
    ordered = tuple(sorted(events, key=lambda e: e.index))
    return OnlineReport(
        overall=stats(ordered),
        windows=windows(ordered, window),
        by_task={task: stats(group) for task, group in sorted(by_task.items())},
        feedback_errors=sum(1 for e in events if e.ok and e.feedback_error is not None),
        total_cost=sum(e.cost_usd for e in events if e.ok and e.cost_usd is not None),
        elapsed_s=elapsed_s,
        baselines=dict(fixed or {}),
        events=ordered,
    )


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _shares(share: dict[str, float]) -> str:
    ranked = sorted(share.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{model} {fraction:.0%}" for model, fraction in ranked)


def _row(label: str, s: Stats, with_share: bool = True) -> str:
    row = f"{label:<24} {s.events:>6} {s.errors:>6} {_num(s.mean_quality):>8} {_cost(s.mean_cost):>10}"
    return row + (f"  {_shares(s.share)}" if with_share else "")


def format_report(report: OnlineReport) -> str:
    header = f"{'':<24} {'events':>6} {'errors':>6} {'quality':>8} {'cost/call':>10}"
    lines = [f"{'window':<24}" + header[24:] + "  share of calls"]
    lines += [_row(f"{w.start + 1}-{w.end}", w.stats) for w in report.windows]
    lines += ["", f"{'task':<24}" + header[24:] + "  share of calls"]
    lines += [_row(task, s) for task, s in report.by_task.items()]
    lines += ["", _row("overall", report.overall, with_share=False)]
    lines.append(
        f"feedback errors {report.feedback_errors}, total recorded cost ${report.total_cost:.4f}, "
        f"{report.elapsed_s:.1f} s ({report.overall.events / report.elapsed_s if report.elapsed_s else 0:.1f} events/s)"
    )
    if report.baselines:
        width = max(32, *(len(name) for name in report.baselines))
        lines += ["", f"{'fixed policy, same records':<{width}} {'quality':>8} {'cost/call':>10}"]
        ranked = sorted(report.baselines.items(), key=lambda kv: -(kv[1].mean_quality or 0.0))
        lines += [f"{name:<{width}} {_num(b.mean_quality):>8} {_cost(b.mean_cost):>10}" for name, b in ranked]
    return "\n".join(lines)


def plot_report(report: OnlineReport, path: str | Path, title: str = "online replay") -> None:
    """Quality and cost per window and cumulative, against events, with the best single model for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ends = [w.end for w in report.windows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    singles = {m: b for m, b in report.baselines.items() if m != "oracle" and b.mean_quality is not None}
    best = max(singles.items(), key=lambda kv: kv[1].mean_quality or 0.0, default=None)
    for axis, per_window, cumulative, baseline, label in (
        (top, [w.stats.mean_quality for w in report.windows], [w.cumulative_quality for w in report.windows],
         best[1].mean_quality if best else None, "mean quality"),
        (bottom, [w.stats.mean_cost for w in report.windows], [w.cumulative_cost for w in report.windows],
         best[1].mean_cost if best else None, "mean cost per call (USD)"),
    ):  # fmt: skip
        axis.plot(ends, [float("nan") if v is None else v for v in per_window], "o-", label="per window")
        axis.plot(ends, [float("nan") if v is None else v for v in cumulative], "--", label="cumulative")
        if baseline is not None and best is not None:
            axis.axhline(baseline, color="grey", linestyle=":", label=f"always {best[0]}")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    if any(w.stats.mean_cost for w in report.windows):
        # Models' costs differ by 10-100x: a linear axis flattens every cheap policy onto zero.
        bottom.set_yscale("log")
    bottom.set_xlabel("events")
    top.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
