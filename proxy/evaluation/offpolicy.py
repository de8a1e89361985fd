"""Off-policy evaluation: what a new router would have earned on traffic another policy routed.

Every logged decision carries the propensity of the model it routed to (the probability the logging policy gave
that model). A deterministic candidate policy is scored by replaying each logged request through it:
- IPS: mean of 1[π(x) = a]·r / p (the weight 1/p clipped at MAX_WEIGHT), unbiased when propensities are right, high
  variance when they are small;
- SNIPS: the same, normalised by the sum of the importance weights (lower variance, slightly biased);
- DR (doubly robust): mean of q̂(x, π(x)) + 1[π(x) = a]·(r − q̂(x, a)) / p, with q̂ a reward model (here per task
  and model means from older data): unbiased if either the propensities or q̂ are right.

How much logged evidence an estimate rests on is its effective sample size, ESS = (Σw)² / Σw² over the unclipped
importance weights w = 1[π(x) = a] / p: n when the policy agrees with every logged action at equal propensities,
about the number of agreements when they are few. A DR value far from any logged agreement is the reward model's
guess, whatever its standard error says; the promotion gate (`proxy.learning`) requires both a large ESS and a
lower confidence bound (DR − z·SE, SE the standard error of the mean of the per-decision DR terms) above the
champion's upper bound.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RewardModel = Callable[[str, str], float]
"""q̂(task, model): the expected reward of `model` on `task`."""


@dataclass(frozen=True)
class LoggedDecision:
    task: str
    model: str
    """What the logging policy routed to."""
    propensity: float
    reward: float


@dataclass(frozen=True)
class PolicyValue:
    dr: float
    ips: float
    snips: float
    matched: int
    """Logged decisions where the candidate policy agrees with what was logged."""
    n: int
    se: float = 0.0
    """Standard error of `dr` (of the mean of its per-decision terms)."""
    ess: float = 0.0
    """Effective sample size of the unclipped importance weights: how many logged decisions `dr` is worth."""

    def lower(self, z: float) -> float:
        """One-sided lower confidence bound of `dr` at the normal quantile z (1.645: 95 %)."""
        return self.dr - z * self.se

    def upper(self, z: float) -> float:
        return self.dr + z * self.se

    def to_dict(self) -> dict[str, float | int]:
        return {"dr": round(self.dr, 4), "ips": round(self.ips, 4), "snips": round(self.snips, 4),
                "se": round(self.se, 4), "ess": round(self.ess, 1), "matched": self.matched, "n": self.n}  # fmt: skip


MAX_WEIGHT = 10.0
"""Importance weights are clipped here: one logged decision with a tiny propensity must not decide the estimate
(a little bias for much less variance, as is usual for IPS and DR)."""


def evaluate_policy(
    logged: Sequence[LoggedDecision], choices: Sequence[str], reward_model: RewardModel, max_weight: float = MAX_WEIGHT
) -> PolicyValue:
    """The value of a policy that would have chosen `choices[i]` for `logged[i]` (weights clipped at `max_weight`)."""
    if len(logged) != len(choices):
        raise ValueError("one choice per logged decision")
    if not logged:
        return PolicyValue(0.0, 0.0, 0.0, 0, 0)
    match = np.array([c == d.model for d, c in zip(logged, choices)], dtype=np.float64)
    propensity = np.array([max(d.propensity, 1e-6) for d in logged])
    reward = np.array([d.reward for d in logged])
    unclipped = match / propensity
    weight = np.minimum(unclipped, max_weight)
    q_chosen = np.array([reward_model(d.task, c) for d, c in zip(logged, choices)])
    q_logged = np.array([reward_model(d.task, d.model) for d in logged])
    ips = float(np.mean(weight * reward))
    snips = float(np.sum(weight * reward) / np.sum(weight)) if weight.sum() > 0 else 0.0
    terms = q_chosen + weight * (reward - q_logged)
    return PolicyValue(float(np.mean(terms)), ips, snips, int(match.sum()), len(logged), _standard_error(terms),
                       effective_sample_size(unclipped))  # fmt: skip


def on_policy_value(logged: Sequence[LoggedDecision]) -> PolicyValue:
    """The value of the policy that logged the data: its mean reward (every weight 1, so ESS = n)."""
    if not logged:
        return PolicyValue(0.0, 0.0, 0.0, 0, 0)
    reward = np.array([d.reward for d in logged])
    mean = float(np.mean(reward))
    return PolicyValue(mean, mean, mean, len(logged), len(logged), _standard_error(reward), float(len(logged)))


def effective_sample_size(weights: Sequence[float] | np.ndarray) -> float:
    """(Σw)² / Σw² (Kish): n for equal weights, less the more a few weights dominate; 0 without any weight."""
    w = np.asarray(weights, dtype=np.float64)
    squares = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / squares if squares > 0 else 0.0


def _standard_error(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("inf")


def mean_reward_model(logged: Sequence[LoggedDecision], prior_weight: float = 2.0) -> RewardModel:
    """q̂(task, model): the mean reward per (task, model), shrunk toward the model's mean, then the overall mean."""
    overall = float(np.mean([d.reward for d in logged])) if logged else 0.5
    by_model: dict[str, list[float]] = defaultdict(list)
    by_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
    for d in logged:
        by_model[d.model].append(d.reward)
        by_pair[d.task, d.model].append(d.reward)
    model_mean = {m: (sum(r) + prior_weight * overall) / (len(r) + prior_weight) for m, r in by_model.items() if r}

    def q(task: str, model: str) -> float:
        base = model_mean.get(model, overall)
        rewards = by_pair.get((task, model), [])
        if not rewards:
            return base
        return (sum(rewards) + prior_weight * base) / (len(rewards) + prior_weight)

    return q
