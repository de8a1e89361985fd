"""The gateway's /openapi.json against its real answers over sockets, and GET /v1/models/{model} with the openai
client."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.openapi_contract import check_events, check_response

from .conftest import Gateway

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def document(gateway: Gateway) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_retrieve_model_with_the_openai_client(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    listed = {m.id: m for m in client.models.list()}
    for name in ("auto", "auto:quality", "auto:cost", "frontier", "keyless"):
        model = client.models.retrieve(name)
        assert model.id == name and model.object == "model" and model == listed[name]
    assert client.models.retrieve("auto").owned_by == "autoroute"
    assert client.models.retrieve("frontier").owned_by == "openai"
    for unknown in ("auto:fastest", "no-such-model"):
        with pytest.raises(openai.NotFoundError) as info:
            client.models.retrieve(unknown)
        assert info.value.code == "model_not_found" and info.value.param == "model"


def _chat(gateway: Gateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.url}{CHAT}", json=body, timeout=30)


def test_completions_streams_and_errors_match_the_document(gateway: Gateway, document: dict[str, Any]) -> None:
    user = [{"role": "user", "content": "Write a haiku about the sea."}]
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    calls = [
        ({"model": "auto", "messages": user, "n": 2}, 200),
        ({"model": "mini", "messages": user, "tools": [tool], "tool_choice": "required"}, 200),
        ({"model": "auto:cost", "messages": user, "stream": True, "stream_options": {"include_usage": True}}, 200),
        ({"model": "mini", "messages": user, "stream": True, "tools": [tool], "tool_choice": "required"}, 200),
        ({"model": "stream-breaker", "messages": user, "stream": True}, 200),  # fails after its first bytes
        ({"model": "auto", "messages": user, "temperature": 3}, 400),
        ({"model": "nope", "messages": user}, 404),
        ({"model": "keyless", "messages": user}, 503),
        ({"model": "planner-a", "messages": user}, 502),
        ({"model": "limited-writer", "messages": user}, 429),
    ]
    for body, status in calls:
        response = _chat(gateway, body)
        assert response.status_code == status, (body, response.text)
        check_response(document, "POST", CHAT, status, response.headers, response.text)
    schema = document["paths"][CHAT]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    broken = _chat(gateway, {"model": "stream-breaker", "messages": user, "stream": True})
    events = check_events(document, schema, broken.text)
    assert '"upstream_stream_error"' in events[-1] and "[DONE]" not in events


def test_feedback_answers_match_the_document(gateway: Gateway, document: dict[str, Any]) -> None:
    chat = _chat(gateway, {"model": "auto", "messages": [{"role": "user", "content": "hello"}]})
    request_id = chat.headers["x-autoroute-request-id"]
    for body, status in [
        ({"request_id": request_id, "score": 0.25, "comment": "meh"}, 200),
        ({"request_id": request_id, "thumbs": "up", "task": "chat"}, 200),
        ({"request_id": "ar-unknown", "score": 1}, 404),
        ({"request_id": request_id, "task": {}}, 400),
    ]:
        response = httpx.post(f"{gateway.base_url}/feedback", json=body)
        assert response.status_code == status, (body, response.text)
        check_response(document, "POST", "/v1/feedback", status, response.headers, response.text)
