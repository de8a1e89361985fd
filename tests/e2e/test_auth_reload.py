"""A hot reload never lowers auth: an edit that turns client keys on, with its key variable unset, closes the API
(503, readiness 503) instead of leaving the gateway open, until a reload succeeds."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from .conftest import Gateway, Upstream, registry_text

RELOAD_WAIT_S = 15.0


def _edit(gateway: Gateway, text: str) -> None:
    before = gateway.config.stat().st_mtime_ns
    gateway.config.write_text(text)
    later = before + 1_000_000_000  # seen even within one clock tick
    os.utime(gateway.config, ns=(later, later))


def _wait_for(gateway: Gateway, status: int) -> httpx.Response:
    deadline = time.monotonic() + RELOAD_WAIT_S
    while True:
        response = httpx.get(f"{gateway.url}/health/readiness", timeout=5)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


@pytest.fixture
def open_gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return start_gateway(registry_text(upstream), env={"E2E_UPSTREAM_KEY": "fake-secret"})


def test_enabling_auth_with_an_unset_key_variable_closes_the_gateway(open_gateway: Gateway) -> None:
    good = open_gateway.config.read_text()
    client = openai.OpenAI(base_url=open_gateway.base_url, api_key="anything", max_retries=0)
    assert client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}]).choices

    _edit(open_gateway, good.replace("storage:", "auth: {api_key_envs: [E2E_NEVER_SET_CLIENT_KEY]}\nstorage:", 1))
    readiness = _wait_for(open_gateway, 503)

    assert readiness.status_code == 503, readiness.text
    assert "E2E_NEVER_SET_CLIENT_KEY" in readiness.json()["checks"]["config"]
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 503
    assert refused.value.response.headers["x-should-retry"] == "false"
    error = refused.value.response.json()["error"]
    assert error["code"] == "auth_misconfigured" and "E2E_NEVER_SET_CLIENT_KEY" in error["message"]
    assert httpx.get(f"{open_gateway.base_url}/models").status_code == 503

    _edit(open_gateway, good)  # reverted: serving again

    assert _wait_for(open_gateway, 200).status_code == 200
    assert client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}]).choices
