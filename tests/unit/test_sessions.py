"""Sessions: keys, pins, and why a pinned model cannot take a turn."""

from __future__ import annotations

from router_plugins.registry import parse_registry
from router_plugins.sessions import (
    Pin,
    SessionPins,
    at_least_as_capable,
    explicit_key,
    is_continuation,
    session_key,
    why_not_keep,
)
from router_plugins.types import ChatRequest

SYSTEM = {"role": "system", "content": "You are a coding agent."}
ASK = {"role": "user", "content": "Fix the failing test in utils.py."}
CALL = {"role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]}  # fmt: skip
RESULT = {"role": "tool", "tool_call_id": "c1", "content": "def f(): ..."}
REGISTRY = parse_registry("""
models:
  - {name: small, litellm_params: {model: openai/small}, context_window: 1000, quality: {default: 0.6, coding: 0.6}}
  - {name: big, litellm_params: {model: openai/big}, context_window: 100000, quality: {default: 0.9, coding: 0.9}}
  - {name: worse, litellm_params: {model: openai/worse}, context_window: 100000, quality: {coding: 0.4}}
""")


def _request(*messages: dict, session: str | None = None, **params: object) -> ChatRequest:
    return ChatRequest("r", "auto", messages, session=session, params=params)


def test_every_turn_of_a_conversation_has_the_key_of_its_opening() -> None:
    first = session_key(_request(SYSTEM, ASK))
    later = session_key(_request(SYSTEM, ASK, CALL, RESULT))
    other = session_key(_request(SYSTEM, {"role": "user", "content": "Write a poem."}))

    assert first is not None and first.source == "conversation"
    assert first == later and first != other
    assert session_key(_request(SYSTEM)) is None, "no user message: nothing opens a session"


def test_an_explicit_key_wins() -> None:
    key = session_key(_request(SYSTEM, ASK, session="agent-42"))

    assert key is not None and (key.value, key.source) == ("agent-42", "explicit")
    assert explicit_key({"x-autoroute-session": " s1 "}, {"session": "s2"}, {"session_id": "s3"}) == "s1"
    assert explicit_key({}, {"session": "s2"}, {"session_id": "s3"}) == "s2"
    assert explicit_key({}, {}, {"session_id": "s3"}) == "s3"
    assert explicit_key({}, {}, "not a mapping") is None


def test_only_a_continuation_reuses_an_implicit_pin() -> None:
    assert not is_continuation(_request(SYSTEM, ASK))
    assert is_continuation(_request(SYSTEM, ASK, CALL, RESULT))


def test_pins_expire_when_idle_and_are_bounded() -> None:
    pins = SessionPins(ttl_s=10, max_sessions=2)
    pins.put("a", Pin("big", "r1", "coding"), now=0)
    pins.put("b", Pin("big", "r2", "coding"), now=1)
    assert pins.get("a", now=5) is not None  # used: now the most recent
    pins.put("c", Pin("big", "r3", "coding"), now=6)

    assert pins.get("b", now=6) is None, "the least recently used went first"
    assert pins.get("a", now=14) is not None
    assert pins.get("c", now=17) is None, "idle longer than ttl_s"


def test_why_a_pinned_model_cannot_take_a_turn() -> None:
    small, big = REGISTRY.model("small"), REGISTRY.model("big")
    long_turn = _request(SYSTEM, ASK, {"role": "assistant", "content": "x" * 8000}, RESULT)

    assert why_not_keep(big, _request(SYSTEM, ASK), None) is None
    assert "outgrew its context window (1000)" in (why_not_keep(small, long_turn, None) or "")
    assert "cooling down" in (why_not_keep(big, _request(SYSTEM, ASK), "3 failures in a row") or "")
    assert why_not_keep(None, _request(SYSTEM, ASK), None) == "it is no longer available"
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
    assert why_not_keep(big, _request(image), None) == "it does not take vision"


def test_escalation_never_goes_down() -> None:
    small, big = REGISTRY.model("small"), REGISTRY.model("big")

    assert [m.name for m in at_least_as_capable(REGISTRY.models, small, "coding")] == ["big"]
    assert [m.name for m in at_least_as_capable(REGISTRY.models, big, "coding")] == ["small", "worse"], (
        "nothing is as capable: the others, best effort"
    )


def test_a_session_another_process_served_is_recalled() -> None:
    from router_plugins.registry import SessionSettings
    from router_plugins.sessions import Sessions

    sessions = Sessions()
    turn = sessions.open(_request(SYSTEM, ASK, CALL, RESULT), SessionSettings())
    assert turn is not None and turn.pin is None and turn.reusable

    recalled = sessions.recall(turn, {"model": "big", "origin": "r0", "task": "coding", "switches": 1})

    assert recalled.pin == Pin("big", "r0", "coding", 1, recalled.pin.used_at)  # type: ignore[union-attr]
    assert sessions.open(_request(SYSTEM, ASK, CALL, RESULT), SessionSettings()).pin is not None  # type: ignore[union-attr]
    first = sessions.open(_request(SYSTEM, {"role": "user", "content": "new"}), SessionSettings())
    assert first is not None and sessions.recall(first, {"model": "big", "origin": "r0"}).pin is None, (
        "a first turn is routed afresh"
    )
