"""Health-aware routing over real sockets: a backend that keeps failing (or hanging) is skipped while it cools down,
its cooldown ends in one probe, and every skip is written into the decision's reason."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai
import pytest

from .conftest import Gateway, Upstream, registry_text

THRESHOLD = 3
COOLDOWN_S = 3
DEBUG_PROMPT = "My script crashes with KeyError: 'id' when I run it"
TEST_PROMPT = "Write pytest unit tests for this function"


@pytest.fixture(scope="module")
def breaker_gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    config = registry_text(upstream).replace(
        "circuit_breaker: {enabled: false}",
        f"circuit_breaker: {{consecutive_failures: {THRESHOLD}, cooldown_s: {COOLDOWN_S}, max_cooldown_s: 60}}",
    )
    assert f"consecutive_failures: {THRESHOLD}" in config
    return start_gateway(config)


def _chat(gateway: Gateway, prompt: str) -> tuple[str, str]:
    """One request with the real client; returns the model that served it and the request id."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    response = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": prompt}]
    )
    return response.headers["x-autoroute-model"], response.headers["x-autoroute-request-id"]


def _decision(gateway: Gateway, request_id: str) -> dict:
    (row,) = gateway.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))
    return dict(row)


def _calls_to(upstream: Upstream, upstream_model: str) -> int:
    return sum(1 for r in upstream.requests() if r["model"] == upstream_model)


def _breaker_states(gateway: Gateway) -> dict[str, str]:
    return httpx.get(f"{gateway.url}/health/readiness", timeout=10).json()["circuit_breaker"]  # type: ignore[no-any-return]


def test_a_failing_model_is_skipped_after_the_threshold_then_probed(
    breaker_gateway: Gateway, upstream: Upstream
) -> None:
    upstream.clear()
    served = [_chat(breaker_gateway, DEBUG_PROMPT) for _ in range(THRESHOLD + 5)]
    assert {model for model, _ in served} == {"coder"}
    assert _calls_to(upstream, "debugger-error-500") == THRESHOLD, "tried until the breaker opened, then not at all"
    for _, request_id in served[:THRESHOLD]:
        decision = _decision(breaker_gateway, request_id)
        assert (decision["routed_model"], decision["attempts"]) == ("broken-debugger", 2)
    for _, request_id in served[THRESHOLD:]:
        decision = _decision(breaker_gateway, request_id)
        assert (decision["selected_model"], decision["attempts"]) == ("coder", 1), "served on the first attempt"
        assert (
            f"skipped broken-debugger: cooling down after {THRESHOLD} consecutive failures"
            in decision["selection_reason"]
        )
    assert _breaker_states(breaker_gateway)["broken-debugger"] == "open"

    time.sleep(COOLDOWN_S + 0.2)
    assert _breaker_states(breaker_gateway)["broken-debugger"] == "half_open"
    model, request_id = _chat(breaker_gateway, DEBUG_PROMPT)
    assert model == "coder" and _decision(breaker_gateway, request_id)["attempts"] == 2, "one probe, which fails"
    model, request_id = _chat(breaker_gateway, DEBUG_PROMPT)
    assert _decision(breaker_gateway, request_id)["attempts"] == 1
    assert "its probe included" in _decision(breaker_gateway, request_id)["selection_reason"]
    assert _calls_to(upstream, "debugger-error-500") == THRESHOLD + 1, "the threshold plus one probe"
    assert _breaker_states(breaker_gateway)["broken-debugger"] == "open", "reopened, for twice as long"


def test_a_hanging_model_stops_costing_its_timeout(breaker_gateway: Gateway) -> None:
    for _ in range(THRESHOLD):
        started = time.monotonic()
        assert _chat(breaker_gateway, TEST_PROMPT)[0] == "coder"
        assert time.monotonic() - started >= 1, "waited for hanging-tester's 1 s timeout"
    model, request_id = _chat(breaker_gateway, TEST_PROMPT)
    assert model == "coder"
    decision = _decision(breaker_gateway, request_id)
    assert decision["attempts"] == 1, "no wait for the hanging model"
    assert "skipped hanging-tester: cooling down" in decision["selection_reason"]
    rows = breaker_gateway.rows("SELECT error_class FROM model_performance WHERE model = 'hanging-tester'")
    assert [r["error_class"] for r in rows] == ["Timeout"] * THRESHOLD
    states = _breaker_states(breaker_gateway)
    assert (states["hanging-tester"], states["coder"]) == ("open", "closed")
