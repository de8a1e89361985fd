"""Backends that fail: fallback before the first byte, one error frame after it, every attempt recorded."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from .conftest import Gateway


def _attempts(gateway: Gateway, request_id: str, count: int) -> list:
    return gateway.wait_rows(
        "SELECT * FROM model_performance WHERE request_id = ? ORDER BY attempt", (request_id,), count=count
    )


@pytest.mark.parametrize(
    ("prompt", "failing", "error_class", "served_by"),
    [
        ("My script crashes with KeyError: 'id' when I run it", "broken-debugger", "InternalServerError", "coder"),
        ("Add Google-style docstrings to this module", "limited-writer", "RateLimitError", "frontier"),
        ("Write pytest unit tests for this function", "hanging-tester", "Timeout", "coder"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_failure_before_first_byte_falls_back(
    gateway: Gateway, prompt: str, failing: str, error_class: str, served_by: str, stream: bool
) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": prompt}], stream=stream
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-autoroute-model"] == served_by
        request_id = response.headers["x-autoroute-request-id"]
        body = response.read().decode()
    if stream:
        assert body.rstrip().endswith("data: [DONE]")
        assert f'"model":"{served_by}"' in body
    else:
        assert json.loads(body)["model"] == served_by

    first, second = _attempts(gateway, request_id, 2)
    assert (first["attempt"], first["model"], first["outcome"], first["error_class"]) == (1, failing, "failure", error_class)
    assert first["cost_usd"] is None
    assert (second["attempt"], second["model"], second["outcome"]) == (2, served_by, "success")
    (decision,) = gateway.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))
    assert (decision["routed_model"], decision["selected_model"], decision["attempts"]) == (failing, served_by, 2)


def test_error_after_first_byte_is_one_error_frame(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": "Write a short story about a lighthouse keeper"}],
        stream=True,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["x-autoroute-model"] == "stream-breaker"
        request_id = response.headers["x-autoroute-request-id"]
        events = [line for line in response.iter_lines() if line]
    assert "data: [DONE]" not in events
    frames = [json.loads(e.removeprefix("data: ")) for e in events]
    assert [f for f in frames if "error" in f] == [frames[-1]]
    assert frames[-1]["error"]["code"] == "upstream_stream_error" and frames[-1]["error"]["type"] == "server_error"
    assert any(f.get("choices") and f["choices"][0]["delta"].get("content") for f in frames[:-1])

    (perf,) = _attempts(gateway, request_id, 1)
    assert perf["outcome"] == "partial" and perf["error_class"]
    rows = gateway.wait_rows(
        "SELECT status FROM routing_decisions WHERE request_id = ? AND status = 'partial'", (request_id,)
    )
    assert rows, "the decision is re-recorded as partial"


def test_openai_client_raises_on_the_error_frame(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="stream-breaker", messages=[{"role": "user", "content": "a poem please"}], stream=True
    )
    with pytest.raises(openai.APIError, match="mid-stream"):
        for _ in stream:
            pass


def test_the_same_backend_without_stream_falls_back(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    completion = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Write a short story about a lighthouse keeper"}]
    )
    assert completion.model == "frontier"


def test_every_backend_failing_gives_one_clear_error(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "Make a plan for our migration roadmap"}]},
        timeout=30,
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_unavailable"
    assert "planner-a" in error["message"] and "planner-b" in error["message"]
    request_id = response.headers["x-autoroute-request-id"]
    attempts = _attempts(gateway, request_id, 2)
    assert [(a["model"], a["outcome"]) for a in attempts] == [("planner-a", "failure"), ("planner-b", "failure")]
    (decision,) = gateway.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))
    assert decision["status"] == "failure"


def test_a_named_model_is_not_silently_replaced(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "broken-debugger", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 502
    attempts = _attempts(gateway, response.headers["x-autoroute-request-id"], 1)
    assert [a["model"] for a in attempts] == ["broken-debugger"]
