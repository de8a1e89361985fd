"""The learning loop in the background: win rates recomputed from the store, the learned router retrained and
promoted only when it beats the champion off-policy. Nothing here runs on the request path.

- Aggregator: every `learning.aggregate_interval_s`, the store's recent outcomes become a new `WinRateState`,
  published to the routers at once (and written to `artifacts/winrate-current.json` for people and plugins).
- Trainer: every `learning.train_interval_s`, when `min_new_feedback` new scored decisions came in, a challenger
  is fitted on the older logged feedback and scored against the champion (the current learned artifact, or the
  logging policy itself when there is none) on the newest `evaluation_share`, by doubly robust off-policy
  evaluation with the logged propensities. A better challenger is promoted (new artifact version + pointer, which
  the gateway swaps in); either way a `learning_events` row records both scores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_plugins.datadir import write_atomically
from router_plugins.outcomes import OutcomeSet, from_feedback
from router_plugins.registry import Registry
from router_plugins.routers import LearnedRouter, Router, RouterContext
from router_plugins.routers.learned import current_artifact
from router_plugins.routers.winrate import Observation, WinRateState, aggregate
from router_plugins.types import ChatRequest, Classification

from .evaluation.offpolicy import LoggedDecision, PolicyValue, evaluate_policy, mean_reward_model
from .events import LearningEvent
from .store_api import LearningStore

log = logging.getLogger(__name__)

WINRATE_SNAPSHOT = "winrate-current.json"
MIN_EVALUATION_DECISIONS = 20
MIN_TRAINING_DECISIONS = 30
MAX_EVALUATION_DECISIONS = 5000
"""Enough for a stable off-policy estimate; replaying more through both routers only costs time."""


@dataclass(frozen=True)
class ChallengeResult:
    promoted: bool
    reason: str
    challenger: PolicyValue
    champion: PolicyValue
    champion_version: str | None
    path: Path | None = None

    def scores(self) -> dict[str, Any]:
        return {"challenger": self.challenger.to_dict(), "champion": self.champion.to_dict()}


def compute_winrates(store: LearningStore, registry: Registry, now: float | None = None) -> WinRateState:
    now = time.time() if now is None else now
    settings = registry.learning.winrate
    rows = store.winrate_observations(now - settings.window_s)
    observations = [
        Observation(r["created_at"], r["task"], r["model"], r["quality"], r["latency_ms"], r["cost_usd"]) for r in rows
    ]
    return aggregate(observations, settings, now)


def _choices(router: Router, rows: Sequence[dict[str, Any]], registry: Registry) -> list[str]:
    """What `router` would have routed each logged request to, among the candidates that request had."""
    out = []
    for row in rows:
        names = [a["model"] for a in row["alternatives"]] or [row["routed_model"]]
        candidates = [m for n in names if (m := registry.model(n)) is not None]
        request = ChatRequest(row["request_id"], "auto", ({"role": "user", "content": row["prompt_text"] or ""},),
                              preference=row["preference"] or registry.router.default_preference)  # fmt: skip
        decision = router.route(request, Classification(row["task"], 1.0, "logged"), candidates)
        out.append(decision.model if decision is not None else row["routed_model"])
    return out


def _logged(rows: Sequence[dict[str, Any]]) -> list[LoggedDecision]:
    return [
        LoggedDecision(r["task"], r["routed_model"], float(r["propensity"] or 1.0), float(r["quality"])) for r in rows
    ]


def split_logged(store: LearningStore, share: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Logged scored decisions, oldest first, split into (older: to train on, newest `share`, at most
    MAX_EVALUATION_DECISIONS: to evaluate on)."""
    rows = [r for r in store.logged_decisions() if r["prompt_text"] and r["task"]]
    split = max(int(len(rows) * (1 - share)), len(rows) - MAX_EVALUATION_DECISIONS)
    return rows[:split], rows[split:]


def logged_outcomes(rows: Sequence[dict[str, Any]], models: Sequence[str]) -> OutcomeSet:
    """Logged decisions as training outcomes: one known outcome (the model that served) per prompt."""
    keys = {"request_id": "request_id", "prompt_text": "prompt_text", "task": "task", "model": "selected_model",
            "quality": "quality", "cost_usd": "cost_usd"}  # fmt: skip
    return from_feedback([{name: r[column] for name, column in keys.items()} for r in rows], models)


