"""Policies around whichever router of the chain decided: the drift guard and exploration.

Both read the win-rate router's posteriors (recent evidence per task and model). A policy takes the chain's
`Choice` and returns another; the last one's probabilities are the logging policy that off-policy evaluation needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from ..registry import ModelEntry, WinRateSettings
from ..types import ChatRequest, Classification, RouteDecision
from .winrate import WinRateRouter

THOMPSON_DRAWS = 256
"""Posterior draws per decision that estimate the Thompson-sampling choice probabilities."""
GUARD_MIN_OBSERVATIONS = 10
GUARD_MARGIN = 0.25
"""Drift guard: another router's choice is overruled when the model's recent win rate on the task is this far below
the quality that router predicted, on at least GUARD_MIN_OBSERVATIONS verdicts."""


@dataclass(frozen=True)
class Choice:
    """A decision and every candidate's probability of being chosen by the policy that made it (they sum to 1)."""

    decision: RouteDecision
    probabilities: Mapping[str, float]

    @classmethod
    def certain(cls, decision: RouteDecision) -> Choice:
        return cls(replace(decision, propensity=1.0) if decision.propensity != 1.0 else decision, {decision.model: 1.0})


class Policy(Protocol):
    name: str

    def apply(
        self, choice: Choice, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> Choice: ...


class DriftGuard:
    """When the chosen model's recent win rate on the task fell far below what the deciding router predicted (e.g.
    `learned`, which learns slowly from all history), the win rates decide instead."""

    name = "drift-guard"

    def __init__(self, winrate: WinRateRouter) -> None:
        self._winrate = winrate

    def apply(
        self, choice: Choice, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> Choice:
        decision = choice.decision
        if decision.router == self._winrate.name:
            return choice
        predicted = next((c for c in decision.alternatives if c.model == decision.model), None)
        model = next((m for m in candidates if m.name == decision.model), None)
        if predicted is None or model is None:
            return choice
        if self._winrate.observations(task.task, decision.model) < GUARD_MIN_OBSERVATIONS:
            return choice
        recent = self._winrate.cautious_quality(model, task.task)
        if recent >= predicted.quality - GUARD_MARGIN:
            return choice
        greedy = self._winrate.route(request, task, candidates)
        if greedy is None or greedy.model == decision.model:
            return choice
        reason = (
            f"drift guard: {decision.model}'s recent win rate on {task.task} is {recent:.2f}, "
            f"{decision.router} predicted {predicted.quality:.2f}; {greedy.reason}"
        )
        return Choice.certain(replace(greedy, reason=reason))


class Exploration:
    """Keep the decision or, within the `learning.winrate.exploration` budget, explore. With k candidates, each of
    the k − 1 others first gets the propensity floor (`learning.winrate.propensity_floor`, drawn uniformly: off-policy
    evaluation then has logged support for whatever another router would choose); what is left of the budget goes
    to one Thompson draw over the candidates (posterior draws in place of the quality term of their utility); the
    decision keeps the rest. When the floors alone exceed the budget they win and the decision keeps the rest (a floor
    is at most 1/k). The decision's propensity is the chosen model's probability under this mixture, and the choice
    is drawn from exactly these probabilities. A budget of 0 turns exploration off (propensity 1, no floor)."""

    name = "exploration"

    def __init__(self, winrate: WinRateRouter, budget: float, seed: int = 0,
                 floor: float = WinRateSettings.propensity_floor) -> None:  # fmt: skip
        self._winrate = winrate
        self._budget = budget
        self._floor = floor
        self._rng = np.random.default_rng(seed if seed else None)

    def apply(
        self, choice: Choice, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> Choice:
        decision = choice.decision
        by_name = {m.name: m for m in candidates}
        names = [c.model for c in decision.alternatives if c.model in by_name]
        if len(names) < 2 or decision.model not in names or self._budget == 0.0:
            return Choice(replace(decision, propensity=1.0), {decision.model: 1.0})
        others = [n for n in names if n != decision.model]
        floor = min(self._floor, 1.0 / len(names))
        floors = floor * len(others)
        thompson = max(self._budget - floors, 0.0)
        share, winners = (
            self._thompson(decision, request, task, by_name, names) if thompson else (np.zeros(len(names)), None)
        )
        probabilities = {n: (0.0 if n == decision.model else floor) + thompson * float(share[k])
                         for k, n in enumerate(names)}  # fmt: skip
        probabilities[decision.model] += 1.0 - floors - thompson
        u = float(self._rng.random())
        if winners is not None and u < thompson:  # one posterior draw, uniformly: names[k] with probability share[k]
            chosen, how = names[int(winners[self._rng.integers(len(winners))])], "Thompson sampling"
        elif u < thompson + floors:
            chosen, how = others[min(int((u - thompson) / floor), len(others) - 1)], "the propensity floor"
        else:
            chosen, how = decision.model, ""
        if chosen == decision.model:
            return Choice(replace(decision, propensity=probabilities[chosen]), probabilities)
        first = next(c for c in decision.alternatives if c.model == chosen)
        rest = tuple(c for c in decision.alternatives if c.model != chosen)
        reason = (
            f"explored by {how} ({probabilities[chosen]:.2f} chance): {chosen} instead of {decision.model}; "
            f"{decision.reason}"
        )
        explored_decision = replace(
            decision, model=chosen, alternatives=(first, *rest), propensity=probabilities[chosen], reason=reason
        )
        return Choice(explored_decision, probabilities)

    def _thompson(
        self,
        decision: RouteDecision,
        request: ChatRequest,
        task: Classification,
        by_name: Mapping[str, ModelEntry],
        names: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each candidate's share of THOMPSON_DRAWS posterior draws, and the winner of every draw."""
        scored = {c.model: c for c in decision.alternatives}
        weight = self._winrate.quality_weight(request.preference)
        posteriors = np.array([self._winrate.posterior(task.task, by_name[n]) for n in names])
        # The utility without its quality term (cost, latency, bonuses), whichever router scored the candidates.
        base = np.array([scored[n].score - weight * scored[n].quality for n in names])
        draws = self._rng.beta(posteriors[:, 0], posteriors[:, 1], size=(THOMPSON_DRAWS, len(names)))
        winners = np.argmax(base + weight * draws, axis=1)
        return np.bincount(winners, minlength=len(names)) / THOMPSON_DRAWS, winners


__all__ = ["Choice", "DriftGuard", "Exploration", "Policy"]
