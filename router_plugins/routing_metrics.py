"""Router metrics over routing outcomes: the quality–cost curve, AIQ, oracle, APGR and CPT.

Pure numpy, in the library: the offline evaluation (`proxy.evaluation.offline`) reports them, and the learned router
selects constants by them on its inner out-of-fold predictions (`headline_score`).

Definitions (docs/EVALUATION.md says the same, with the reasons):
- A curve point is (mean cost, mean quality) of one router setting over the test prompts.
- AIQ (RouterBench): the area under the upper, non-decreasing convex hull of the curve over the cost range of the
  single models, divided by that range. Outside the curve's own cost range the hull is flat (it is clamped to its
  end points, as `numpy.interp` does).
- Oracle: per prompt the best quality, the cheapest model among those tied at it.
- APGR (RouteLLM): prompts are sent to the strong model in the router's order of preference; PGR(x) is the
  quality gained over the weak model, as a share of the strong model's gain, when a share x of calls goes to the
  strong model; APGR is the area under PGR over x in [0, 1]; CPT(p) is the smallest x with PGR(x) >= p.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .outcomes import OutcomeSet

EPS = 1e-12
LAMBDAS = (0.0, *np.logspace(-3, 3, 49).tolist())
"""Cost weights swept for the quality–cost curve, relative to the mean predicted cost: 0 ignores cost."""
CPT_TARGETS = (0.5, 0.8)


@dataclass(frozen=True)
class Point:
    cost: float
    quality: float
    setting: float | str


def upper_hull(points: Sequence[Point]) -> list[tuple[float, float]]:
    """Vertices of the upper convex hull, left to right, cut at the best quality (so it never decreases)."""
    if not points:
        return []
    pts = sorted({(p.cost, p.quality) for p in points}, key=lambda xy: (xy[0], -xy[1]))
    hull: list[tuple[float, float]] = []
    for x, y in pts:
        if hull and abs(hull[-1][0] - x) < EPS:
            continue  # same cost, lower quality: never on the upper hull
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # Drop the middle point when it lies on or below the chord from its left neighbour to the new point.
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= -EPS:
                hull.pop()
            else:
                break
        hull.append((x, y))
    best = max(range(len(hull)), key=lambda i: (hull[i][1], -hull[i][0]))
    return hull[: best + 1]


def aiq(points: Sequence[Point], cost_min: float, cost_max: float) -> float | None:
    """Mean of the hull's quality over [cost_min, cost_max]: exact, the hull being piecewise linear."""
    hull = upper_hull(points)
    if not hull or not cost_max > cost_min:
        return None
    xs = np.array([x for x, _ in hull])
    ys = np.array([y for _, y in hull])
    inside = xs[(xs > cost_min) & (xs < cost_max)]
    grid = np.concatenate([[cost_min], inside, [cost_max]])
    values = np.interp(grid, xs, ys)
    area = float(np.sum((grid[1:] - grid[:-1]) * (values[1:] + values[:-1]) / 2))
    return area / (cost_max - cost_min)


def oracle(quality: np.ndarray, cost: np.ndarray) -> tuple[float, float | None]:
    """Mean quality and mean cost of the per-prompt best model (cheapest among ties)."""
    q = np.nan_to_num(quality, nan=-np.inf)
    best = q.max(axis=1)
    tied = q >= best[:, None] - EPS
    if not np.isfinite(cost).any():
        return float(np.mean(best)), None
    tied_cost = np.where(tied, np.nan_to_num(cost, nan=np.inf), np.inf)
    chosen_cost = tied_cost.min(axis=1)
    chosen_cost = np.where(np.isfinite(chosen_cost), chosen_cost, np.nan)
    return float(np.mean(best)), float(np.nanmean(chosen_cost))


def quality_at_cost(points: Sequence[Point], budget: float) -> float | None:
    """The best quality of a curve setting whose mean cost is within the budget."""
    within = [p.quality for p in points if p.cost <= budget + EPS]
    return max(within) if within else None


def cost_to_match(points: Sequence[Point], target_quality: float, reference_cost: float) -> float | None:
    """The lowest cost of a setting reaching the target quality, as a share of the reference cost."""
    reaching = [p.cost for p in points if p.quality >= target_quality - EPS]
    if not reaching or reference_cost <= 0:
        return None
    return min(reaching) / reference_cost


def oracle_gap_captured(quality: float | None, best_single: float, oracle_quality: float) -> float | None:
    if quality is None or oracle_quality - best_single <= EPS:
        return None
    return (quality - best_single) / (oracle_quality - best_single)


