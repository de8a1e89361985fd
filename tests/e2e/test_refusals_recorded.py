"""Every request is recorded, refused ones included, with the status and the reason: a body that is not understood,
a model that does not exist, constraints no model meets. A request refused by auth is not (a stranger must not be able
to fill the store)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from .conftest import Gateway, Upstream, registry_text


def _row(gateway: Gateway, request_id: str) -> dict:
    rows = gateway.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))
    assert len(rows) == 1, f"no decision row for {request_id}"
    return dict(rows[0])


def test_refused_requests_leave_a_decision_row_with_the_reason(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Write a haiku about rivers."}]

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as unmet:
        client.chat.completions.create(
            model="auto", messages=messages,  # type: ignore[arg-type]
            extra_body={"autoroute": {"max_cost_per_1k": 0.0000001}},
        )  # fmt: skip
    bad_json = httpx.post(f"{gateway.base_url}/chat/completions", content=b'{"model": "auto", "messages": [',
                          headers={"content-type": "application/json"})  # fmt: skip

    row = _row(gateway, missing.value.response.headers["x-autoroute-request-id"])
    assert (row["status"], row["error_code"]) == ("rejected", "model_not_found")
    assert row["requested_model"] == "no-such-model"
    assert row["selected_model"] is None and row["attempts"] == 0
    row = _row(gateway, unmet.value.response.headers["x-autoroute-request-id"])
    assert (row["status"], row["error_code"]) == ("rejected", "no_model_satisfies_constraints")
    assert row["task"] and row["classification_layer"], "how it was classified is kept"
    receipt = httpx.get(f"{gateway.base_url}/decisions/{row['request_id']}").json()
    assert (receipt["status"], receipt["error"]["code"]) == ("rejected", "no_model_satisfies_constraints")
    assert bad_json.status_code == 400
    row = _row(gateway, bad_json.headers["x-autoroute-request-id"])
    assert (row["status"], row["error_code"], row["task"]) == ("rejected", bad_json.json()["error"]["code"], None)


def test_a_request_refused_by_auth_is_not_stored(start_gateway: Callable[..., Gateway], upstream: Upstream) -> None:
    text = registry_text(upstream).replace("storage:", "auth: {api_key_envs: [E2E_CLIENT_KEY]}\nstorage:", 1)
    secured = start_gateway(text, env={"E2E_UPSTREAM_KEY": "fake-secret", "E2E_CLIENT_KEY": "right-key"})
    wrong = openai.OpenAI(base_url=secured.base_url, api_key="wrong-key", max_retries=0)
    right = openai.OpenAI(base_url=secured.base_url, api_key="right-key", max_retries=0)

    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    hello = [{"role": "user", "content": "hi"}]
    answered = right.chat.completions.with_raw_response.create(model="auto", messages=hello)  # type: ignore[arg-type]

    _row(secured, answered.headers["x-autoroute-request-id"])
    assert [r["status"] for r in secured.rows("SELECT status FROM routing_decisions")] == ["success"]
