"""The learning loop in the background: win rates recomputed from the store, the learned router retrained and
promoted only on evidence, and rolled back when it does worse live. Nothing here runs on the request path.

- Aggregator: every `learning.aggregate_interval_s`, the store's recent outcomes become a new `WinRateState`,
  published to the routers at once (and written to `artifacts/winrate-current.json` for people, plugins and the
  other workers of `autoroute serve --workers N`, which read it: `follow_snapshot`).
- Trainer: every `learning.train_interval_s`, when `min_new_feedback` new scored decisions came in, a challenger
  is fitted on the older logged feedback and scored against the champion (the current learned artifact, or the
  logging policy itself when there is none) on the newest `evaluation_share`, by doubly robust off-policy
  evaluation with the logged propensities. The gate (`gate`) promotes it (new artifact version + pointer, which
  the gateway swaps in) only on evidence; either way a `learning_events` row records both scores, the effective
  sample size, the bounds and the counts. The same step rolls back a promoted version that does worse live than
  the one it replaced (`proxy.versions.check_rollback`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from router_plugins.datadir import file_stamp, write_atomically
from router_plugins.outcomes import OutcomeSet, from_feedback
from router_plugins.registry import LearningSettings, Registry
from router_plugins.routers import LearnedRouter, Router, RouterContext
from router_plugins.routers.learned import current_artifact
from router_plugins.routers.winrate import Observation, WinRateState, aggregate, load_state
from router_plugins.types import ChatRequest, Classification

from .evaluation.offpolicy import LoggedDecision, PolicyValue, evaluate_policy, mean_reward_model, on_policy_value
from .evaluation.stats import normal_quantile
from .events import LearningEvent
from .store_api import LearningStore
from .versions import FORCED, LEARNED, PROMOTION, REJECTION, check_rollback, publish

log = logging.getLogger(__name__)
T = TypeVar("T")

WINRATE_SNAPSHOT = "winrate-current.json"
MIN_EVALUATION_DECISIONS = 20
MIN_TRAINING_DECISIONS = 30
MAX_EVALUATION_DECISIONS = 5000
"""Enough for a stable off-policy estimate; replaying more through both routers only costs time."""
PROMOTION_CONFIDENCE = 0.95
"""The gate compares one-sided bounds at this level: the challenger's lower bound (DR − z·SE, z = 1.645) must beat
the champion's upper bound (DR + z·SE): both estimates err toward keeping the champion."""