def pgr_curve(preference: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, PGR(x)) for x = 0, 1/n, ..., 1: the top-k prompts by `preference` go to the strong model."""
    n = len(preference)
    order = np.argsort(-preference, kind="stable")
    gain = (strong - weak)[order]
    quality = (weak.sum() + np.concatenate([[0.0], np.cumsum(gain)])) / n
    q_weak, q_strong = weak.mean(), strong.mean()
    if abs(q_strong - q_weak) < EPS:
        return np.linspace(0, 1, n + 1), np.zeros(n + 1)
    return np.linspace(0, 1, n + 1), (quality - q_weak) / (q_strong - q_weak)


def apgr(x: np.ndarray, pgr: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (pgr[1:] + pgr[:-1]) / 2))


def cpt(x: np.ndarray, pgr: np.ndarray, target: float) -> float | None:
    """The smallest share of calls to the strong model at which PGR reaches the target."""
    reached = np.nonzero(pgr >= target - EPS)[0]
    return float(x[reached[0]]) if reached.size else None


def nan_mean(values: np.ndarray, axis: int | None = None) -> Any:
    """`np.nanmean` (the same sums) without its warning on an all-NaN slice: NaN there (a model without outcomes)."""
    known = ~np.isnan(values)
    total = np.where(known, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / known.sum(axis=axis)


def choose(pred_quality: np.ndarray, pred_cost: np.ndarray, weight: float) -> np.ndarray:
    """Per prompt, the model with the best predicted quality − weight × cost / (mean predicted cost)."""
    cost = np.nan_to_num(pred_cost, nan=np.nanmax(pred_cost) if np.isfinite(pred_cost).any() else 0.0)
    scale = float(np.mean(cost)) or 1.0
    return np.argmax(pred_quality - weight * cost / scale, axis=1)


def curve(data: OutcomeSet, pred_quality: np.ndarray, pred_cost: np.ndarray) -> list[Point]:
    """The router's (mean cost, mean quality) on `data` at each cost weight of `LAMBDAS` (only 0 without costs)."""
    rows = np.arange(len(data))
    has_cost = data.has_cost and np.isfinite(pred_cost).any()
    points = []
    for weight in LAMBDAS if has_cost else (0.0,):
        chosen = choose(pred_quality, pred_cost, weight)
        quality = float(nan_mean(data.quality[rows, chosen]))
        cost = float(nan_mean(data.cost[rows, chosen])) if data.has_cost else float("nan")
        points.append(Point(cost, quality, round(weight, 6)))
    return points


def curve_aiq(data: OutcomeSet, points: Sequence[Point]) -> float | None:
    """AIQ of a curve over the single models' cost range on `data`, anchored at the cheapest model (any router can
    send everything there)."""
    test_quality = nan_mean(data.quality, axis=0)
    test_cost = nan_mean(data.cost, axis=0)
    known = np.isfinite(test_cost)
    if not known.any():
        return None
    cheapest = int(np.argmin(np.where(known, test_cost, np.inf)))
    cost_min, cost_max = float(test_cost[known].min()), float(test_cost[known].max())
    return aiq([*points, Point(cost_min, float(test_quality[cheapest]), "cheapest model")], cost_min, cost_max)


def two_model_scores(data: OutcomeSet, pred_quality: np.ndarray, strong: int) -> dict[str, float | str | None]:
    """APGR and CPT of a two-model set, the prompts ordered by the predicted gain of the strong model."""
    weak = 1 - strong
    x, pgr = pgr_curve(
        pred_quality[:, strong] - pred_quality[:, weak],
        np.nan_to_num(data.quality[:, strong]),
        np.nan_to_num(data.quality[:, weak]),
    )
    out: dict[str, float | str | None] = {"apgr": apgr(x, pgr), "strong_model": data.models[strong]}
    for target in CPT_TARGETS:
        out[f"cpt{int(target * 100)}"] = cpt(x, pgr, target)
    return out


def headline_metric(data: OutcomeSet) -> str:
    """The score a set is judged by: APGR for two models, AIQ when costs are recorded, else max quality."""
    if len(data.models) == 2:
        return "apgr"
    return "aiq" if data.has_cost else "max_quality"


def headline_score(
    data: OutcomeSet, pred_quality: np.ndarray, pred_cost: np.ndarray, train_quality: np.ndarray
) -> float:
    """`headline_metric` of predictions on `data` (higher is better; −inf when undefined); `train_quality` [n, M]
    names the best single model (the strong one of two)."""
    metric = headline_metric(data)
    if metric == "apgr":
        strong = int(np.argmax(np.nan_to_num(nan_mean(train_quality, axis=0), nan=-np.inf)))
        return float(two_model_scores(data, pred_quality, strong)["apgr"] or 0.0)
    points = curve(data, pred_quality, pred_cost)
    if metric == "aiq":
        value = curve_aiq(data, points)
        return float(value) if value is not None else -np.inf
    return max(p.quality for p in points)
