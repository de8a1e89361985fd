"""A time window of the store, read once: its requests, each with its attempts and its feedback.

Every analysis in `proxy.analytics` is a pure function of a `WindowData`; only `load_window` reads the store.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_WINDOW_S = 24 * 3600.0
MAX_REQUESTS = 200_000
"""Decisions one window reads at most (the newest); `WindowData.truncated` says when more were there."""
SUCCESS = "success"


class AnalyticsStore(Protocol):
    """What the analyses read (either back end's store has all of it)."""

    def window_decisions(self, since: float, until: float, limit: int = 200_000) -> list[dict[str, Any]]: ...

    def window_attempts(self, since: float, until: float, limit: int = 1_000_000) -> list[dict[str, Any]]: ...

    def ab_outcomes(self, since: float | None = None) -> list[dict[str, Any]]: ...

    def learning_events(self, limit: int = 1000) -> list[dict[str, Any]]: ...

    def labelled_outcomes(self, limit: int = 200_000) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Window:
    """[since, until) in Unix seconds."""

    since: float
    until: float

    @classmethod
    def last(cls, seconds: float = DEFAULT_WINDOW_S, now: float | None = None) -> Window:
        now = time.time() if now is None else now
        return cls(now - seconds, now)

    @property
    def seconds(self) -> float:
        return self.until - self.since

    def __contains__(self, moment: float) -> bool:
        return self.since <= moment < self.until

    def to_dict(self) -> dict[str, float]:
        return {"since": self.since, "until": self.until}


@dataclass(frozen=True)
class Attempt:
    """One call to one backend (a `model_performance` row)."""

    request_id: str
    created_at: float
    attempt: int
    model: str
    outcome: str
    """`success`, `failure`, `partial` (a stream broke) or `cancelled` (cut at shutdown)."""
    latency_ms: float | None
    ttft_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    error_class: str | None

    @property
    def success(self) -> bool:
        return self.outcome == SUCCESS


@dataclass(frozen=True)
class Request:
    """One routed request: its decision, its attempts in order and a summary of its feedback."""

    request_id: str
    created_at: float
    requested_model: str
    preference: str | None
    task: str | None
    confidence: float | None
    layer: str | None
    """The classifier layer whose answer was taken (`fallback` when none was sure)."""
    layer_attempts: tuple[Mapping[str, Any], ...]
    selected_model: str | None
    """The model that served (after any fallback)."""
    routed_model: str | None
    """The router's first choice."""
    predicted_quality: float | None
    """The router's predicted quality (success probability) of its first choice, from the decision's alternatives."""
    router: str | None
    router_version: str | None
    propensity: float | None
    status: str | None
    ab_arm: str | None
    language: str | None
    feedback_score: float | None
    """The mean explicit score (0..1) sent for it; None without one."""
    feedback_scores: int
    feedback_task: str | None
    """The task its feedback said it really was (the newest that named one)."""
    attempts: tuple[Attempt, ...] = ()

    @property
    def success(self) -> bool:
        return self.status == SUCCESS

    @property
    def cost_usd(self) -> float | None:
        """Summed over its attempts; None when no attempt had a known cost."""
        known = [a.cost_usd for a in self.attempts if a.cost_usd is not None]
        return math.fsum(known) if known else None

    @property
    def latency_ms(self) -> float | None:
        """Of its last attempt (the one that answered, or the last that failed)."""
        return self.attempts[-1].latency_ms if self.attempts else None


@dataclass(frozen=True)
class WindowData:
    window: Window
    requests: tuple[Request, ...]
    """Oldest first."""
    truncated: bool = False
    """More decisions were in the window than were read: the oldest were left out."""

    @property
    def attempts(self) -> list[Attempt]:
        return [a for r in self.requests for a in r.attempts]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _predicted_quality(alternatives: Sequence[Any], model: str | None) -> float | None:
    for alternative in alternatives:
        if isinstance(alternative, Mapping) and alternative.get("model") == model:
            return _float(alternative.get("quality"))
    return None


def build_window(window: Window, decisions: Sequence[Mapping[str, Any]], attempts: Sequence[Mapping[str, Any]],
                 truncated: bool = False) -> WindowData:  # fmt: skip
    """A `WindowData` from the rows of `window_decisions` and `window_attempts` (any order)."""
    by_request: dict[str, list[Attempt]] = {}
    for row in attempts:
        attempt = Attempt(str(row["request_id"]), float(row["created_at"]), int(row["attempt"] or 1), str(row["model"]),
                          str(row["outcome"]), _float(row["latency_ms"]), _float(row["ttft_ms"]),
                          row["prompt_tokens"], row["completion_tokens"], _float(row["cost_usd"]),
                          row["error_class"])  # fmt: skip
        by_request.setdefault(attempt.request_id, []).append(attempt)
    requests = []
    for row in decisions:
        mine = tuple(sorted(by_request.get(row["request_id"], ()), key=lambda a: (a.attempt, a.created_at)))
        requests.append(Request(
            request_id=str(row["request_id"]), created_at=float(row["created_at"]),
            requested_model=str(row["requested_model"]), preference=row["preference"], task=row["task"],
            confidence=_float(row["task_confidence"]), layer=row["classification_layer"],
            layer_attempts=tuple(a for a in row["layer_attempts"] or () if isinstance(a, Mapping)),
            selected_model=row["selected_model"], routed_model=row["routed_model"],
            predicted_quality=_predicted_quality(row["alternatives"] or (), row["routed_model"]),
            router=row["router_name"], router_version=row["router_version"], propensity=_float(row["propensity"]),
            status=row["status"], ab_arm=row["ab_arm"], language=row["language"],
            feedback_score=_float(row["feedback_score"]), feedback_scores=int(row["feedback_scores"] or 0),
            feedback_task=row["feedback_task"], attempts=mine,
        ))  # fmt: skip
    requests.sort(key=lambda r: (r.created_at, r.request_id))
    return WindowData(window, tuple(requests), truncated)


def load_window(store: AnalyticsStore, window: Window, limit: int = MAX_REQUESTS) -> WindowData:
    """The window's requests with their attempts and feedback: two reads of the store."""
    decisions = store.window_decisions(window.since, window.until, limit)
    truncated = len(decisions) >= limit
    # Truncated: the attempts of exactly the decisions read, i.e. from the oldest of them on.
    since = min(float(d["created_at"]) for d in decisions) if truncated and decisions else window.since
    attempts = store.window_attempts(since, window.until)
    data = build_window(window, decisions, attempts, truncated)
    if truncated:
        data = dataclasses.replace(data, window=Window(since, window.until))
    return data
