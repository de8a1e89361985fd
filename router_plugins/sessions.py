"""Sessions: a conversation keeps its model while it keeps succeeding, and moves only up.

Real traffic is multi-turn, and an agent's tool loop sends every turn back to the router. Routed turn by turn, a
conversation could change model between two turns of one tool loop (exploration, a learned-router swap, a small
change of the last message): tool-call conventions break, the provider's prompt cache is lost, the agent behaves
inconsistently. So a session is routed once, and its later turns reuse that choice (`reason: session`):

- **Key.** An explicit one (`x-autoroute-session` header, `autoroute.session`, or `metadata.session_id`), or else a
  hash of the conversation's opening (its system messages and first user message): every turn of one conversation
  resends that opening. Without an explicit key, only a continuation (a request carrying an assistant or tool
  message) reuses a pin: two users sending the same single prompt are two routing decisions, not one session.
- **Exploration** therefore draws once per session, at its first turn; its propensity is that decision's.
- **Escalation, never a silent downgrade.** The pinned model is left only when it cannot take the turn (it is
  cooling down after failures, the conversation outgrew its context window, the turn needs a capability it lacks,
  it is gone from the registry) or it failed this turn and a fallback answered. The next model is then one at least
  as capable for the task (the registry's prior quality), every move is recorded with its reason, and a session
  moves at most `max_switches` times; past that it stays on its model and a failing turn falls back for that turn
  only.

The pins live in memory per process (`SessionPins`: bounded, idle ones expire); the host records each turn's session
and the decision that chose its model (`origin`), so learning counts sessions, not turns.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from .registry import ModelEntry, SessionSettings
from .routers.static_rules import CHARS_PER_TOKEN, DEFAULT_COMPLETION_TOKENS
from .types import ChatRequest, RouteDecision

SESSION_ROUTER = "session"
KeySource = Literal["explicit", "conversation"]


@dataclass(frozen=True)
class SessionKey:
    value: str
    source: KeySource


def session_key(request: ChatRequest) -> SessionKey | None:
    """The request's session: its explicit key, else the hash of its conversation's opening (None when it has no
    user message to open with)."""
    if request.session:
        return SessionKey(request.session, "explicit")
    opening: list[Any] = []
    for message in request.messages:
        if message.get("role") in ("system", "developer"):
            opening.append([message.get("role"), message.get("content")])
        elif message.get("role") == "user":
            opening.append(["user", message.get("content")])
            digest = hashlib.blake2b(json.dumps(opening, sort_keys=True, default=str).encode(), digest_size=12)
            return SessionKey(f"c-{digest.hexdigest()}", "conversation")
    return None


def is_continuation(request: ChatRequest) -> bool:
    """Whether the request continues a conversation the gateway answered before (it carries an answer or a tool
    result)."""
    return any(m.get("role") in ("assistant", "tool", "function") for m in request.messages)


@dataclass(frozen=True)
class Pin:
    """A session's model, and the decision that chose it."""

    model: str
    origin: str
    """The request id of the decision that chose `model` for this session (its first turn, or its last escalation)."""
    task: str
    switches: int = 0
    used_at: float = 0.0


class SessionPins:
    """Pins by session key: bounded (least recently used dropped first), idle ones expire. Thread-safe."""

    def __init__(self, ttl_s: float = 3600.0, max_sessions: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._pins: OrderedDict[str, Pin] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, now: float | None = None) -> Pin | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            pin = self._pins.get(key)
            if pin is None:
                return None
            if now - pin.used_at > self.ttl_s:
                del self._pins[key]
                return None
            pin = self._pins[key] = replace(pin, used_at=now)
            self._pins.move_to_end(key)
            return pin

    def put(self, key: str, pin: Pin, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._pins[key] = replace(pin, used_at=now)
            self._pins.move_to_end(key)
            while len(self._pins) > self.max_sessions:
                self._pins.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pins)


@dataclass(frozen=True)
class Turn:
    """One request of a session: its key, and the pin it found (None: its first turn, or a pin forgotten)."""

    key: SessionKey
    pin: Pin | None
    reusable: bool = False
    """Whether an earlier turn's pin applies (an explicit key, or a continuation)."""


