"""Where each preference lands on held-out prompts, for routers that calibrate their preferences' weights.

In cross-validation each fold's router has its own operating points: every test prompt is routed with the weights of
the router fitted without it (`preference_weights`, exactly what `route` uses), and the choices are pooled out of
fold. Offline every
candidate has the registry's default latency, so the latency term is the same for all and drops out. Beside the
landings: the best single model (chosen on the training folds) and the knee of the test curve, the curve swept with
`balanced`'s weights and one cost weight for every fold over `router_plugins.routers.operating.COST_WEIGHT_GRID` on
the same pooled predictions (the same knee definition).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from router_plugins.outcomes import OutcomeSet
from router_plugins.registry import PreferenceWeights
from router_plugins.routers.operating import REGISTRY, above_chord, choose, knee, landed, sweep
from router_plugins.types import PREFERENCES


@runtime_checkable
class CalibratedRouter(Protocol):
    def preference_weights(self, preference: str) -> tuple[PreferenceWeights, str | None]: ...


FoldWeights = tuple[np.ndarray, dict[str, tuple[PreferenceWeights, str]]]
"""One outer fold: its test rows, and per preference the weights it routes with and where they came from."""


def fold_weights(router: object, test_rows: np.ndarray) -> FoldWeights | None:
    """What a fitted router routes each preference with (None: a router without per-preference calibration)."""
    if not isinstance(router, CalibratedRouter):
        return None
    points = getattr(router, "operating_points", {})
    out: dict[str, tuple[PreferenceWeights, str]] = {}
    for preference in PREFERENCES:
        weights, note = router.preference_weights(preference)
        out[preference] = (weights, points[preference].source if note and preference in points else REGISTRY)
    return test_rows, out


def operating_report(
    data: OutcomeSet,
    pred_quality: np.ndarray,
    pred_cost: np.ndarray,
    folds: Sequence[FoldWeights],
    best_single: dict[str, Any],
) -> dict[str, Any] | None:
    """Per preference the pooled out-of-fold landing of its calibrated weights; None without costs or folds."""
    if not folds or not data.has_cost:
        return None
    best_quality, best_cost = best_single["quality"], best_single["cost"]
    preferences: dict[str, Any] = {}
    for preference in PREFERENCES:
        choices = np.zeros(len(data), dtype=np.int64)
        for rows, weights in folds:
            choices[rows] = choose(pred_quality[rows], pred_cost[rows], weights[preference][0])
        quality, cost = landed(choices, data.quality, data.cost)
        preferences[preference] = {
            "cost_weights": [w[preference][0].cost_weight for _, w in folds],
            "sources": sorted({w[preference][1] for _, w in folds}),
            "quality": _num(quality),
            "cost": _num(cost),
            "quality_minus_best": _num(quality - best_quality),
            "cost_share_of_best": _num(cost / best_cost) if best_cost else None,
            "reaches_best": bool(quality >= best_quality - 1e-12),
        }
    balanced = folds[0][1]["balanced"][0]
    curve = sweep(pred_quality, pred_cost, data.quality, data.cost, balanced)
    at = curve[knee(curve)]
    test_knee = {"cost_weight": at.cost_weight, "quality": at.quality, "cost": at.cost,
                 "above_chord": _num(above_chord(curve, at.quality, at.cost))}  # fmt: skip
    from_knee = {p: _from_knee(curve, at, preferences[p]) for p in ("balanced", "cost")}
    return {"preferences": preferences, "test_knee": test_knee, "from_knee": from_knee,
            "test_curve": [{"cost_weight": p.cost_weight, "quality": _num(p.quality), "cost": _num(p.cost)}
                           for p in curve]}  # fmt: skip


def _from_knee(curve: Sequence[Any], at: Any, landing: dict[str, Any]) -> dict[str, float | None]:
    """How far a preference landed from the test curve's knee: quality in points, cost as a ratio, and its scaled
    height above the curve's chord (the knee's is the most any point of the curve reaches)."""
    return {
        "quality_points": 100 * (landing["quality"] - at.quality),
        "cost_ratio": landing["cost"] / at.cost if at.cost else None,
        "above_chord": _num(above_chord(curve, landing["quality"], landing["cost"])),
    }


def format_operating(report: dict[str, Any]) -> list[str]:
    """Lines for `autoroute eval offline`'s output."""
    lines = ["  preferences (calibrated weights, pooled out of fold):"]
    for preference, p in report["preferences"].items():
        weights = sorted(set(p["cost_weights"]))
        shown = ", ".join(f"{w:.3g}" for w in weights[:5]) + (" ..." if len(weights) > 5 else "")
        reach = "reaches" if p["reaches_best"] else "below"
        lines.append(
            f"    {preference:<9} cost weight {shown}: quality {p['quality']:.4f} ({reach} best single by "
            f"{abs(p['quality_minus_best']) * 100:.1f} points), cost {p['cost']:.4g} "
            f"({_share(p['cost_share_of_best'])} of best single's)  [{'; '.join(p['sources'])}]"
        )
    k, d = report["test_knee"], report["from_knee"]
    lines.append(
        f"    knee of the test curve: quality {k['quality']:.4f}, cost {k['cost']:.4g}; balanced lands "
        f"{d['balanced']['quality_points']:+.1f} points, {_share(d['balanced']['cost_ratio'])} of its cost; cost "
        f"{d['cost']['quality_points']:+.1f} points, {_share(d['cost']['cost_ratio'])}"
    )
    return lines


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
