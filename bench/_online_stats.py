"""What `online_proof.py` reports from two runs over the same held-out stream: per arm quality and cost, Δquality
with its intervals, the cost ratio with a paired bootstrap interval, curves per window, the drift test; a table and
a plot of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

QUALITY_TARGET = 0.05
"""The learned loop must beat static rules by more than this (5 quality points) at no higher cost."""
DRIFT_TARGET = 200
"""...and move off a degraded model within this many events."""
DRIFT_RECENT = 20
"""The learned arm has moved off when the degraded model's share of its last this many events is at most a third
of its share in the DRIFT_BEFORE events before the drift."""
DRIFT_BEFORE = 200
DRIFT_END = 100
"""Where the learned arm ended up: the degraded model's share of the last this many events."""
BOOTSTRAP = 2000


def arm_summary(events: Sequence[Any]) -> dict[str, Any]:
    from proxy.evaluation.stats import mean_estimate

    ok = [e for e in events if e.ok]
    quality = mean_estimate([e.quality for e in ok])
    counts = Counter(e.model for e in ok)
    return {
        "events": len(ok), "errors": len(events) - len(ok), "quality": rounded(quality.mean),
        "quality_ci": [rounded(x) for x in quality.ci] if quality.ci else None,
        "cost_per_event": float(np.mean([e.cost_usd or 0.0 for e in ok])) if ok else None,
        "models": {m: round(c / len(ok), 3) for m, c in counts.most_common(6)},
    }  # fmt: skip


def compare(static: Sequence[Any], learned: Sequence[Any], measured: int, window: int, seed: int = 0
            ) -> dict[str, Any]:  # fmt: skip
    """Both arms over the first `measured` events (the same prompts in the same order), and curves over all."""
    from proxy.evaluation.stats import mean_estimate, welch_test

    by_index = {e.index: e for e in static if e.ok}
    pairs = [(by_index[e.index], e) for e in learned if e.ok and e.index < measured and e.index in by_index]
    s_q = np.array([s.quality for s, _ in pairs])
    l_q = np.array([x.quality for _, x in pairs])
    s_c = np.array([s.cost_usd or 0.0 for s, _ in pairs])
    l_c = np.array([x.cost_usd or 0.0 for _, x in pairs])
    welch = welch_test(s_q, l_q)
    paired = mean_estimate(l_q - s_q)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(pairs), size=(BOOTSTRAP, len(pairs)))
    ratios = l_c[draws].mean(axis=1) / s_c[draws].mean(axis=1)
    delta, ratio = float(l_q.mean() - s_q.mean()), float(l_c.mean() / s_c.mean())
    return {
        "arms": {"static": arm_summary([s for s, _ in pairs]), "learned": arm_summary([x for _, x in pairs])},
        "paired_events": len(pairs),
        "delta_quality": {
            "estimate": rounded(delta),
            "welch_ci95": [rounded(x) for x in welch.ci] if welch.ci else None, "welch_p": welch.p_value,
            "paired_ci95": [rounded(x) for x in paired.ci] if paired.ci else None,
        },
        "cost_ratio": {"estimate": rounded(ratio),
                       "bootstrap_ci95": [rounded(float(x)) for x in np.percentile(ratios, [2.5, 97.5])]},
        "targets": {"quality": f"> +{QUALITY_TARGET:.2f} at cost ratio <= 1",
                    "met": bool(delta > QUALITY_TARGET and ratio <= 1.0),
                    "quality_short_by": rounded(max(0.0, QUALITY_TARGET - delta)),
                    "cost_over_by": rounded(max(0.0, ratio - 1.0))},
        "curve": curve(static, learned, window),
    }  # fmt: skip


def curve(static: Sequence[Any], learned: Sequence[Any], window: int) -> list[dict[str, Any]]:
    out = []
    last = max(e.index for e in learned)
    for start in range(0, last + 1, window):
        part = {arm: [e for e in events if e.ok and start <= e.index < start + window]
                for arm, events in (("static", static), ("learned", learned))}  # fmt: skip
        if not part["static"] or not part["learned"]:
            continue
        point: dict[str, Any] = {"events": start + window}
        for arm, events in part.items():
            point[f"{arm}_quality"] = rounded(float(np.mean([e.quality for e in events])))
            point[f"{arm}_cost"] = float(np.mean([e.cost_usd or 0.0 for e in events]))
        point["difference"] = rounded(point["learned_quality"] - point["static_quality"])
        out.append(point)
    return out


def drift_summary(learned: Sequence[Any], static: Sequence[Any], model: str, at: int, window: int) -> dict[str, Any]:
    ok = sorted((e for e in learned if e.ok), key=lambda e: e.index)
    before = [e for e in ok if at - DRIFT_BEFORE <= e.index < at]
    share_before = sum(e.model == model for e in before) / max(len(before), 1)
    after = [e for e in ok if e.index >= at]
    moved = None
    for k in range(DRIFT_RECENT - 1, len(after)):
        recent = after[k - DRIFT_RECENT + 1 : k + 1]
        if sum(e.model == model for e in recent) / DRIFT_RECENT <= share_before / 3:
            moved = after[k].index - at
            break

    def after_drift(events: Sequence[Any]) -> dict[str, Any]:
        rows = sorted((e for e in events if e.ok and e.index >= at), key=lambda e: e.index)

        def share(part: Sequence[Any]) -> float | None:
            return rounded(sum(e.model == model for e in part) / max(len(part), 1))

        quality = rounded(float(np.mean([e.quality for e in rows]))) if rows else None
        return {"events": len(rows), "quality": quality, "share_of_degraded": share(rows),
                f"share_of_degraded_last_{DRIFT_END}": share(rows[-DRIFT_END:])}  # fmt: skip

    return {"model": model, "at_event": at, "share_before": rounded(share_before), "events_to_move": moved,
            "target": DRIFT_TARGET, "met": moved is not None and moved <= DRIFT_TARGET,
            "learned_after": after_drift(learned), "static_after": after_drift(static)}  # fmt: skip