class Sessions:
    """The host's side of sessions: which pin a request continues, and what serving it changes. The engine decides
    (`RoutingEngine.continue_session`); this remembers."""

    def __init__(self, pins: SessionPins | None = None) -> None:
        self.pins = pins if pins is not None else SessionPins()

    def open(self, request: ChatRequest, settings: SessionSettings) -> Turn | None:
        """The session of an `auto` request, with the pin it continues; None when sessions are off or it has none."""
        if not settings.enabled:
            return None
        key = session_key(request)
        if key is None:
            return None
        self.pins.ttl_s, self.pins.max_sessions = settings.idle_timeout_s, settings.max_sessions
        reusable = key.source == "explicit" or is_continuation(request)
        return Turn(key, self.pins.get(key.value) if reusable else None, reusable)

    def recall(self, turn: Turn, remembered: Mapping[str, Any] | None) -> Turn:
        """`turn` continued from what the store remembers of its session (`model`, `origin`, `task`, `switches`),
        when this process holds no pin for it: another worker or replica served its earlier turns, or it restarted."""
        if turn.pin is not None or not turn.reusable or not remembered or not remembered.get("model"):
            return turn
        pin = Pin(str(remembered["model"]), str(remembered["origin"]), str(remembered.get("task") or ""),
                  max(0, int(remembered.get("switches") or 0)))  # fmt: skip
        self.pins.put(turn.key.value, pin)
        return replace(turn, pin=pin)

    def served(
        self, turn: Turn, model: str, request_id: str, task: str, settings: SessionSettings
    ) -> tuple[str, str | None]:
        """Record that `model` answered this turn: the session's origin decision for the record, and a note for the
        decision's reason when the session moved to another model (an escalation, or a turn-only fallback)."""
        pin = turn.pin
        if pin is None:
            self.pins.put(turn.key.value, Pin(model, request_id, task))
            return request_id, None
        if model == pin.model:
            self.pins.put(turn.key.value, pin)
            return pin.origin, None
        if pin.switches >= settings.max_switches:
            self.pins.put(turn.key.value, pin)
            return request_id, f"session: {model} answered this turn only; the session stays on {pin.model}"
        self.pins.put(turn.key.value, Pin(model, request_id, task, pin.switches + 1))
        return request_id, f"session: escalated from {pin.model} to {model} (switch {pin.switches + 1})"


def why_not_keep(model: ModelEntry | None, request: ChatRequest, cooling: str | None) -> str | None:
    """Why the pinned model cannot take this turn, or None when it can."""
    if model is None:
        return "it is no longer available"
    lacking = model.lacks(request.needs)
    if lacking:
        return f"it does not take {', '.join(lacking)}"
    max_tokens = request.params.get("max_tokens") or request.params.get("max_completion_tokens")
    needed = request.prompt_chars() // CHARS_PER_TOKEN + (max_tokens or DEFAULT_COMPLETION_TOKENS)
    if needed > model.context_window:
        return f"the conversation (about {needed} tokens) outgrew its context window ({model.context_window})"
    if cooling:
        return f"it is cooling down ({cooling})"
    return None


def kept(pin: Pin, escalation: RouteDecision | None, registry_version: str) -> RouteDecision:
    """The decision of a turn that stays on its session's model. The candidates an escalation would choose among
    (models at least as capable, ranked) follow it in the fallback order, for when it fails this turn."""
    alternatives = tuple(c for c in escalation.alternatives if c.model != pin.model) if escalation else ()
    reason = f"session: kept {pin.model}, chosen by {pin.origin}"
    return RouteDecision(pin.model, reason, SESSION_ROUTER, registry_version, alternatives, 1.0)


def at_least_as_capable(models: tuple[ModelEntry, ...], pinned: ModelEntry | None, task: str) -> tuple[ModelEntry, ...]:
    """The models at least as capable for `task` as the pinned one (by the registry's prior quality); all of them
    when the pinned model is gone or none is."""
    if pinned is None:
        return models
    floor = pinned.prior_quality(task)
    better = tuple(m for m in models if m.name != pinned.name and m.prior_quality(task) >= floor)
    return better or tuple(m for m in models if m.name != pinned.name) or models


def explicit_key(headers: Mapping[str, str], extension: Mapping[str, Any], metadata: Any) -> str | None:
    """The explicit session key of a request, in order: the `x-autoroute-session` header, `autoroute.session`,
    `metadata.session_id`."""
    for value in (
        headers.get("x-autoroute-session"),
        extension.get("session"),
        metadata.get("session_id") if isinstance(metadata, Mapping) else None,
    ):
        if isinstance(value, str) and value.strip():
            return value.strip()[:200]
    return None


__all__ = [
    "SESSION_ROUTER", "Pin", "SessionKey", "SessionPins", "Sessions", "Turn", "at_least_as_capable", "explicit_key",
    "is_continuation", "kept", "session_key", "why_not_keep",
]  # fmt: skip
