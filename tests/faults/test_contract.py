"""Contract: whatever a client sends, it gets OpenAI's error shape with the right status, never a 500, a redirect or
a retryable error for a request no retry can fix.

(The OpenAPI case, `/openapi.json` and a bounded schemathesis run, is added with issue 13 item 9.)"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from .conftest import CLIENT_KEY, Figures, Gateway, Upstream, auth_headers, chat_body

HI = '"messages": [{"role": "user", "content": "hi"}]'
BAD_BODIES = [
    (b"", "invalid_json", None),
    (b"{not json", "invalid_json", None),
    (b"\x80\x81 not UTF-8", "invalid_json", None),
    (b"[1, 2]", "invalid_json", None),
    (b'"a string"', "invalid_json", None),
    (b'{"model": "auto"}', "missing_messages", "messages"),
    (b'{"model": "auto", "messages": []}', "invalid_value", "messages"),
    (b'{"model": "auto", "messages": "hi"}', "invalid_value", "messages"),
    (b'{"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}', "invalid_value", "messages[0].role"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": 5}]}', "invalid_value", "messages[0].content"),
    (b'{"model": "auto", "messages": [{"role": "user"}]}', "invalid_value", "messages[0].content"),
    (b'{"model": "auto", "messages": [{"role": "tool", "content": "x"}]}', "invalid_value", "messages[0].tool_call_id"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "missing_model", "model"),
    (b'{"model": 3, "messages": [{"role": "user", "content": "hi"}]}', "missing_model", "model"),
    (b'{"model": "auto", %s, "temperature": "hot"}' % HI.encode(), "invalid_value", "temperature"),
    (b'{"model": "auto", %s, "temperature": NaN}' % HI.encode(), "invalid_value", "temperature"),
    (b'{"model": "auto", %s, "max_tokens": -1}' % HI.encode(), "invalid_value", "max_tokens"),
    (b'{"model": "auto", %s, "n": 1.5}' % HI.encode(), "invalid_value", "n"),
    (b'{"model": "auto", %s, "stream": "yes"}' % HI.encode(), "invalid_value", "stream"),
    (b'{"model": "auto", %s, "stream_options": {"include_usage": true}}' % HI.encode(), "invalid_value",
     "stream_options"),
    (b'{"model": "auto", %s, "stop": [1]}' % HI.encode(), "invalid_value", "stop"),
    (b'{"model": "auto", %s, "tools": "all"}' % HI.encode(), "invalid_value", "tools"),
    (b'{"model": "auto", %s, "autoroute": {"min_quality": 7}}' % HI.encode(), "invalid_value", "autoroute.min_quality"),
    (b'{"model": "auto", %s, "frobnicate": 1}' % HI.encode(), "unknown_parameter", "frobnicate"),
]  # fmt: skip


def test_contract_bad_input(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """Malformed bodies (not JSON, not UTF-8, not an object, missing or mistyped fields, out-of-range numbers, NaN,
    unknown parameters) are each a 400 with OpenAI's four error fields naming the parameter; none reaches a
    backend."""
    upstream.clear()
    for body, code, param in BAD_BODIES:
        response = httpx.post(f"{faults_gateway.base_url}/chat/completions", content=body,
                              headers={**auth_headers(), "content-type": "application/json"})  # fmt: skip
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param), body
        assert response.headers["x-should-retry"] == "false"
    assert upstream.requests() == [], "nothing reaches a backend"
    figures["bodies"] = len(BAD_BODIES)
    figures.summary = "{bodies} malformed bodies: all 400 in OpenAI's shape naming the parameter, 0 backend calls"


def test_contract_trailing_slash(faults_gateway: Gateway, figures: Figures) -> None:
    """`POST /v1/chat/completions/` and `GET /v1/models/` answer an OpenAI-style 404, never a redirect whose
    Location is built from the client's Host header, with or without a key."""
    answered = 0
    for method, path in (("POST", "/v1/chat/completions/"), ("GET", "/v1/models/"), ("POST", "/v1/feedback/")):
        for headers in ({}, auth_headers()):
            response = httpx.request(method, f"{faults_gateway.url}{path}", json=chat_body("hi"),
                                     headers={**headers, "host": "evil.example"})  # fmt: skip
            assert response.status_code == 404 and "location" not in response.headers
            assert response.json()["error"]["code"] == "not_found" and "evil.example" not in response.text
            answered += 1
    figures["requests"] = answered
    figures.summary = "{requests} slash variants: all 404, 0 redirects"


def test_contract_deep_nesting(faults_gateway: Gateway, figures: Figures) -> None:
    """100,000 nested arrays in a chat or feedback body are a 400 naming the limit (64 levels), found without
    recursing, never a 500 with a RecursionError."""
    nested = "[" * 100_000 + "]" * 100_000
    content = f'{{"model": "auto", "request_id": "r", "messages": [], "metadata": {nested}}}'
    slowest = 0.0
    for path in ("/chat/completions", "/feedback"):
        started = time.perf_counter()
        response = httpx.post(f"{faults_gateway.base_url}{path}", content=content, headers=auth_headers())
        slowest = max(slowest, time.perf_counter() - started)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "The body's JSON is nested deeper than 64 levels."
    assert "RecursionError" not in faults_gateway.log.read_text()
    figures["slowest_s"] = slowest
    figures.summary = "100k levels: 400 in {slowest_s:.2f} s at most, on chat and feedback"


def test_contract_impossible_requests(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A prompt longer than every model's context window, or `max_tokens: 1000000000`, is a 400
    `context_length_exceeded` naming `messages` or `max_tokens`, final (`x-should-retry: false`): the OpenAI SDK,
    allowed 2 retries, sends it once, and no backend is called."""
    upstream.clear()
    sent: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [sent.append]}) as http:
        sdk = openai.OpenAI(base_url=faults_gateway.base_url, api_key=CLIENT_KEY, max_retries=2, http_client=http)
        for content, params, param in (("word " * 10_000, {}, "messages"),
                                       ("hi", {"max_tokens": 1_000_000_000}, "max_tokens")):  # fmt: skip
            with pytest.raises(openai.BadRequestError) as raised:
                sdk.chat.completions.create(**chat_body(content), **params)
            error = raised.value.body
            assert isinstance(error, dict) and (error["param"], error["code"]) == (param, "context_length_exceeded")
            assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(sent) == 2, "one call each, no retry"
    assert upstream.requests() == []
    figures["requests"], figures["sent"] = 2, len(sent)
    figures.summary = (
        "{requests} requests no model can take: 400 naming the parameter, {sent} SDK calls, 0 backend calls"
    )