class LoopStore(LearningStore, Protocol):
    """What the loop reads and writes: the learning protocol, and single decisions (their router version) for the
    live comparison of a promoted version with the one it replaced."""

    def decision(self, request_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class ChallengeResult:
    promoted: bool
    reason: str
    challenger: PolicyValue | None
    """None when there was nothing to evaluate it on."""
    champion: PolicyValue | None
    champion_version: str | None
    version: str
    """The challenger's version (saved only when promoted)."""
    path: Path | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    """What the gate checked: ESS, bounds, training outcomes of the models it would route to, the settings."""
    forced: bool = False

    @property
    def kind(self) -> str:
        return FORCED if self.forced else PROMOTION if self.promoted else REJECTION

    def scores(self) -> dict[str, Any]:
        values = {"challenger": self.challenger, "champion": self.champion}
        return {**{k: v.to_dict() for k, v in values.items() if v is not None}, "gate": self.evidence}


def compute_winrates(store: LearningStore, registry: Registry, now: float | None = None) -> WinRateState:
    now = time.time() if now is None else now
    settings = registry.learning.winrate
    rows = store.winrate_observations(now - settings.window_s)
    observations = [
        Observation(r["created_at"], r["task"], r["model"], r["quality"], r["latency_ms"], r["cost_usd"]) for r in rows
    ]
    return aggregate(observations, settings, now)


def _choices(router: Router, rows: Sequence[dict[str, Any]], registry: Registry) -> tuple[list[str], Counter[str]]:
    """What `router` would have routed each logged request to, among the candidates that request had (the logged
    model where it would not decide), and how often it decided for each model."""
    out, decided = [], Counter[str]()
    for row in rows:
        names = [a["model"] for a in row["alternatives"]] or [row["routed_model"]]
        candidates = [m for n in names if (m := registry.model(n)) is not None]
        request = ChatRequest(row["request_id"], "auto", ({"role": "user", "content": row["prompt_text"] or ""},),
                              preference=row["preference"] or registry.router.default_preference)  # fmt: skip
        decision = router.route(request, Classification(row["task"], 1.0, "logged"), candidates)
        out.append(decision.model if decision is not None else row["routed_model"])
        if decision is not None:
            decided[decision.model] += 1
    return out, decided


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


def gate(
    challenger: PolicyValue,
    champion: PolicyValue,
    outcomes: Mapping[str, int],
    routes_to: Mapping[str, int],
    settings: LearningSettings,
    margin: float,
) -> tuple[bool, list[str], dict[str, Any]]:
    """Whether the evidence promotes the challenger: (promoted, why not, what was checked).

    (a) Every model it would route to had at least `min_model_outcomes` training outcomes (fewer: the learned
    router predicts that model by its prior, which is no evidence); (b) its estimate rests on enough overlap with the
    logged decisions (ESS ≥ `min_ess`) and (c) its lower bound beats the champion's upper bound by `margin`."""
    z = normal_quantile(PROMOTION_CONFIDENCE)
    lower, upper = challenger.lower(z), champion.upper(z)
    short = {m: outcomes.get(m, 0) for m in sorted(routes_to) if outcomes.get(m, 0) < settings.min_model_outcomes}
    problems = []
    if short:
        listed = ", ".join(f"{m} {n}" for m, n in short.items())
        problems.append(f"too few training outcomes (< {settings.min_model_outcomes}) for models it would route to: "
                        f"{listed}")  # fmt: skip
    if not challenger.ess >= settings.min_ess:
        problems.append(f"ESS {challenger.ess:.1f} < {settings.min_ess:g}: it agrees with {challenger.matched} of "
                        f"{challenger.n} logged decisions, too few to rest an estimate on")  # fmt: skip
    if not lower > upper + margin:
        problems.append(f"its lower bound {lower:.4f} does not beat the champion's upper bound {upper:.4f}"
                        + (f" + margin {margin}" if margin else ""))  # fmt: skip
    evidence = {
        "confidence": PROMOTION_CONFIDENCE, "z": round(z, 4), "challenger_lower": round(lower, 4),
        "champion_upper": round(upper, 4), "margin": margin, "ess": round(challenger.ess, 1),
        "min_ess": settings.min_ess, "min_model_outcomes": settings.min_model_outcomes,
        "routes_to": dict(sorted(routes_to.items())), "outcomes": dict(sorted(outcomes.items())),
    }  # fmt: skip
    return not problems, problems, evidence


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
    `eval_rows`; promote the challenger (new artifact version + pointer) only when the gate lets it through."""
    logged = _logged(eval_rows)
    reward_model = mean_reward_model(_logged(train_rows) or logged)
    choices, routes_to = _choices(challenger, eval_rows, registry)
    challenger_value = evaluate_policy(logged, choices, reward_model)
    champion_path = current_artifact(artifacts)
    if champion_path is not None:
        champion = LearnedRouter(registry, context)
        champion.load(champion_path)
        champion_version: str | None = champion.version
        champion_value = evaluate_policy(logged, _choices(champion, eval_rows, registry)[0], reward_model)
    else:
        champion_value = on_policy_value(logged)  # no learned champion: the policy that logged the data
        champion_version = "logging-policy"
    promoted, problems, evidence = gate(challenger_value, champion_value, challenger.outcome_counts(), routes_to,
                                        registry.learning, margin)  # fmt: skip
    summary = (f"challenger DR {challenger_value.dr:.4f} (SE {challenger_value.se:.4f}, ESS "
               f"{challenger_value.ess:.1f}) vs champion {champion_value.dr:.4f} (SE {champion_value.se:.4f}) on the "
               f"newest {len(eval_rows)} logged decisions")  # fmt: skip
    reason = f"promoted: {summary}" if promoted else f"not promoted: {'; '.join(problems)} ({summary})"
    path = challenger.save(artifacts, extra={"offpolicy": challenger_value.to_dict()}) if promoted else None
    return ChallengeResult(promoted, reason, challenger_value, champion_value, champion_version, challenger.version,
                           path, evidence)  # fmt: skip


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
    """The challenge's `learning_events` row; a promoted version is first published to a shared store, so every
    replica serves it (`proxy.shared_versions`)."""
    if result.path is not None:
        publish(store, result.path.parent, LEARNED, result.version)
    event = LearningEvent(time.time(), result.kind, LearnedRouter.name, result.version, result.champion_version,
                          result.scores(), result.reason)  # fmt: skip
    store.write_batch([event])
    return event


def _one_thread(work: Callable[..., T], *args: Any) -> T:
    """Run `work` with numerical libraries on one thread: a retrain inside the gateway leaves the other core to the
    request path (BLAS would otherwise spread a fit's matrix products over both)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return work(*args)


class LearningLoop:
    """The aggregator and the trainer as asyncio tasks; the blocking work runs in threads."""

    def __init__(
        self,
        registry: Callable[[], Registry],
        store: LoopStore,
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
        self.last_rollback: LearningEvent | None = None
        self._moving = asyncio.Lock()
        """One trainer step or rollback check at a time: both may move the learned router's pointer."""
        self._snapshot_stamp: object = None

    def current(self) -> WinRateState:
        return self.state

    async def aggregate_once(self) -> WinRateState:
        registry = self._registry()
        state = await asyncio.to_thread(compute_winrates, self._store, registry)
        self.state = state
        snapshot = state.to_json().encode()
        await asyncio.to_thread(write_atomically, self._artifacts / WINRATE_SNAPSHOT, lambda h: h.write(snapshot))
        return state

    async def follow_snapshot(self) -> bool:
        """A follower's win rates (`autoroute serve --workers N`): the snapshot the leader's `aggregate_once` wrote,
        read when it changed. True when a new state was taken."""
        path = self._artifacts / WINRATE_SNAPSHOT
        stamp = file_stamp(path)
        if stamp is None or stamp == self._snapshot_stamp:
            return False
        state = await asyncio.to_thread(load_state, path)
        self._snapshot_stamp = stamp
        if state is None:  # half-written cannot happen (atomic rename); unreadable: the next one will do
            log.warning("the win-rate snapshot %s cannot be read", path)
            return False
        self.state = state
        return True

    async def train_once(self) -> ChallengeResult | None:
        context = self._context()
        if context is None or context.static_embed is None:
            return None  # the learned router reads the static table: wait until it is built
        registry = self._registry()
        async with self._moving:
            result = await asyncio.to_thread(_one_thread, challenge, registry, self._store, self._artifacts, context)
            if result is None:
                return None
            self.last_challenge = result
            event = await asyncio.to_thread(record_challenge, self._store, result)
        log.info("learned router %s: %s", event.kind, result.reason)
        return result

    async def check_rollback(self) -> LearningEvent | None:
        """Roll the learned router back to the version the last promotion replaced when that one did better live
        (`proxy.versions.check_rollback`); off with `learning.auto_rollback: false`."""
        if not self._registry().learning.auto_rollback:
            return None
        async with self._moving:
            event = await asyncio.to_thread(check_rollback, self._store, self._artifacts)
        if event is not None:
            self.last_rollback = event
            log.warning("learned router rolled back to %s: %s", event.version, event.reason)
        return event

    def aggregate_interval_s(self) -> float:
        return self._registry().learning.aggregate_interval_s

    def train_interval_s(self) -> float:
        return self._registry().learning.train_interval_s or 60.0

    async def train_when_due(self) -> ChallengeResult | None:
        """The trainer's step: roll back a promoted version that does worse live, then train and judge a challenger
        when training is on and enough new feedback came in."""
        try:
            await self.check_rollback()
        except Exception:  # noqa: BLE001 - a failed live comparison must not stop training; it is retried next step
            log.exception("the live comparison of the promoted learned router failed")
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
