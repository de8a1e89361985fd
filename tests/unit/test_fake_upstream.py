"""Unit tests for the fake OpenAI-compatible upstream (in-process, no sockets)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette

from proxy import fake_upstream
from proxy.fake_upstream import InjectedStreamError, create_app

T = TypeVar("T")

LONG_TEXT = "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill"


def run(
    scenario: Callable[[httpx.AsyncClient], Awaitable[T]],
    app: Starlette | None = None,
    raise_app_exceptions: bool = True,
) -> T:
    """Run one async scenario against a (fresh unless given) app; pytest-asyncio isn't installed."""

    async def main() -> T:
        transport = httpx.ASGITransport(app=app or create_app(), raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
            return await scenario(client)

    return asyncio.run(main())


def body(model: str, text: str = "hello world", **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **params}


async def chat(client: httpx.AsyncClient, model: str, text: str = "hello world", **params: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=body(model, text, **params))


def post(model: str, text: str = "hello world", **params: Any) -> httpx.Response:
    return run(lambda c: chat(c, model, text, **params))


def sse_events(raw: str) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing on the way."""
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        assert "\n" not in block
        events.append(block[len("data: ") :])
    return events


def stream_chunks(raw: str) -> tuple[list[dict[str, Any]], bool]:
    """Parsed JSON chunks and whether the stream ended with [DONE]."""
    events = sse_events(raw)
    done = bool(events) and events[-1] == "[DONE]"
    if done:
        events = events[:-1]
    assert "[DONE]" not in events
    return [json.loads(e) for e in events], done


def content_of(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        c["delta"].get("content") or "" for chunk in chunks for c in chunk["choices"] if c["index"] == index
    )


# --- plain endpoints -----------------------------------------------------------------------------


def test_health() -> None:
    response = run(lambda c: c.get("/health"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_models_list_format() -> None:
    response = run(lambda c: c.get("/v1/models"))
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "list"
    assert len(payload["data"]) >= 3
    for entry in payload["data"]:
        assert set(entry) == {"id", "object", "created", "owned_by"}
        assert entry["object"] == "model"
        assert isinstance(entry["id"], str) and isinstance(entry["created"], int)
    assert "fake-model" in [e["id"] for e in payload["data"]]


def test_wrong_method_is_rejected() -> None:
    assert run(lambda c: c.get("/v1/chat/completions")).status_code == 405


# --- normal completions --------------------------------------------------------------------------


def test_normal_response_shape_and_deterministic_usage() -> None:
    request = {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "You are terse."},  # 14 chars -> 4 tokens
            {"role": "user", "content": "Say hello to the fake upstream"},  # 30 chars -> 8 tokens
        ],
    }

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post("/v1/chat/completions", json=request) for _ in range(2)]

    first, second = run(scenario)
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    payload = first.json()
    assert set(payload) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert payload["id"] == "chatcmpl-fake-1"
    assert payload["object"] == "chat.completion"
    assert isinstance(payload["created"], int) and abs(payload["created"] - time.time()) < 60
    assert payload["model"] == "fake-model"
    assert payload["system_fingerprint"] == "fake"
    content = "[fake-model] Say hello to the fake upstream"
    assert payload["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    prompt_tokens = (4 + 4) + (8 + 4)
    completion_tokens = math.ceil(len(content) / 4)
    assert payload["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    again = second.json()
    assert again["id"] == "chatcmpl-fake-2"
    assert again["choices"] == payload["choices"]
    assert again["usage"] == payload["usage"]


def test_model_name_is_echoed_verbatim() -> None:
    payload = post("openai/gpt-4o-mini").json()
    assert payload["model"] == "openai/gpt-4o-mini"
    assert payload["choices"][0]["message"]["content"] == "[openai/gpt-4o-mini] hello world"


def test_reply_echoes_first_200_chars_of_last_user_message() -> None:
    long_text = "x" * 250
    request = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an earlier answer"},
            {"role": "user", "content": long_text},
        ],
    }
    payload = run(lambda c: c.post("/v1/chat/completions", json=request)).json()
    assert payload["choices"][0]["message"]["content"] == "[m] " + "x" * 200


def test_content_parts_count_text_only() -> None:
    request = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "abcd"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 400}},
                    {"type": "text", "text": "efgh"},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": []},
        ],
    }
    payload = run(lambda c: c.post("/v1/chat/completions", json=request)).json()
    text = "abcd\nefgh"  # text parts are joined with a newline
    assert payload["choices"][0]["message"]["content"] == f"[m] {text}"
    assert payload["usage"]["prompt_tokens"] == (math.ceil(len(text) / 4) + 4) + (0 + 4)


def test_no_user_message_still_answers() -> None:
    request = {"model": "m", "messages": [{"role": "system", "content": "only system"}]}
    payload = run(lambda c: c.post("/v1/chat/completions", json=request)).json()
    assert payload["choices"][0]["message"]["content"] == "[m] "


def test_n_returns_suffixed_choices() -> None:
    payload = post("m", "hi", n=3).json()
    contents = [c["message"]["content"] for c in payload["choices"]]
    assert contents == ["[m] hi", "[m] hi #1", "[m] hi #2"]
    assert [c["index"] for c in payload["choices"]] == [0, 1, 2]
    assert payload["usage"]["completion_tokens"] == sum(math.ceil(len(c) / 4) for c in contents)


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates_with_length_finish(param: str) -> None:
    payload = post("m", LONG_TEXT, **{param: 3}).json()
    choice = payload["choices"][0]
    assert choice["message"]["content"] == f"[m] {LONG_TEXT}"[:12]
    assert choice["finish_reason"] == "length"
    assert payload["usage"]["completion_tokens"] == 3


def test_both_token_limits_use_the_smaller() -> None:
    payload = post("m", LONG_TEXT, max_tokens=5, max_completion_tokens=2).json()
    assert payload["choices"][0]["message"]["content"] == "[m] The "
    assert payload["choices"][0]["finish_reason"] == "length"


def test_max_tokens_above_content_length_does_not_truncate() -> None:
    payload = post("m", "short", max_tokens=100).json()
    assert payload["choices"][0]["message"]["content"] == "[m] short"
    assert payload["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("fox", "[m] The quick brown "),
        (["lazy", "brown"], "[m] The quick "),  # earliest match wins, not first listed
        (["not-there"], f"[m] {LONG_TEXT}"),
        ([], f"[m] {LONG_TEXT}"),
    ],
)
def test_stop_cuts_at_first_stop_sequence(stop: Any, expected: str) -> None:
    choice = post("m", LONG_TEXT, stop=stop).json()["choices"][0]
    assert choice["message"]["content"] == expected
    assert choice["finish_reason"] == "stop"


def test_stop_then_max_tokens() -> None:
    choice = post("m", LONG_TEXT, stop="lazy", max_tokens=2).json()["choices"][0]
    assert choice["message"]["content"] == "[m] The "
    assert choice["finish_reason"] == "length"


@pytest.mark.parametrize(
    "response_format",
    [{"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}],
)
def test_json_response_format(response_format: dict[str, Any]) -> None:
    payload = post("fake-json", "give me json", response_format=response_format).json()
    content = payload["choices"][0]["message"]["content"]
    assert json.loads(content) == {"model": "fake-json", "echo": "give me json"}
    assert payload["usage"]["completion_tokens"] == math.ceil(len(content) / 4)


def test_json_response_format_with_n_stays_parseable() -> None:
    payload = post("m", "q", n=2, response_format={"type": "json_object"}).json()
    echoes = [json.loads(c["message"]["content"])["echo"] for c in payload["choices"]]
    assert echoes == ["q", "q #1"]


def test_text_response_format_is_plain() -> None:
    payload = post("m", "q", response_format={"type": "text"}).json()
    assert payload["choices"][0]["message"]["content"] == "[m] q"


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


@pytest.mark.parametrize(
    ("tool_choice", "name"),
    [("required", "get_weather"), ({"type": "function", "function": {"name": "get_time"}}, "get_time")],
)
def test_forced_tool_call(tool_choice: Any, name: str) -> None:
    payload = post("m", "weather?", tools=TOOLS, tool_choice=tool_choice).json()
    choice = payload["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_fake_1", "type": "function", "function": {"name": name, "arguments": "{}"}}
    ]
    assert payload["usage"]["completion_tokens"] == math.ceil(len(name + "{}") / 4)


@pytest.mark.parametrize("tool_choice", [None, "auto", "none"])
def test_unforced_tools_answer_in_text(tool_choice: Any) -> None:
    params: dict[str, Any] = {"tools": TOOLS}
    if tool_choice is not None:
        params["tool_choice"] = tool_choice
    choice = post("m", "weather?", **params).json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "[m] weather?"}
    assert choice["finish_reason"] == "stop"


def test_required_tool_choice_without_tools_answers_in_text() -> None:
    choice = post("m", "hi", tool_choice="required").json()["choices"][0]
    assert choice["finish_reason"] == "stop"


def test_reports_cost() -> None:
    usage = post("acme/reports-cost-large", LONG_TEXT).json()["usage"]
    assert usage["cost"] == (usage["prompt_tokens"] + usage["completion_tokens"]) * 1e-6
    assert usage["cost"] > 0
    assert "cost" not in post("plain", LONG_TEXT).json()["usage"]


# --- injected errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "status", "error_type"),
    [
        ("fake-error-500", 500, "server_error"),
        ("openai/gpt-error-429", 429, "rate_limit_error"),
        ("error-400", 400, "invalid_request_error"),
        ("x-error-401-y", 401, "authentication_error"),
    ],
)
def test_injected_errors(model: str, status: int, error_type: str) -> None:
    response = post(model)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["param"] is None and error["code"] is None
    assert isinstance(error["message"], str) and error["message"]
    if status == 429:
        assert response.headers["retry-after"] == "1"
    else:
        assert "retry-after" not in response.headers


def test_injected_error_also_when_streaming() -> None:
    response = post("error-500", stream=True)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "server_error"


def test_require_key() -> None:
    async def scenario(client: httpx.AsyncClient) -> list[int]:
        statuses = []
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer fake-secret"}):
            response = await client.post("/v1/chat/completions", json=body("m-require-key"), headers=headers)
            statuses.append(response.status_code)
            if response.status_code == 401:
                assert response.json()["error"]["type"] == "authentication_error"
        return statuses

    assert run(scenario) == [401, 401, 200]


def test_authorization_is_ignored_for_other_models() -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/v1/chat/completions", json=body("m"), headers={"Authorization": "Bearer junk"})

    assert run(scenario).status_code == 200


def test_flaky_alternates_per_model_name() -> None:
    async def scenario(client: httpx.AsyncClient) -> list[tuple[str, int]]:
        order = ["a-flaky", "a-flaky", "b-flaky", "a-flaky", "b-flaky", "a-flaky", "b-flaky"]
        return [(m, (await chat(client, m)).status_code) for m in order]

    assert run(scenario) == [
        ("a-flaky", 500),
        ("a-flaky", 200),
        ("b-flaky", 500),
        ("a-flaky", 500),
        ("b-flaky", 200),
        ("a-flaky", 200),
        ("b-flaky", 500),
    ]


def test_flaky_failure_body_and_fresh_apps_have_fresh_counters() -> None:
    for _ in range(2):
        response = post("flaky")
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"not json", None),
        (b"\xff\xfe garbage", None),
        (b"[1, 2]", None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (json.dumps({"model": "", "messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (json.dumps({"model": "m"}).encode(), "messages"),
        (json.dumps({"model": "m", "messages": []}).encode(), "messages"),
        (json.dumps({"model": "m", "messages": "hi"}).encode(), "messages"),
        (json.dumps(body("m", n=0)).encode(), "n"),
        (json.dumps(body("m", n=True)).encode(), "n"),
        (json.dumps(body("m", max_tokens="10")).encode(), "max_tokens"),
        (json.dumps(body("m", max_completion_tokens=0)).encode(), "max_completion_tokens"),
    ],
)
def test_invalid_bodies_are_400(content: bytes, param: str | None) -> None:
    response = run(lambda c: c.post("/v1/chat/completions", content=content))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_odd_stop_values_are_ignored() -> None:
    assert post("m", "hi", stop=5).json()["choices"][0]["message"]["content"] == "[m] hi"
    assert post("m", "hi", stop=[None, "", 3]).json()["choices"][0]["message"]["content"] == "[m] hi"


# --- streaming -----------------------------------------------------------------------------------


def stream_and_plain(model: str, text: str, **params: Any) -> tuple[httpx.Response, httpx.Response]:
    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        streamed = await chat(client, model, text, stream=True, **params)
        plain = await chat(client, model, text, **params)
        return streamed, plain

    return run(scenario)


def test_stream_format_and_content_matches_non_streaming() -> None:
    streamed, plain = stream_and_plain("fake-model", LONG_TEXT)
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks, done = stream_chunks(streamed.text)
    assert done
    assert {c["id"] for c in chunks} == {"chatcmpl-fake-1"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"fake-model"}
    assert all(isinstance(c["created"], int) for c in chunks)
    assert all("usage" not in c for c in chunks)
    for chunk in chunks:
        for choice in chunk["choices"]:
            assert set(choice) == {"index", "delta", "finish_reason", "logprobs"}
            assert choice["logprobs"] is None

    first, *middle, last = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["choices"][0]["finish_reason"] is None
    assert 2 <= len(middle) <= 5  # "~5 word-group pieces"
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert last["choices"][0]["delta"] == {}
    assert last["choices"][0]["finish_reason"] == "stop"
    assert content_of(chunks) == plain.json()["choices"][0]["message"]["content"]


def test_stream_include_usage_final_chunk() -> None:
    streamed, plain = stream_and_plain("m-reports-cost", LONG_TEXT, stream_options={"include_usage": True})
    chunks, done = stream_chunks(streamed.text)
    assert done
    *body_chunks, usage_chunk = chunks
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == plain.json()["usage"]
    assert "cost" in usage_chunk["usage"]
    # OpenAI sends `usage: null` on every other chunk once include_usage is on.
    assert all("usage" in c and c["usage"] is None for c in body_chunks)
    assert body_chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_include_usage_false_has_no_usage_chunk() -> None:
    streamed, _ = stream_and_plain("m", "hi", stream_options={"include_usage": False})
    chunks, done = stream_chunks(streamed.text)
    assert done
    assert all(c["choices"] for c in chunks)


def test_stream_short_content_and_exact_whitespace() -> None:
    text = "  spaced   out\ttext \n end "
    streamed, plain = stream_and_plain("m", text)
    chunks, _ = stream_chunks(streamed.text)
    assert content_of(chunks) == plain.json()["choices"][0]["message"]["content"] == f"[m] {text}"


def test_stream_max_tokens_finish_reason_length() -> None:
    streamed, plain = stream_and_plain("m", LONG_TEXT, max_tokens=4)
    chunks, done = stream_chunks(streamed.text)
    assert done
    assert content_of(chunks) == plain.json()["choices"][0]["message"]["content"] == f"[m] {LONG_TEXT}"[:16]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_stream_n_choices() -> None:
    streamed, plain = stream_and_plain("m", "hello there", n=2)
    chunks, done = stream_chunks(streamed.text)
    assert done
    expected = [c["message"]["content"] for c in plain.json()["choices"]]
    assert [content_of(chunks, 0), content_of(chunks, 1)] == expected
    finishes = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
    assert [(f["index"], f["finish_reason"]) for f in finishes] == [(0, "stop"), (1, "stop")]


def test_stream_tool_call() -> None:
    streamed = post("m", "weather?", stream=True, tools=TOOLS, tool_choice="required")
    chunks, done = stream_chunks(streamed.text)
    assert done
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {
        "tool_calls": [
            {"index": 0, "id": "call_fake_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ]
    }
    assert deltas[2] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert len(chunks) == 3


def test_err_in_stream_raises_through_asgi_transport() -> None:
    # httpx's ASGITransport runs the whole app before returning, so an exception
    # raised mid-body surfaces from the request call itself, not from reading.
    with pytest.raises(InjectedStreamError):
        post("m-err-in-stream", LONG_TEXT, stream=True)


def test_err_in_stream_partial_body_without_done() -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await chat(client, "m-err-in-stream", LONG_TEXT, stream=True)

    # With raise_app_exceptions=False the transport hands back what was sent before the crash.
    response = run(scenario, raise_app_exceptions=False)
    assert response.status_code == 200
    chunks, done = stream_chunks(response.text)
    assert not done
    assert len(chunks) == 3  # role chunk + 2 content chunks
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert f"[m-err-in-stream] {LONG_TEXT}".startswith(content_of(chunks))
    assert len(content_of(chunks)) > 0


def test_err_in_stream_non_streaming_is_500() -> None:
    response = post("m-err-in-stream")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"


# --- misbehaviours for the fault suite (tests/faults) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "retry_after"),
    [("m-error-429", "1"), ("m-error-429-retry-after-120", "120"), ("m-error-429-no-retry-after", None)],
)
def test_rate_limit_retry_hints(model: str, retry_after: str | None) -> None:
    response = post(model)
    assert response.status_code == 429 and response.json()["error"]["type"] == "rate_limit_error"
    assert response.headers.get("retry-after") == retry_after
    if retry_after is None:
        assert "x-should-retry" not in response.headers, "no retry hint of any kind"


@pytest.mark.parametrize("stream", [False, True])
def test_garbage_is_a_200_html_page(stream: bool) -> None:
    response = post("m-garbage", stream=stream)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.text == fake_upstream.GARBAGE_BODY
    with pytest.raises(ValueError):
        response.json()


def test_not_a_completion_is_json_of_another_shape() -> None:
    assert post("m-not-a-completion").json() == {"status": "ok"}
    streamed = post("m-not-a-completion", stream=True)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert stream_chunks(streamed.text) == ([{"status": "ok"}], True)


def test_no_done_stream_is_whole_but_for_done() -> None:
    response = post("m-no-done", LONG_TEXT, stream=True, stream_options={"include_usage": True})
    chunks, done = stream_chunks(response.text)
    assert not done
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] > 0
    assert content_of(chunks) == f"[m-no-done] {LONG_TEXT}"


def test_stall_sends_the_first_chunk_then_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_upstream, "TIMEOUT_SECONDS", 0.05)
    started = time.perf_counter()
    chunks, done = stream_chunks(post("m-stall", LONG_TEXT, stream=True).text)
    assert time.perf_counter() - started >= 0.05
    assert done and chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_of(chunks) == f"[m-stall] {LONG_TEXT}"
    assert post("m-stall").status_code == 200, "a non-streamed call answers at once"


def test_the_log_says_how_each_stream_ended() -> None:
    async def scenario(client: httpx.AsyncClient) -> list[Any]:
        await chat(client, "m", stream=True)
        await chat(client, "m")
        await chat(client, "m-err-in-stream", LONG_TEXT, stream=True)
        log: list[Any] = (await client.get("/_fake/requests")).json()
        return log

    log = run(scenario, raise_app_exceptions=False)
    assert [entry.get("stream_end") for entry in log] == ["complete", None, "broken"]


# --- delays --------------------------------------------------------------------------------------


def test_slow_ms_suffix_delays_non_streaming() -> None:
    started = time.perf_counter()
    response = post("coder-slow-50")
    assert time.perf_counter() - started >= 0.05
    assert response.status_code == 200
    assert response.json()["model"] == "coder-slow-50"


def test_slow_streaming_waits_then_spreads_chunks() -> None:
    started = time.perf_counter()
    response = post("openai/coder-slow-50", LONG_TEXT, stream=True)
    # 50 ms before the first chunk plus ~50 ms spread over the content chunks.
    assert time.perf_counter() - started >= 0.1
    chunks, done = stream_chunks(response.text)
    assert done
    content_chunks = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert 6 <= len(content_chunks) <= 10
    assert content_of(chunks) == f"[openai/coder-slow-50] {LONG_TEXT}"


def test_slow_without_suffix_uses_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_upstream, "DEFAULT_SLOW_MS", 60)
    started = time.perf_counter()
    assert post("coder-slow").status_code == 200
    assert time.perf_counter() - started >= 0.06


def test_slow_error_is_delayed_too() -> None:
    started = time.perf_counter()
    assert post("slow-50-error-500", stream=True).status_code == 500
    assert time.perf_counter() - started >= 0.05


def test_timeout_model_hangs_until_client_gives_up() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(chat(client, "m-timeout"), timeout=0.1)
        # The app is still usable after the abandoned call was cancelled.
        assert (await chat(client, "m")).status_code == 200

    started = time.perf_counter()
    run(scenario)
    assert time.perf_counter() - started < 5


def test_timeout_model_answers_after_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_upstream, "TIMEOUT_SECONDS", 0.05)
    started = time.perf_counter()
    response = post("m-timeout")
    assert time.perf_counter() - started >= 0.05
    assert response.status_code == 200


def test_timeout_ends_early_when_client_disconnects() -> None:
    """Drive the ASGI app directly so the client can send http.disconnect mid-wait."""
    app = create_app()
    incoming = [{"type": "http.request", "body": json.dumps(body("m-timeout")).encode(), "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "server": ("fake", 80),
        "client": ("test", 1234),
    }
    started = time.perf_counter()
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=5))
    assert time.perf_counter() - started < 5
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 499


# --- request log ---------------------------------------------------------------------------------


def test_request_log_records_bodies_untouched() -> None:
    extra = {
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 7,
        "metadata": {"tenant": "acme"},
        "vendor_extension": [1, {"deep": True}],
    }

    async def scenario(client: httpx.AsyncClient) -> tuple[list[Any], list[Any]]:
        await chat(client, "first", "one", **extra)
        await client.post(
            "/v1/chat/completions", json=body("second-error-500", "two"), headers={"Authorization": "Bearer k"}
        )
        await client.post("/v1/chat/completions", json={"messages": []})  # invalid, still logged
        await client.post("/v1/chat/completions", content=b"not json")  # unparseable, not logged
        log = (await client.get("/_fake/requests")).json()
        cleared = await client.delete("/_fake/requests")
        assert cleared.status_code == 200
        assert cleared.json() == {"cleared": 3}
        return log, (await client.get("/_fake/requests")).json()

    log, after_clear = run(scenario)
    assert [entry["model"] for entry in log] == ["first", "second-error-500", None]
    assert log[0] == {"model": "first", "body": body("first", "one", **extra), "headers": {"authorization": False}}
    assert log[1]["headers"] == {"authorization": True}
    assert log[2]["body"] == {"messages": []}
    assert after_clear == []


def test_request_log_keeps_last_50_newest_last() -> None:
    async def scenario(client: httpx.AsyncClient) -> list[Any]:
        for i in range(55):
            await chat(client, f"m-{i}")
        log: list[Any] = (await client.get("/_fake/requests")).json()
        return log

    log = run(scenario)
    assert len(log) == 50
    assert [entry["model"] for entry in log] == [f"m-{i}" for i in range(5, 55)]


def test_apps_do_not_share_state() -> None:
    first, second = create_app(), create_app()
    run(lambda c: chat(c, "x"), app=first)
    assert run(lambda c: c.get("/_fake/requests"), app=second).json() == []
    assert len(run(lambda c: c.get("/_fake/requests"), app=first).json()) == 1


# --- serve ---------------------------------------------------------------------------------------


def test_serve_runs_uvicorn_with_expected_options(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(fake_upstream.uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    fake_upstream.serve(port=4999)
    [(app, kwargs)] = calls
    assert isinstance(app, Starlette)
    assert kwargs["host"] == "127.0.0.1"
    assert kwargs["port"] == 4999
    assert (kwargs["loop"], kwargs["http"], kwargs["log_level"]) == ("auto", "auto", "warning")
