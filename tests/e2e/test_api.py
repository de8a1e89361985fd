"""Feedback, models, health, bad input and auth, over real sockets."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import openai
import pytest

from .conftest import Gateway, Upstream, registry_text


def _chat(gateway: Gateway, content: str = "hello!") -> str:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": content}])
    return raw.headers["x-autoroute-request-id"]


def test_feedback_is_stored_and_linked(gateway: Gateway) -> None:
    request_id = _chat(gateway)
    # Sent at once: the decision may still be in the write queue, and must be found anyway.
    score = httpx.post(f"{gateway.base_url}/feedback", json={"request_id": request_id, "score": 0.8, "comment": "ok"})
    thumbs = httpx.post(f"{gateway.base_url}/feedback", json={"request_id": request_id, "thumbs": "down"})
    assert score.status_code == 200 and score.json()["score"] == 0.8
    assert thumbs.status_code == 200 and thumbs.json()["score"] == 0.0
    rows = gateway.wait_rows("SELECT * FROM feedback WHERE request_id = ? ORDER BY id", (request_id,), count=2)
    assert [(r["score"], r["label"], r["comment"]) for r in rows] == [(0.8, None, "ok"), (0.0, "thumbs_down", None)]


def test_feedback_can_name_the_right_task(gateway: Gateway) -> None:
    request_id = _chat(gateway, "zxq blorp")
    response = httpx.post(f"{gateway.base_url}/feedback", json={"request_id": request_id, "task": "math"})
    assert response.status_code == 200 and response.json()["task"] == "math" and response.json()["score"] is None
    (row,) = gateway.wait_rows("SELECT score, extra FROM feedback WHERE request_id = ?", (request_id,), count=1)
    assert row["score"] is None and json.loads(row["extra"]) == {"task": "math"}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"request_id": "ar-does-not-exist", "score": 1}, 404, "request_id"),
        ({"request_id": "X", "score": 1.5}, 400, "score"),
        ({"request_id": "X", "score": "high"}, 400, "score"),
        ({"request_id": "X", "score": True}, 400, "score"),
        ({"request_id": "X", "thumbs": "sideways"}, 400, "thumbs"),
        ({"request_id": "X", "score": 1, "thumbs": "up"}, 400, "score"),
        ({"request_id": "X"}, 400, "score"),
        ({"request_id": "X", "task": "astrology"}, 400, "task"),
        ({"score": 1}, 400, "request_id"),
    ],
)
def test_bad_feedback(gateway: Gateway, body: dict, status: int, param: str) -> None:
    if body.get("request_id") == "X":
        body = {**body, "request_id": _chat(gateway)}
    response = httpx.post(f"{gateway.base_url}/feedback", json=body)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param


def test_models_lists_auto_variants_and_registry_models(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    ids = [m.id for m in client.models.list()]
    assert ids[:5] == ["auto", "auto:quality", "auto:balanced", "auto:cost", "auto:latency"]
    assert {"frontier", "mini", "coder", "mathematician", "keyless"} <= set(ids)


def test_health(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/health/liveness").json() == {"status": "alive"}
    ready = httpx.get(f"{gateway.url}/health/readiness")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"config": "ok", "store": "ok", "embeddings": "ok", "task_model": "off"}


BAD_BODIES = [
    (b"{not json", "invalid_json", None),
    (b"[1, 2]", "invalid_json", None),
    (b'{"model": "auto"}', "missing_messages", "messages"),
    (b'{"model": "auto", "messages": []}', "invalid_value", "messages"),
    (b'{"model": "auto", "messages": "hi"}', "invalid_value", "messages"),
    (b'{"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}', "invalid_value", "messages[0].role"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": 5}]}', "invalid_value", "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "missing_model", "model"),
    (b'{"model": 3, "messages": [{"role": "user", "content": "hi"}]}', "missing_model", "model"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "invalid_value", "temperature"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "invalid_value", "stream"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "api_base": "http://evil.test"}', "forbidden_parameter", "api_base"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "base_url": "http://evil.test"}', "forbidden_parameter", "base_url"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "api_key": "sk-x"}', "forbidden_parameter", "api_key"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "extra_headers": {"a": "b"}}', "forbidden_parameter", "extra_headers"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "custom_llm_provider": "x"}', "forbidden_parameter", "custom_llm_provider"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "mock_response": "pwned"}', "forbidden_parameter", "mock_response"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "mcp", "server_url": "http://x"}]}', "invalid_value", "tools[0].type"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}', "unknown_parameter", "frobnicate"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "code", "param"), BAD_BODIES)
def test_bad_input_gets_openai_400(gateway: Gateway, upstream: Upstream, body: bytes, code: str, param: str | None) -> None:
    before = len(upstream.requests())
    response = httpx.post(
        f"{gateway.base_url}/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert len(upstream.requests()) == before, "nothing reaches a backend"


def test_unknown_model_is_404(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    for name in ("gpt-99", "auto:cheapest"):
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
        assert info.value.body["code"] == "model_not_found"


def test_unknown_path_and_method_keep_the_error_shape(gateway: Gateway) -> None:
    missing = httpx.get(f"{gateway.base_url}/nothing-here")
    wrong_method = httpx.get(f"{gateway.base_url}/chat/completions")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"


@pytest.fixture(scope="module")
def secured(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    text = registry_text(upstream).replace("storage:", "auth:\n  api_key_envs: [E2E_CLIENT_KEY_A, E2E_CLIENT_KEY_B]\n\nstorage:")
    return start_gateway(text, env={"E2E_CLIENT_KEY_A": "sk-alpha-123", "E2E_CLIENT_KEY_B": "sk-beta-456"})


def test_auth_required_when_keys_are_configured(secured: Gateway) -> None:
    for key in ("wrong-key", "sk-alpha-12", "sk-alpha-1234"):
        with pytest.raises(openai.AuthenticationError) as info:
            openai.OpenAI(base_url=secured.base_url, api_key=key).chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.body["code"] == "invalid_api_key"
        assert key not in str(info.value.body)
    no_header = httpx.post(f"{secured.base_url}/chat/completions", json={"model": "auto", "messages": []})
    assert no_header.status_code == 401 and no_header.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{secured.base_url}/models").status_code == 401
    assert httpx.post(f"{secured.base_url}/feedback", json={}).status_code == 401
    assert httpx.get(f"{secured.url}/health/liveness").status_code == 200

    for key in ("sk-alpha-123", "sk-beta-456"):
        client = openai.OpenAI(base_url=secured.base_url, api_key=key)
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        assert raw.parse().model == "mini"
        request_id = raw.headers["x-autoroute-request-id"]
        secured.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))

    secured.stop()
    stored = b"".join(p.read_bytes() for p in secured.data_dir.glob("autoroute.db*"))
    logged = secured.log.read_bytes()
    for key in (b"sk-alpha-123", b"sk-beta-456"):
        assert key not in stored and key not in logged
