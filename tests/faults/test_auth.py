"""Auth: every API path refuses a missing or wrong key with OpenAI's 401, and no key, the client's or a backend's,
reaches a backend it does not belong to, the store or the log.
And a hot reload never lowers auth."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from .conftest import (
    CARELESS_KEY,
    CLIENT_KEY,
    SECOND_CLIENT_KEY,
    Figures,
    Gateway,
    Upstream,
    chat_body,
    client,
    registry_text,
)  # fmt: skip

API_PATHS = [("POST", "/v1/chat/completions"), ("POST", "/chat/completions"), ("GET", "/v1/models"),
             ("GET", "/models"), ("POST", "/v1/feedback")]  # fmt: skip
WRONG_KEYS = ["wrong-key", CLIENT_KEY[:-1], CLIENT_KEY + "1", CLIENT_KEY.upper(), f" {CLIENT_KEY}x"]


def test_auth_missing_or_wrong_key(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """No key, another scheme, or a wrong key (a prefix of the right one, one character more, another case) is a 401
    `invalid_api_key` on every API path, the key not echoed and no backend called; liveness and readiness need none;
    each configured key works."""
    upstream.clear()
    for key in WRONG_KEYS:
        with pytest.raises(openai.AuthenticationError) as raised:
            client(faults_gateway, key=key).chat.completions.create(**chat_body("hi"))
        assert raised.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        assert key.strip() not in raised.value.response.text
    headers = [{}, {"authorization": f"Basic {CLIENT_KEY}"}, {"authorization": "Bearer"},
               {"authorization": CLIENT_KEY}, *({"authorization": f"Bearer {key}"} for key in WRONG_KEYS)]  # fmt: skip
    refused = len(WRONG_KEYS)
    for method, path in API_PATHS:
        for header in headers:
            response = httpx.request(method, f"{faults_gateway.url}{path}", headers=header, json=chat_body("hi"))
            assert response.status_code == 401, (method, path, header)
            error = response.json()["error"]
            assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
            refused += 1
    assert upstream.requests() == [], "nothing reached a backend"
    assert httpx.get(f"{faults_gateway.url}/health/liveness").status_code == 200
    assert httpx.get(f"{faults_gateway.url}/health/readiness", timeout=10).status_code == 200
    for key in (CLIENT_KEY, SECOND_CLIENT_KEY):
        assert client(faults_gateway, key=key).chat.completions.create(**chat_body("hi", "steady")).model == "steady"
    figures["refused"], figures["paths"] = refused, len(API_PATHS)
    figures.summary = "{refused} requests with no or a wrong key on {paths} paths: all 401, 0 backend calls"


def test_auth_keys_stay_secret(faults_gateway: Gateway, upstream: Upstream, figures: Figures) -> None:
    """A client's key is never forwarded: a client key equal to the key a backend wants still gets that backend's
    401 (the gateway sends the registry's credentials only). Neither client key nor the backend key a careless
    backend quotes is in the store (database and WAL) or the log."""
    upstream.clear()
    with pytest.raises(openai.APIStatusError) as raised:
        client(faults_gateway, key=SECOND_CLIENT_KEY).chat.completions.create(**chat_body("hi", "locked"))
    assert raised.value.status_code == 502 and "credentials" in raised.value.message
    (seen,) = upstream.requests()
    assert seen["model"] == "locked-require-key" and seen["headers"] == {"authorization": True}
    ids = []
    for key in (CLIENT_KEY, SECOND_CLIENT_KEY):
        raw = client(faults_gateway, key=key).chat.completions.with_raw_response.create(**chat_body("hello!"))
        ids.append(raw.headers["x-autoroute-request-id"])
    with pytest.raises(openai.BadRequestError):
        client(faults_gateway).chat.completions.create(**chat_body("hi", "careless"))
    for request_id in ids:
        faults_gateway.wait_rows("SELECT 1 FROM routing_decisions WHERE request_id = ?", (request_id,))
    stored = b"".join(p.read_bytes() for p in faults_gateway.data_dir.glob("autoroute.db*"))
    logged = faults_gateway.log.read_bytes()
    for secret in (CLIENT_KEY, SECOND_CLIENT_KEY, CARELESS_KEY):
        assert secret.encode() not in stored and secret.encode() not in logged, secret
    figures["stored_kb"], figures["logged_bytes"] = len(stored) // 1024, len(logged)
    figures.summary = "client key not forwarded; 0 of 3 keys in {stored_kb} KB of store and {logged_bytes} bytes of log"


RELOAD_WAIT_S = 15.0


def _edit(gateway: Gateway, text: str) -> None:
    before = gateway.config.stat().st_mtime_ns
    gateway.config.write_text(text)
    later = before + 1_000_000_000  # seen even within one clock tick
    os.utime(gateway.config, ns=(later, later))


def _wait_for_readiness(gateway: Gateway, status: int) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    while True:
        response = httpx.get(f"{gateway.url}/health/readiness", timeout=5)
        waited = time.monotonic() - started
        if response.status_code == status or waited > RELOAD_WAIT_S:
            return response, waited
        time.sleep(0.1)


def test_auth_hot_reload(
    start_gateway: Callable[..., Gateway], upstream: Upstream, figures: Figures
) -> None:  # fmt: skip
    """An edit enabling auth whose key variable is unset closes the API (503 `auth_misconfigured`, no retry hint, on
    chat and models) and readiness says why, instead of serving without auth; reverting the edit reopens it."""
    gateway = start_gateway(registry_text(upstream), env={"E2E_UPSTREAM_KEY": "fake-secret"})
    good = gateway.config.read_text()
    open_client = openai.OpenAI(base_url=gateway.base_url, api_key="anything", max_retries=0)
    hello = [{"role": "user", "content": "hi"}]
    assert open_client.chat.completions.create(model="auto", messages=hello).choices  # type: ignore[arg-type]

    _edit(gateway, good.replace("storage:", "auth: {api_key_envs: [E2E_NEVER_SET_CLIENT_KEY]}\nstorage:", 1))
    readiness, closed_after = _wait_for_readiness(gateway, 503)

    assert readiness.status_code == 503, readiness.text
    assert "E2E_NEVER_SET_CLIENT_KEY" in readiness.json()["checks"]["config"]
    with pytest.raises(openai.APIStatusError) as refused:
        open_client.chat.completions.create(model="auto", messages=hello)  # type: ignore[arg-type]
    assert refused.value.status_code == 503
    assert refused.value.response.headers["x-should-retry"] == "false"
    error = refused.value.response.json()["error"]
    assert error["code"] == "auth_misconfigured" and "E2E_NEVER_SET_CLIENT_KEY" in error["message"]
    assert httpx.get(f"{gateway.base_url}/models").status_code == 503

    _edit(gateway, good)  # reverted: serving again
    reopened, reopened_after = _wait_for_readiness(gateway, 200)

    assert reopened.status_code == 200
    assert open_client.chat.completions.create(model="auto", messages=hello).choices  # type: ignore[arg-type]
    figures["closed_s"], figures["reopened_s"] = round(closed_after, 1), round(reopened_after, 1)
    figures.summary = (
        "closed (503 on chat and models, readiness 503) {closed_s} s after the edit; open again "
        "{reopened_s} s after reverting it"
    )