def routers(run: Any, measured: int) -> dict[str, int]:
    """Which router of the chain decided the run's first `measured` events (its logged decisions)."""
    return dict(Counter(run.decisions.get(e.request_id, {}).get("router", "unlogged")
                        for e in run.events if e.ok and e.index < measured).most_common())  # fmt: skip


def task_table(events: Sequence[Any], decisions: dict[str, dict[str, Any]], measured: int) -> dict[str, dict[str, int]]:
    """The set's task label -> the task the gateway classified the prompt as -> events."""
    table: dict[str, Counter[str]] = {}
    for e in events:
        if e.ok and e.index < measured:
            table.setdefault(e.task or "none", Counter())[decisions.get(e.request_id, {}).get("task", "unlogged")] += 1
    return {task: dict(row.most_common()) for task, row in sorted(table.items())}


def format_set(name: str, result: dict[str, Any]) -> str:
    s, x = result["arms"]["static"], result["arms"]["learned"]
    d, c = result["delta_quality"], result["cost_ratio"]
    lines = [
        f"{name}: {result['paired_events']} held-out events; tuning chose {result['tuning']['chosen']}",
        f"  static  q {s['quality']:.3f} ${s['cost_per_event']:.6f}/event  {s['models']}",
        f"  learned q {x['quality']:.3f} ${x['cost_per_event']:.6f}/event  {x['models']}",
        f"  Δq {d['estimate']:+.3f} (Welch 95% {d['welch_ci95']}, paired {d['paired_ci95']}); cost ratio "
        f"{c['estimate']:.3f} (bootstrap 95% {c['bootstrap_ci95']}); target met: {result['targets']['met']}",
        f"  learned routers: {result['learned_routers']}",
    ]
    lines += [f"  after {p['events']:5d}: static {p['static_quality']:.3f} learned {p['learned_quality']:.3f} "
              f"Δ {p['difference']:+.3f}  cost ${p['static_cost']:.6f} vs ${p['learned_cost']:.6f}"
              for p in result["curve"]]  # fmt: skip
    lines.append(f"  at the static arm's cost: {result['ceilings_at_static_cost']}; references {result['references']}")
    if "drift" in result:
        lines.append(f"  drift: {result['drift']}")
    lines += [f"  trainer: {e['kind']} {e['version']}: {e['reason']}" for e in result["learning_events"]]
    return "\n".join(lines)


def plot(results: dict[str, Any], sets: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sets), 2, figsize=(11, 3.6 * len(sets)), squeeze=False)
    for row, name in zip(axes, sets):
        result = results[name]
        points = result["curve"]
        x = [p["events"] for p in points]
        for ax, key, label in ((row[0], "quality", "mean quality per window"), (row[1], "cost", "USD per event")):
            ax.plot(x, [p[f"static_{key}"] for p in points], "o-", label="static rules")
            ax.plot(x, [p[f"learned_{key}"] for p in points], "s-", label="learned loop")
            if "drift" in result:
                ax.axvline(result["drift"]["at_event"], color="grey", linestyle="--", linewidth=1)
            ax.set_title(f"{name}: {label}")
            ax.set_xlabel("held-out events")
            ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def best_at_cost(groups: Sequence[tuple[int, dict[str, tuple[float, float]]]], budget: float) -> dict[str, Any]:
    """The best mean quality at mean cost <= `budget` of a policy that picks one model per group (a source of the
    set, or a single prompt), mixing two neighbouring choices when that helps: the ceiling of a router that knows
    each group's recorded quality and cost. `groups`: (events, {model: (mean quality, mean cost)})."""
    n = sum(w for w, _ in groups)
    vertices = set()
    for lam in np.concatenate([[0.0], np.logspace(0, 7, 300)]):
        quality = cost = 0.0
        for weight, models in groups:
            q, c = max(models.values(), key=lambda qc: (qc[0] - lam * qc[1], -qc[1]))
            quality, cost = quality + weight * q, cost + weight * c
        vertices.add((cost / n, quality / n))
    feasible = [v for v in vertices if v[0] <= budget]
    if not feasible:
        return {"quality": None, "cost_per_event": None}
    low = max(feasible, key=lambda v: (v[1], -v[0]))
    above = [v for v in vertices if v[0] > budget and v[1] > low[1]]
    if not above:
        return {"quality": rounded(low[1]), "cost_per_event": low[0]}
    high = min(above, key=lambda v: v[0])
    share = (budget - low[0]) / (high[0] - low[0])
    return {"quality": rounded(low[1] + share * (high[1] - low[1])), "cost_per_event": budget}
