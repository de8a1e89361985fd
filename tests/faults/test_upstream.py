"""Upstream failures: a backend that fails, hangs, cannot be reached, answers garbage, quotes its key, is rate
limited or refuses. Before the first byte the gateway falls back; a backend that keeps failing is skipped while it
cools down; what the client is told carries no secret and the retry hints the OpenAI SDK obeys."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from .conftest import (
    CARELESS_KEY,
    Figures,
    Gateway,
    Upstream,
    auth_headers,
    calls_to,
    chat_body,
    client,
    readiness,
    registry_text,
)

THRESHOLD = 3
COOLDOWN_S = 3
DEBUG_PROMPT = "My script crashes with KeyError: 'id' when I run it"
TEST_PROMPT = "Write pytest unit tests for this function"
FAILING_FIRST = [
    # prompt, the backend its rule tries first, how that backend fails
    (DEBUG_PROMPT, "broken", "InternalServerError"),
    ("Add Google-style docstrings to this module", "limited", "RateLimitError"),
    (TEST_PROMPT, "hanging", "Timeout"),
    ("Make a plan for our migration roadmap", "unreachable", "APIConnectionError"),
]


@pytest.fixture(scope="module")
def breaker_gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    """The e2e registry with the circuit breaker on: opens after 3 consecutive failures, cools down 3 s."""
    config = registry_text(upstream).replace(
        "circuit_breaker: {enabled: false}",
        f"circuit_breaker: {{consecutive_failures: {THRESHOLD}, cooldown_s: {COOLDOWN_S}, max_cooldown_s: 60}}",
    )
    assert f"consecutive_failures: {THRESHOLD}" in config
    return start_gateway(config)


def _chat(gateway: Gateway, prompt: str) -> tuple[str, str]:
    """One request with the real client; returns the model that served it and the request id."""
    raw = client(gateway).chat.completions.with_raw_response.create(**chat_body(prompt))
    return raw.headers["x-autoroute-model"], raw.headers["x-autoroute-request-id"]


def _decision(gateway: Gateway, request_id: str) -> dict:
    (row,) = gateway.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))
    return dict(row)


def _attempts(gateway: Gateway, request_id: str, count: int) -> list:
    return gateway.wait_rows(
        "SELECT * FROM model_performance WHERE request_id = ? ORDER BY attempt", (request_id,), count=count
    )


def _breaker_states(gateway: Gateway) -> dict[str, str]:
    return readiness(gateway).json()["circuit_breaker"]  # type: ignore[no-any-return]


def test_upstream_failing_backend(breaker_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A backend failing every call is tried until its breaker opens (3 consecutive failures), then skipped while an
    alternative exists, each skip written into the decision's reason; after the cooldown one half-open probe goes
    through, fails, and the breaker reopens."""
    upstream.clear()
    requests = THRESHOLD + 5
    served = [_chat(breaker_gateway, DEBUG_PROMPT) for _ in range(requests)]
    assert {model for model, _ in served} == {"coder"}
    assert calls_to(upstream, "debugger-error-500") == THRESHOLD, "tried until the breaker opened, then not at all"
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
    assert calls_to(upstream, "debugger-error-500") == THRESHOLD + 1, "the threshold plus one probe"
    assert _breaker_states(breaker_gateway)["broken-debugger"] == "open", "reopened, for twice as long"
    figures["calls"], figures["requests"] = THRESHOLD, requests
    figures["cooldown_s"], figures["after_probe"] = COOLDOWN_S, requests + 2
    figures.summary = ("{calls} calls to the failing backend for {requests} requests; after the {cooldown_s} s "
                       "cooldown, 1 probe ({after_probe} requests, {calls} + 1 calls)")  # fmt: skip


