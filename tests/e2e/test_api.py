"""Feedback, models, health, bad input and auth, over real sockets."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from .conftest import Gateway


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
