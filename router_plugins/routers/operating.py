"""Per-preference operating points: the cost weight each preference routes with, calibrated on out-of-fold predictions.

A preference's weights enter the one ranking (`ranking.rank`) as

    utility = w_q·quality − w_c·cost / dearest − w_l·latency / slowest

per decision. `choose` is that rule over many prompts at once (same normalisation, same treatment of unknown costs and
latencies, same tie-break to the earlier candidate), so the weight calibrated here is the weight that serves.

`calibrate` sweeps w_c over `COST_WEIGHT_GRID` on predictions the model did not fit (the inner out-of-fold success
probabilities of `logistic.fit_selected`) and scores each sweep point on the recorded outcomes of those prompts:

- `quality` and `latency` keep the registry's weights (their point is recorded, not chosen);
- `balanced` takes the **knee** of that quality–cost curve (`knee`);
- `cost` takes the cheapest point whose mean quality reaches the best single model's (`cheapest_reaching`), the
  best single being the model with the highest mean quality on all training rows; when no point reaches it, the
  max-quality point, and the source says so.

The knee: draw the chord from the curve's cheapest point to its max-quality point (the cheapest of those with the
highest quality) and take the point furthest above it, with cost and quality each scaled to [0, 1] between the two
ends (the "Kneedle" definition, Satopää et al. 2011). In those scaled units the distance above the chord is
`q' − c'`, so the knee is also the point maximising `quality − slope·cost` with the chord's slope: past it, each
further unit of cost buys less quality than the curve buys on average between its ends. It needs no parameter and
does not depend on the unit of cost. A straight or convex curve has no point above its chord; then the max-quality
end is taken (ties go to the higher quality). Where several grid weights give the same best point, the middle one
of them is taken: its choices are the furthest from flipping on new prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..registry import PreferenceWeights

COST_WEIGHT_GRID: tuple[float, ...] = (0.0, *np.round(np.logspace(-3, 3, 61), 6).tolist())
"""Cost weights swept (ten a decade): cost enters the utility as a share of the dearest candidate's cost."""
REGISTRY = "registry"
KNEE = "calibrated: knee of the out-of-fold curve"
REACHES_BEST = "calibrated: cheapest point reaching the best single model's quality"
NEVER_REACHES = "calibrated: best single model's quality never reached, max-quality point"


@dataclass(frozen=True)
class OperatingPoint:
    """The cost weight a preference routes with and where it landed on the prompts it was calibrated on."""

    cost_weight: float
    oof_quality: float | None
    """Mean recorded quality of the models chosen with `cost_weight` on the out-of-fold prompts."""
    oof_cost: float | None
    source: str
    """`REGISTRY` (the registry's weight, recorded) or one of the `calibrated: ...` sources."""

    @property
    def calibrated(self) -> bool:
        return self.source.startswith("calibrated")

    def to_dict(self) -> dict[str, float | str | None]:
        return {"cost_weight": self.cost_weight, "oof_quality": self.oof_quality, "oof_cost": self.oof_cost,
                "source": self.source}  # fmt: skip

    @classmethod
    def from_dict(cls, raw: Mapping) -> OperatingPoint:
        quality, cost = raw.get("oof_quality"), raw.get("oof_cost")
        return cls(float(raw["cost_weight"]), None if quality is None else float(quality),
                   None if cost is None else float(cost), str(raw.get("source", REGISTRY)))  # fmt: skip


@dataclass(frozen=True)
class SweepPoint:
    cost_weight: float
    quality: float
    cost: float


def choose(
    quality: np.ndarray, cost: np.ndarray, weights: PreferenceWeights, latency: np.ndarray | None = None
) -> np.ndarray:
    """Per row of predicted quality/cost/latency [n, M], the column `ranking.rank` puts first under `weights`.

    `latency` None: every candidate equally fast (the latency term is the same for all and drops out).
    """
    utility = weights.quality_weight * quality - weights.cost_weight * _relative(cost)
    if latency is not None:
        utility = utility - weights.latency_weight * _relative(latency)
    return np.argmax(np.round(utility, 9), axis=1)  # rank's rounding; argmax takes the earlier candidate on ties


def _relative(values: np.ndarray) -> np.ndarray:
    """Each value over its row's largest known one; unknown values count as that largest (as `ranking.rank` does)."""
    known = np.isfinite(values)
    largest = np.where(known, values, -np.inf).max(axis=1, keepdims=True)
    largest = np.where(np.isfinite(largest) & (largest != 0), largest, 1.0)
    return np.where(known, values, largest) / largest


