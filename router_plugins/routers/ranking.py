"""The one ranking: every router's predictions become a decision here, by the preference's utility.

    utility = w_q·quality − w_c·cost / dearest − w_l·latency / slowest + bonus

over the candidates of one decision. An unknown cost counts as the dearest known one (a cost-aware preference must
never favour a model because its price is unknown) and an unknown latency as the slowest known one. Ties go to the
lower `tiebreak` (e.g. a rule's priority), then to the earlier candidate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..registry import PreferenceWeights
from ..types import COST_PER_1K_TOKENS, ChatRequest, Classification, RouteDecision, ScoredCandidate


@dataclass(frozen=True, slots=True)
class Estimate:
    """A router's prediction for one candidate. `cost` may be in any unit shared by the candidates of one decision
    (price per 1k tokens, expected USD per request); None or NaN: unknown."""

    model: str
    quality: float
    cost: float | None = None
    latency_ms: float | None = None
    bonus: float = 0.0
    note: str = ""
    tiebreak: int = 0


@dataclass(frozen=True, slots=True)
class Estimates:
    """What a router predicts for the candidates it can serve, and where they came from (for the reason)."""

    options: tuple[Estimate, ...]
    source: str = ""
    """Appended to the reason in parentheses, e.g. `rule for math`."""
    notes: tuple[str, ...] = ()
    """Appended to the reason after the ranking, e.g. `task uncertain`."""
    cost_unit: str = COST_PER_1K_TOKENS
    """What the options' `cost` is in (`types.COST_PER_1K_TOKENS` or `types.COST_PER_REQUEST`): said in receipts."""


def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def rank(
    estimates: Sequence[Estimate], weights: PreferenceWeights, cost_unit: str = COST_PER_1K_TOKENS
) -> tuple[ScoredCandidate, ...]:
    """The candidates by utility, best first (the fallback order)."""
    costs = [e.cost for e in estimates if _known(e.cost)]
    latencies = [e.latency_ms for e in estimates if _known(e.latency_ms)]
    dearest = max(costs, default=0.0) or 1.0  # type: ignore[type-var]
    slowest = max(latencies, default=0.0) or 1.0  # type: ignore[type-var]
    scored = []
    for index, e in enumerate(estimates):
        cost = e.cost if _known(e.cost) else None
        latency = e.latency_ms if _known(e.latency_ms) else None
        utility = (
            weights.quality_weight * e.quality
            - weights.cost_weight * (cost if cost is not None else dearest) / dearest
            - weights.latency_weight * (latency if latency is not None else slowest) / slowest
            + e.bonus
        )
        candidate = ScoredCandidate(e.model, utility, e.quality, cost, latency, e.note, cost_unit)
        scored.append(((round(-utility, 9), e.tiebreak, index), candidate))
    scored.sort(key=lambda item: item[0])
    return tuple(candidate for _, candidate in scored)


def decide(
    router: str,
    version: str,
    label: str,
    estimates: Estimates | None,
    request: ChatRequest,
    task: Classification,
    weights: PreferenceWeights,
) -> RouteDecision | None:
    """The decision a router's estimates lead to under the request's preference; None when it has no options."""
    if estimates is None or not estimates.options:
        return None
    ranked = rank(estimates.options, weights, estimates.cost_unit)
    best = ranked[0]
    reason = f"{label}, {request.preference}: {best.model} has the best utility for {task.task} among {len(ranked)}"
    if estimates.source:
        reason += f" ({estimates.source})"
    reason = "; ".join((reason, *estimates.notes))
    return RouteDecision(best.model, reason, router, version, ranked, 1.0)


__all__ = ["Estimate", "Estimates", "decide", "rank"]
