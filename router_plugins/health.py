"""Health-aware routing: a circuit breaker per model, so a failing or hanging backend is skipped while it cools down.

Per model the breaker keeps the outcomes of the last `window` calls and the run of consecutive failures. It opens when
`consecutive_failures` calls in a row failed, or when at least `min_calls` of the window are known and the share of
failures reaches `failure_rate`. Open, the model cools down for `cooldown_s`; then it is half open: one call (the
probe) is let through. A successful probe closes the breaker; a failed one opens it again for twice as long, up to
`max_cooldown_s`. Which failures count is the caller's choice (the gateway counts timeouts, 5xx, 429 and connection
errors, never a client's own 4xx).

Pure logic with an injected clock (`now`, in monotonic seconds): the gateway owns one instance for its lifetime, so a
config reload keeps what it knows about the models that still exist.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]

BACKOFF_FACTOR = 2.0
"""Each failed probe multiplies the cooldown by this much (capped at `max_cooldown_s`)."""


@dataclass(frozen=True)
class CircuitBreakerSettings:
    """`router.circuit_breaker` in the registry."""

    enabled: bool = True
    consecutive_failures: int = 5
    """This many failed calls in a row open the breaker."""
    failure_rate: float = 0.5
    """This share of failures among the last `window` calls opens it (once `min_calls` are known)."""
    window: int = 20
    min_calls: int = 10
    cooldown_s: float = 30.0
    """How long an opened breaker keeps its model out before a probe; doubled by each failed probe."""
    max_cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("router.circuit_breaker.consecutive_failures must be >= 1")
        if not 0 < self.failure_rate <= 1:
            raise ValueError("router.circuit_breaker.failure_rate must be > 0 and <= 1")
        if self.window < 1:
            raise ValueError("router.circuit_breaker.window must be >= 1")
        if not 1 <= self.min_calls <= self.window:
            raise ValueError("router.circuit_breaker.min_calls must be >= 1 and <= window")
        if self.cooldown_s <= 0:
            raise ValueError("router.circuit_breaker.cooldown_s must be > 0")
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("router.circuit_breaker.max_cooldown_s must be >= cooldown_s")


@dataclass
class _ModelHealth:
    outcomes: deque[bool]
    consecutive: int = 0
    opened_at: float | None = None
    """When the breaker last opened; None while closed."""
    cooldown_s: float = 0.0
    why: str = ""
    probe_started: float | None = None
    """When the half-open probe was let through; None while no probe is in flight."""


class CircuitBreaker:
    """Thread-safe breaker state for every model; `allow` before a call, `record` after it."""

    def __init__(self, settings: CircuitBreakerSettings | None = None) -> None:
        self._settings = settings if settings is not None else CircuitBreakerSettings()
        self._lock = threading.Lock()
        self._models: dict[str, _ModelHealth] = {}

    @property
    def settings(self) -> CircuitBreakerSettings:
        return self._settings

    def configure(self, settings: CircuitBreakerSettings, models: Iterable[str]) -> None:
        """A (re)loaded registry: its settings apply from now on; models it no longer names are forgotten."""
        keep = set(models)
        with self._lock:
            if settings.window != self._settings.window:
                for health in self._models.values():
                    health.outcomes = deque(health.outcomes, maxlen=settings.window)
            self._settings = settings
            self._models = {name: h for name, h in self._models.items() if name in keep}

    def record(self, model: str, ok: bool, now: float) -> None:
        """The outcome of one call to `model` (ok: it answered; not ok: a failure that counts against it)."""
        settings = self._settings
        if not settings.enabled:
            return
        with self._lock:
            health = self._health(model)
            health.outcomes.append(ok)
            if ok:
                health.consecutive = 0
                if health.opened_at is not None:  # a probe (or a call tried anyway) answered: close
                    health.opened_at, health.probe_started, health.why = None, None, ""
                    health.cooldown_s = 0.0
                    health.outcomes.clear()
                return
            health.consecutive += 1
            if health.opened_at is not None:
                if health.probe_started is not None:  # the probe failed: open again, for longer
                    health.cooldown_s = min(health.cooldown_s * BACKOFF_FACTOR, settings.max_cooldown_s)
                    self._open(health, f"{health.consecutive} consecutive failures, its probe included", now)
                return
            calls, failures = len(health.outcomes), health.outcomes.count(False)
            if health.consecutive >= settings.consecutive_failures:
                why = f"{health.consecutive} consecutive failures"
            elif calls >= settings.min_calls and failures / calls >= settings.failure_rate:
                why = f"{failures} failures in its last {calls} calls"
            else:
                return
            health.cooldown_s = settings.cooldown_s
            self._open(health, why, now)

    def allow(self, model: str, now: float) -> bool:
        """Whether a call to `model` may go ahead now. In the half-open state this lets exactly one probe through
        (it takes the probe's slot): call it only right before calling the model."""
        if not self._settings.enabled:
            return True
        with self._lock:
            health = self._models.get(model)
            if health is None or health.opened_at is None:
                return True
            if now < health.opened_at + health.cooldown_s:
                return False
            # A probe that never reported (its request was cancelled) frees the slot after one more cooldown.
            if health.probe_started is not None and now < health.probe_started + health.cooldown_s:
                return False
            health.probe_started = now
            return True

    def state(self, model: str, now: float) -> BreakerState:
        with self._lock:
            return self._state(self._models.get(model), now)

    def why_cooling(self, model: str, now: float) -> str:
        """Why `model` is kept out, for a decision's reason, e.g. "cooling down after 5 consecutive failures
        (12 s left)"."""
        with self._lock:
            health = self._models.get(model)
            if health is None or health.opened_at is None:
                return "healthy"
            left = health.opened_at + health.cooldown_s - now
            if left > 0:
                return f"cooling down after {health.why} ({left:.0f} s left)"
            return f"half open after {health.why}, its probe still running"

    def snapshot(self, now: float, models: Iterable[str] = ()) -> dict[str, BreakerState]:
        """Every model's state: those named in `models` (closed when nothing is known) and those with a history."""
        with self._lock:
            names = sorted({*models, *self._models})
            return {name: self._state(self._models.get(name), now) for name in names}

    # -- internals (the lock is held) -------------------------------------------------------------------------

    def _health(self, model: str) -> _ModelHealth:
        health = self._models.get(model)
        if health is None:
            health = self._models[model] = _ModelHealth(deque(maxlen=self._settings.window))
        return health

    @staticmethod
    def _open(health: _ModelHealth, why: str, now: float) -> None:
        health.opened_at, health.why, health.probe_started = now, why, None

    def _state(self, health: _ModelHealth | None, now: float) -> BreakerState:
        if not self._settings.enabled or health is None or health.opened_at is None:
            return "closed"
        return "open" if now < health.opened_at + health.cooldown_s else "half_open"


__all__ = ["BACKOFF_FACTOR", "BreakerState", "CircuitBreaker", "CircuitBreakerSettings"]