def test_upstream_hanging_backend(breaker_gateway: Gateway, figures: Figures) -> None:
    """A backend that never answers costs its timeout (1 s) until its breaker opens; then requests are served at once
    by the next candidate, and the timeouts are recorded as such."""
    waits = []
    for _ in range(THRESHOLD):
        started = time.monotonic()
        assert _chat(breaker_gateway, TEST_PROMPT)[0] == "coder"
        waits.append(time.monotonic() - started)
    assert min(waits) >= 1, "waited for hanging-tester's 1 s timeout"
    started = time.monotonic()
    model, request_id = _chat(breaker_gateway, TEST_PROMPT)
    served_in = time.monotonic() - started
    assert model == "coder"
    decision = _decision(breaker_gateway, request_id)
    assert decision["attempts"] == 1, "no wait for the hanging model"
    assert "skipped hanging-tester: cooling down" in decision["selection_reason"]
    rows = breaker_gateway.rows("SELECT error_class FROM model_performance WHERE model = 'hanging-tester'")
    assert [r["error_class"] for r in rows] == ["Timeout"] * THRESHOLD
    states = _breaker_states(breaker_gateway)
    assert (states["hanging-tester"], states["coder"]) == ("open", "closed")
    figures["calls"], figures["wait_s"], figures["served_s"] = THRESHOLD, min(waits), served_in
    figures.summary = "{calls} requests waited ≥ {wait_s:.2f} s each, then served in {served_s:.2f} s"


def test_upstream_fallback_before_first_byte(faults_gateway: Gateway, figures: Figures) -> None:
    """A backend that fails before its first byte (500, 429, a timeout, a refused connection) is followed by the next
    candidate, streamed or not: the client gets a whole answer from it, and both attempts are recorded."""
    slowest = 0.0
    for prompt, failing, error_class in FAILING_FIRST:
        for stream in (False, True):
            started = time.monotonic()
            with client(faults_gateway).chat.completions.with_streaming_response.create(
                **chat_body(prompt), stream=stream
            ) as response:
                assert response.status_code == 200
                assert response.headers["x-autoroute-model"] == "steady"
                request_id = response.headers["x-autoroute-request-id"]
                body = response.read().decode()
            slowest = max(slowest, time.monotonic() - started)
            if stream:
                assert body.rstrip().endswith("data: [DONE]") and '"model":"steady"' in body
            else:
                assert json.loads(body)["model"] == "steady"
            first, second = _attempts(faults_gateway, request_id, 2)
            assert (first["attempt"], first["model"], first["outcome"]) == (1, failing, "failure")
            assert first["error_class"] == error_class and first["cost_usd"] is None
            assert (second["attempt"], second["model"], second["outcome"]) == (2, "steady", "success")
            decision = _decision(faults_gateway, request_id)
            assert (decision["routed_model"], decision["selected_model"], decision["attempts"]) == (
                failing, "steady", 2
            )  # fmt: skip
    figures["kinds"], figures["slowest_s"] = len(FAILING_FIRST), slowest
    figures.summary = (
        "{kinds} kinds of failure × streamed or not: all served by the fallback, slowest {slowest_s:.2f} s"
    )


