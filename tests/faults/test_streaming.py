"""Streaming: a backend that breaks, stalls or starts too slowly, a stream without `[DONE]`, and a client that
leaves. Before the first byte the gateway falls back; after it, one `data: {"error": ...}` frame ends the stream;
the upstream stream is closed when nobody reads it any more."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from .conftest import Figures, Gateway, Upstream, auth_headers, chat_body, client, wait_until

STORY = "Tell me a long story about the sea, ships and storms, in many words."


def _upstream_entry(upstream: Upstream, upstream_model: str) -> dict:
    return next(r for r in reversed(upstream.requests()) if r["model"] == upstream_model)


def _attempt(gateway: Gateway, request_id: str) -> dict:
    (row,) = gateway.wait_rows("SELECT * FROM model_performance WHERE request_id = ?", (request_id,))
    return dict(row)


def test_streaming_error_after_first_byte(faults_gateway: Gateway, figures: Figures) -> None:
    """A backend that drops the connection mid-stream: the client gets the content so far, then exactly one error
    frame `upstream_stream_error`, no `[DONE]`; the real OpenAI client raises on it; the attempt is recorded
    `partial` and the decision re-recorded so."""
    with httpx.stream("POST", f"{faults_gateway.base_url}/chat/completions", headers=auth_headers(),
                      json=chat_body(STORY, "breaking", stream=True)) as response:  # fmt: skip
        assert response.status_code == 200
        request_id = response.headers["x-autoroute-request-id"]
        events = [line for line in response.iter_lines() if line]
    assert "data: [DONE]" not in events
    frames = [json.loads(e.removeprefix("data: ")) for e in events]
    assert [f for f in frames if "error" in f] == [frames[-1]]
    assert frames[-1]["error"]["code"] == "upstream_stream_error" and frames[-1]["error"]["type"] == "server_error"
    content = [f for f in frames[:-1] if f.get("choices") and f["choices"][0]["delta"].get("content")]
    assert content
    attempt = _attempt(faults_gateway, request_id)
    assert (attempt["outcome"], attempt["error_class"]) == ("partial", "APIConnectionError")
    assert faults_gateway.wait_rows(
        "SELECT 1 FROM routing_decisions WHERE request_id = ? AND status = 'partial'", (request_id,)
    ), "the decision is re-recorded as partial"

    stream = client(faults_gateway).chat.completions.create(**chat_body("a poem please", "breaking"), stream=True)
    with pytest.raises(openai.APIError, match="mid-stream"):
        for _ in stream:
            pass
    figures["chunks"] = len(content)
    figures.summary = "{chunks} content chunks, then 1 error frame and no [DONE]; the OpenAI client raises"


def test_streaming_client_disconnect(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A client that leaves a 5 s stream after its first chunks: the gateway closes the upstream stream at once
    (the fake upstream sees it cancelled, not read to its end), records the attempt `partial` (ClientDisconnected),
    and serves the next request."""
    upstream.clear()
    with httpx.stream("POST", f"{faults_gateway.base_url}/chat/completions", headers=auth_headers(),
                      json=chat_body(STORY, "long-stream", stream=True)) as response:  # fmt: skip
        request_id = response.headers["x-autoroute-request-id"]
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        assert _upstream_entry(upstream, "long-stream-5000")["stream_end"] == "open"
    left = time.monotonic()
    end = wait_until(lambda: _upstream_entry(upstream, "long-stream-5000")["stream_end"] != "open" and
                     _upstream_entry(upstream, "long-stream-5000")["stream_end"], timeout=10)  # fmt: skip
    closed_in = time.monotonic() - left
    assert end == "cancelled" and closed_in < 2, f"upstream stream {end} {closed_in:.2f} s after the client left"
    attempt = _attempt(faults_gateway, request_id)
    assert (attempt["outcome"], attempt["error_class"]) == ("partial", "ClientDisconnected")
    assert client(faults_gateway).chat.completions.create(**chat_body("hello!")).model == "steady"
    figures["closed_s"] = closed_in
    figures.summary = "upstream stream closed {closed_s:.2f} s after the client left (of 5 s); recorded partial"


def test_streaming_slow_first_chunk(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A backend whose stream would start after 3 s, with a 1 s timeout: the gateway stops waiting at the timeout,
    before sending anything, and streams the fallback's answer; the slow attempt is recorded as a Timeout."""
    started = time.monotonic()
    stream = client(faults_gateway).chat.completions.create(
        **chat_body("Write a short story about a lighthouse keeper"), stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    elapsed = time.monotonic() - started
    assert stream.response.headers["x-autoroute-model"] == "steady" and text.startswith("[steady]")
    assert 1 <= elapsed < 3, f"waited {elapsed:.2f} s: the slow backend's first chunk came at 3 s"
    request_id = stream.response.headers["x-autoroute-request-id"]
    first, _ = faults_gateway.wait_rows("SELECT * FROM model_performance WHERE request_id = ? ORDER BY attempt",
                                        (request_id,), count=2)  # fmt: skip
    assert (first["model"], first["outcome"], first["error_class"]) == ("slow-starter", "failure", "Timeout")
    figures["elapsed_s"] = elapsed
    figures.summary = "fallback's stream complete after {elapsed_s:.2f} s (timeout 1 s, backend's first chunk at 3 s)"


def test_streaming_stalled_stream(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A backend that sends its first chunk, then nothing: the stream ends with an error frame saying the backend
    timed out, about its 1 s timeout later; the attempt is recorded `partial` with error class Timeout, and the
    upstream stream is closed."""
    started = time.monotonic()
    stream = client(faults_gateway).chat.completions.create(**chat_body(STORY, "stalling"), stream=True)
    with pytest.raises(openai.APIError, match="mid-stream: the backend timed out"):
        for _ in stream:
            pass
    ended_in = time.monotonic() - started
    assert ended_in < 3, f"the stalled stream ended after {ended_in:.2f} s"
    attempt = _attempt(faults_gateway, stream.response.headers["x-autoroute-request-id"])
    assert (attempt["outcome"], attempt["error_class"]) == ("partial", "Timeout")
    assert wait_until(lambda: _upstream_entry(upstream, "stalling-stall")["stream_end"] == "cancelled", timeout=5)
    figures["ended_s"] = ended_in
    figures.summary = "error frame after {ended_s:.2f} s (timeout 1 s); recorded partial, Timeout"


def test_streaming_without_done(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A backend whose stream ends without `data: [DONE]` (some providers do): the client still gets a whole stream
    ending in `[DONE]`, with its finish reason and usage, and the call is recorded a success with its tokens."""
    with httpx.stream("POST", f"{faults_gateway.base_url}/chat/completions", headers=auth_headers(),
                      json=chat_body("hi there", "undone", stream=True,
                                     stream_options={"include_usage": True})) as response:  # fmt: skip
        request_id = response.headers["x-autoroute-request-id"]
        events = [line for line in response.iter_lines() if line]
    assert _upstream_entry(upstream, "undone-no-done")["stream_end"] == "complete"
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "[undone-no-done] hi there"
    assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    attempt = _attempt(faults_gateway, request_id)
    assert attempt["outcome"] == "success" and attempt["completion_tokens"] == chunks[-1]["usage"]["completion_tokens"]
    figures["chunks"] = len(chunks)
    figures.summary = "{chunks} chunks then [DONE] to the client; recorded success with its usage"