def landed(choices: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    """Mean recorded quality and cost of the chosen column per row (over the rows where it is recorded)."""
    rows = np.arange(len(choices))
    return _mean(quality[rows, choices]), _mean(cost[rows, choices])


def best_single(quality: np.ndarray) -> int:
    """The column with the highest mean recorded quality [n, M] (a column with none recorded never wins)."""
    known = np.isfinite(quality)
    counts = known.sum(axis=0)
    means = np.where(known, quality, 0.0).sum(axis=0) / np.maximum(counts, 1)
    return int(np.argmax(np.where(counts > 0, means, -np.inf)))


def _mean(values: np.ndarray) -> float:
    known = values[np.isfinite(values)]
    return float(known.mean()) if known.size else float("nan")


def sweep(
    pred_quality: np.ndarray,
    pred_cost: np.ndarray,
    quality: np.ndarray,
    cost: np.ndarray,
    weights: PreferenceWeights,
    latency: np.ndarray | None = None,
    grid: Sequence[float] = COST_WEIGHT_GRID,
) -> list[SweepPoint]:
    """The quality–cost curve of routing with `weights` and each cost weight of `grid`, on recorded outcomes."""
    points = []
    for w in grid:
        chosen = choose(pred_quality, pred_cost, _with_cost(weights, w), latency)
        points.append(SweepPoint(float(w), *landed(chosen, quality, cost)))
    return points


def knee(points: Sequence[SweepPoint]) -> int:
    """Index of the knee of the curve (module docstring)."""
    usable, cheap, top = _ends(points)
    c0, c1 = points[cheap].cost, points[top].cost
    if c1 <= c0 or points[top].quality <= points[cheap].quality:  # the max-quality point is also the cheapest
        return _middle(points, top)
    scores = {i: round(above_chord(points, p.quality, p.cost), 9) for i in usable if c0 <= (p := points[i]).cost <= c1}
    best = max(scores.values())
    return _middle(points, max((i for i in scores if scores[i] == best), key=lambda i: points[i].quality))


def above_chord(points: Sequence[SweepPoint], quality: float, cost: float) -> float:
    """How far (quality, cost) lies above the chord of the curve `points`, in the knee's scaled units: 0 on the chord,
    at most 1; NaN when the curve has no chord (its max-quality point is also its cheapest)."""
    _, cheap, top = _ends(points)
    c0, q0, c1, q1 = points[cheap].cost, points[cheap].quality, points[top].cost, points[top].quality
    if c1 <= c0 or q1 <= q0:
        return float("nan")
    return (quality - q0) / (q1 - q0) - (cost - c0) / (c1 - c0)


def _ends(points: Sequence[SweepPoint]) -> tuple[list[int], int, int]:
    """The usable points, the cheapest one (ties: the higher quality) and the max-quality one (ties: the cheaper)."""
    usable = [i for i, p in enumerate(points) if np.isfinite(p.quality) and np.isfinite(p.cost)]
    if not usable:
        raise ValueError("no point of the curve has a finite quality and cost")
    cheap = min(usable, key=lambda i: (points[i].cost, -points[i].quality))
    top = min(usable, key=lambda i: (-points[i].quality, points[i].cost))
    return usable, cheap, top


def cheapest_reaching(points: Sequence[SweepPoint], target: float) -> int | None:
    """Index of the cheapest point whose quality reaches `target` (ties: the higher quality); None if none does."""
    reaching = [i for i, p in enumerate(points) if np.isfinite(p.cost) and p.quality >= target - 1e-12]
    if not reaching:
        return None
    return _middle(points, min(reaching, key=lambda i: (points[i].cost, -points[i].quality)))


def max_quality(points: Sequence[SweepPoint]) -> int:
    usable = [i for i, p in enumerate(points) if np.isfinite(p.quality)]
    return _middle(points, min(usable, key=lambda i: (-points[i].quality, points[i].cost)))


def _middle(points: Sequence[SweepPoint], index: int) -> int:
    """The middle of the run of consecutive grid points that land exactly where `points[index]` does."""
    same = (points[index].quality, points[index].cost)
    lo = hi = index
    while lo > 0 and (points[lo - 1].quality, points[lo - 1].cost) == same:
        lo -= 1
    while hi < len(points) - 1 and (points[hi + 1].quality, points[hi + 1].cost) == same:
        hi += 1
    return (lo + hi) // 2


def _with_cost(weights: PreferenceWeights, cost_weight: float) -> PreferenceWeights:
    return PreferenceWeights(weights.quality_weight, cost_weight, weights.latency_weight)


def calibrate(
    pred_quality: np.ndarray,
    pred_cost: np.ndarray,
    quality: np.ndarray,
    cost: np.ndarray,
    best_single: int,
    preferences: Mapping[str, PreferenceWeights],
    latency: np.ndarray | None = None,
    grid: Sequence[float] = COST_WEIGHT_GRID,
) -> dict[str, OperatingPoint]:
    """Each preference's operating point from predictions [n, M] the model did not fit and the recorded outcomes
    of the same prompts; `best_single` is the column of the best single model (chosen on the training rows)."""
    out = {}
    for name, weights in preferences.items():
        if name == "balanced":
            points = sweep(pred_quality, pred_cost, quality, cost, weights, latency, grid)
            at, source = knee(points), KNEE
        elif name == "cost":
            points = sweep(pred_quality, pred_cost, quality, cost, weights, latency, grid)
            target = _mean(quality[:, best_single])
            reached = cheapest_reaching(points, target)
            at, source = (reached, REACHES_BEST) if reached is not None else (max_quality(points), NEVER_REACHES)
        else:
            points = sweep(pred_quality, pred_cost, quality, cost, weights, latency, (weights.cost_weight,))
            at, source = 0, REGISTRY
        p = points[at]
        out[name] = OperatingPoint(p.cost_weight, _finite(p.quality), _finite(p.cost), source)
    return out


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


__all__ = [
    "COST_WEIGHT_GRID", "OperatingPoint", "SweepPoint", "above_chord", "best_single", "calibrate", "cheapest_reaching",
    "choose", "knee", "landed", "sweep",
]  # fmt: skip