def test_upstream_malformed_response(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A backend answering 200 with an HTML page, or with JSON that is no completion, has failed: a named model is a
    502 `upstream_unavailable` (never a 500, nor an empty 200 stream), and `auto` falls back, streamed or not."""
    for model in ("garbage", "not-a-completion"):
        for stream in (False, True):
            response = httpx.post(f"{faults_gateway.base_url}/chat/completions",
                                  json=chat_body("hi", model, stream=stream), headers=auth_headers())  # fmt: skip
            assert response.status_code == 502, (model, stream, response.text)
            assert response.json()["error"]["code"] == "upstream_unavailable"
            assert response.headers["x-should-retry"] == "true"
    prompts = {"garbage": "Summarize this article in three bullet points: the council met on Tuesday to discuss "
               "the budget.", "not-a-completion": "Translate 'where is the station' into Spanish"}  # fmt: skip
    upstream.clear()
    for failing, prompt in prompts.items():
        for stream in (False, True):
            raw = client(faults_gateway).chat.completions.with_raw_response.create(**chat_body(prompt), stream=stream)
            assert raw.headers["x-autoroute-model"] == "steady"
            reply = raw.parse()
            text = ("".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream  # type: ignore[union-attr]
                    else reply.choices[0].message.content)  # type: ignore[union-attr]  # fmt: skip
            assert text and text.startswith("[steady]")
            first, _ = _attempts(faults_gateway, raw.headers["x-autoroute-request-id"], 2)
            assert (first["model"], first["outcome"]) == (failing, "failure")
    assert calls_to(upstream, "garbage") == calls_to(upstream, "not-a-completion") == 2
    figures["answers"] = 2 * 2 * 2
    figures.summary = "{answers} malformed 200s: 502 by name, the fallback's answer for auto, streamed or not"


def test_upstream_error_text_redacted(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A backend whose error message quotes the Authorization header and the key it carried: the client, the
    store's error_message and the log get the message with the key redacted."""
    upstream.clear()
    with pytest.raises(openai.BadRequestError) as raised:
        client(faults_gateway).chat.completions.create(**chat_body("hi", "careless"))
    assert calls_to(upstream, "careless-echo-auth") == 1, "the fake upstream was sent the key, and quoted it"
    body = raised.value.response.text
    assert raised.value.code == "upstream_rejected" and "Invalid request sent with Authorization: " in body
    request_id = raised.value.response.headers["x-autoroute-request-id"]
    (row,) = faults_gateway.wait_rows("SELECT error_message FROM model_performance WHERE request_id = ?",
                                      (request_id,))  # fmt: skip
    assert row["error_message"].startswith("Invalid request sent with Authorization: ")
    seen = 0
    for text in (body, row["error_message"], faults_gateway.log.read_text()):
        assert CARELESS_KEY not in text
        seen += 1
    figures["places"] = seen
    figures.summary = "the key quoted by the backend: in 0 of {places} places (response, store row, log)"


def test_upstream_rate_limit_exhausted(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A backend's 429 that the gateway cannot get past reaches the client with `x-should-retry: true` and a
    Retry-After: the backend's (1 s, which the OpenAI SDK then waits), capped at 30 s (from 120), or 1 s when the
    backend sent none."""
    upstream.clear()
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as raised:
        client(faults_gateway, max_retries=2).chat.completions.create(**chat_body("hi", "limited"))
    elapsed = time.monotonic() - started
    headers = raised.value.response.headers
    assert (headers["x-should-retry"], headers["retry-after"]) == ("true", "1")
    assert calls_to(upstream, "limited-error-429") == 3, "one call, then the SDK's two retries"
    # The SDK's own backoff would wait about 0.4 s then 0.9 s; the upstream's Retry-After says 1 s each time.
    assert elapsed >= 1.9
    hints = {}
    for model, upstream_model in (("limited-long", "limited-error-429-retry-after-120"),
                                  ("limited-bare", "limited-error-429-no-retry-after")):  # fmt: skip
        with pytest.raises(openai.RateLimitError) as raised:
            client(faults_gateway).chat.completions.create(**chat_body("hi", model))
        headers = raised.value.response.headers
        hints[model] = (headers["x-should-retry"], headers["retry-after"])
        assert calls_to(upstream, upstream_model) == 1
    assert hints == {"limited-long": ("true", "30"), "limited-bare": ("true", "1")}
    figures["calls"], figures["elapsed_s"] = 3, elapsed
    figures.summary = ("{calls} calls in {elapsed_s:.2f} s with max_retries=2 (Retry-After 1 obeyed); "
                       "120 s capped to 30; none sent → 1")  # fmt: skip


def test_upstream_refusal_not_retried(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """What retrying cannot fix, a backend's 400 about the request or its 401 to the gateway's credentials, is final:
    `x-should-retry: false`, so the OpenAI SDK calls once even with retries allowed."""
    for model, upstream_model, status in (("refusing", "refusing-error-400", 400),
                                          ("locked", "locked-require-key", 502)):  # fmt: skip
        upstream.clear()
        with pytest.raises(openai.APIStatusError) as raised:
            client(faults_gateway, max_retries=2).chat.completions.create(**chat_body("hi", model))
        assert raised.value.status_code == status and raised.value.response.headers["x-should-retry"] == "false"
        assert calls_to(upstream, upstream_model) == 1
    figures.summary = "1 backend call each for a 400 and a 401, with max_retries=2"