def judge(
    challenger: LearnedRouter,
    registry: Registry,
    train_rows: Sequence[dict[str, Any]],
    eval_rows: Sequence[dict[str, Any]],
    artifacts: Path,
    context: RouterContext,
    margin: float,
) -> ChallengeResult:
    """Score the challenger and the champion (the current artifact, else the logging policy) off-policy on
    `eval_rows`; promote the challenger (new artifact version + pointer) only when it is better by `margin`."""
    logged = _logged(eval_rows)
    reward_model = mean_reward_model(_logged(train_rows) or logged)
    challenger_value = evaluate_policy(logged, _choices(challenger, eval_rows, registry), reward_model)
    champion_path = current_artifact(artifacts)
    if champion_path is not None:
        champion = LearnedRouter(registry, context)
        champion.load(champion_path)
        champion_version: str | None = champion.version
        champion_value = evaluate_policy(logged, _choices(champion, eval_rows, registry), reward_model)
    else:
        # No learned champion: the policy that logged the data, valued on-policy (its mean reward).
        mean = sum(d.reward for d in logged) / len(logged)
        champion_value = PolicyValue(mean, mean, mean, len(logged), len(logged))
        champion_version = "logging-policy"
    better = challenger_value.dr > champion_value.dr + margin
    reason = (f"challenger DR {challenger_value.dr:.4f} vs champion {champion_value.dr:.4f} on the newest "
              f"{len(eval_rows)} logged decisions (margin {margin})")  # fmt: skip
    path = challenger.save(artifacts, extra={"offpolicy": challenger_value.to_dict()}) if better else None
    return ChallengeResult(better, reason, challenger_value, champion_value, champion_version, path)


def challenge(
    registry: Registry,
    store: LearningStore,
    artifacts: Path,
    context: RouterContext,
    evaluation_share: float | None = None,
    margin: float | None = None,
) -> ChallengeResult | None:
    """Fit a challenger on older logged feedback, score it and the champion on the newest, promote the better.

    Returns None when there is too little logged feedback to decide.
    """
    settings = registry.learning
    share = settings.evaluation_share if evaluation_share is None else evaluation_share
    train_rows, eval_rows = split_logged(store, share)
    if len(train_rows) < MIN_TRAINING_DECISIONS or len(eval_rows) < MIN_EVALUATION_DECISIONS:
        return None
    challenger = LearnedRouter(registry, context)
    challenger.fit(logged_outcomes(train_rows, [m.name for m in registry.models]))
    challenger.fit_latency(store.latency_samples())
    margin = settings.promotion_margin if margin is None else margin
    return judge(challenger, registry, train_rows, eval_rows, artifacts, context, margin)


def record_challenge(store: LearningStore, result: ChallengeResult) -> LearningEvent:
    event = LearningEvent(
        time.time(), "promotion" if result.promoted else "rejection", LearnedRouter.name,
        result.path.stem.removeprefix("learned-") if result.path else "(not saved)", result.champion_version,
        result.scores(), result.reason,
    )  # fmt: skip
    store.write_batch([event])
    return event


class LearningLoop:
    """The aggregator and the trainer as asyncio tasks; the blocking work runs in threads."""

    def __init__(
        self,
        registry: Callable[[], Registry],
        store: LearningStore,
        artifacts: Path,
        context: Callable[[], RouterContext | None],
    ) -> None:
        self._registry = registry
        self._store = store
        self._artifacts = artifacts
        self._context = context
        self.state = WinRateState()
        self.trained_at_feedback = 0
        self.last_challenge: ChallengeResult | None = None

    def current(self) -> WinRateState:
        return self.state

    async def aggregate_once(self) -> WinRateState:
        registry = self._registry()
        state = await asyncio.to_thread(compute_winrates, self._store, registry)
        self.state = state
        snapshot = state.to_json().encode()
        await asyncio.to_thread(write_atomically, self._artifacts / WINRATE_SNAPSHOT, lambda h: h.write(snapshot))
        return state

    async def train_once(self) -> ChallengeResult | None:
        context = self._context()
        if context is None or context.static_embed is None:
            return None  # the learned router reads the static table: wait until it is built
        registry = self._registry()
        result = await asyncio.to_thread(challenge, registry, self._store, self._artifacts, context)
        if result is None:
            return None
        self.last_challenge = result
        event = await asyncio.to_thread(record_challenge, self._store, result)
        log.info("learned router %s: %s", event.kind, result.reason)
        return result

    def aggregate_interval_s(self) -> float:
        return self._registry().learning.aggregate_interval_s

    def train_interval_s(self) -> float:
        return self._registry().learning.train_interval_s or 60.0

    async def train_when_due(self) -> ChallengeResult | None:
        """The trainer's step: train and judge a challenger when training is on and enough new feedback came in."""
        settings = self._registry().learning
        if not settings.train_interval_s:
            return None
        scored = len(await asyncio.to_thread(self._store.logged_decisions))
        if scored - self.trained_at_feedback < settings.min_new_feedback:
            return None
        result = await self.train_once()
        if result is not None:
            self.trained_at_feedback = scored
        return result
