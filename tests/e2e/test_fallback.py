"""Backends that fail: fallback before the first byte, one error frame after it, every attempt recorded."""

from __future__ import annotations

import httpx
import openai

from .conftest import Gateway


def _attempts(gateway: Gateway, request_id: str, count: int) -> list:
    return gateway.wait_rows(
        "SELECT * FROM model_performance WHERE request_id = ? ORDER BY attempt", (request_id,), count=count
    )


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
