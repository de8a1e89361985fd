"""Hardening over real sockets: no upstream secret reaches the client, the store or the log; retry hints the OpenAI
SDK obeys; no redirects; bounded bodies, bounded nesting and impossible requests answered 400."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .conftest import Gateway, Upstream

CLIENT_KEY = "client-key-e2e"
CARELESS_KEY = "careless-key-0042"
"""Shaped like no known key: only the gateway's knowledge of its configured keys can redact it."""
REGISTRY = """
models:
  - name: careless
    litellm_params: {model: openai/careless-echo-auth, api_base: "{UPSTREAM}", api_key_env: E2E_CARELESS_KEY}
    input_cost_per_mtok: 1.0
    output_cost_per_mtok: 1.0
  - name: limited
    litellm_params: {model: openai/limited-error-429, api_base: "{UPSTREAM}"}
    input_cost_per_mtok: 1.0
    output_cost_per_mtok: 1.0
  - name: refusing
    litellm_params: {model: openai/refusing-error-400, api_base: "{UPSTREAM}"}
    input_cost_per_mtok: 1.0
    output_cost_per_mtok: 1.0
  - name: locked
    litellm_params: {model: openai/locked-require-key, api_base: "{UPSTREAM}"}
    input_cost_per_mtok: 1.0
    output_cost_per_mtok: 1.0
  - name: small
    litellm_params: {model: openai/small, api_base: "{UPSTREAM}"}
    input_cost_per_mtok: 1.0
    output_cost_per_mtok: 1.0
    context_window: 4000
auth: {api_key_envs: [E2E_CLIENT_KEY]}
router:
  classifier:
    transformer_knn: {enabled: false}
    torch_head: {enabled: false}
storage: {flush_interval_ms: 50}
"""


@pytest.fixture(scope="module")
def hardened(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return start_gateway(
        REGISTRY.replace("{UPSTREAM}", f"{upstream.url}/v1"),
        env={"E2E_CARELESS_KEY": CARELESS_KEY, "E2E_CLIENT_KEY": CLIENT_KEY},
    )


def _client(gateway: Gateway, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=max_retries)


def _upstream_calls(upstream: Upstream, model: str) -> int:
    return sum(1 for r in upstream.requests() if r["model"] == model)


# -- 3. nothing of an upstream's secrets passes through -------------------------------------------------------------


def test_an_upstream_quoting_its_key_leaks_it_nowhere(hardened: Gateway, upstream: Upstream) -> None:
    upstream.clear()
    with pytest.raises(openai.BadRequestError) as raised:
        _client(hardened).chat.completions.create(model="careless", messages=[{"role": "user", "content": "hi"}])
    assert _upstream_calls(upstream, "careless-echo-auth") == 1, "the fake upstream was sent the key, and quoted it"
    body = raised.value.response.text
    assert raised.value.code == "upstream_rejected" and "Invalid request sent with Authorization: " in body
    request_id = raised.value.response.headers["x-autoroute-request-id"]
    (row,) = hardened.wait_rows("SELECT error_message FROM model_performance WHERE request_id = ?", (request_id,))
    assert row["error_message"].startswith("Invalid request sent with Authorization: ")
    for seen in (body, row["error_message"], hardened.log.read_text()):
        assert CARELESS_KEY not in seen


# -- 4. retry hints ---------------------------------------------------------------------------------------------------


def test_the_sdk_retries_a_rate_limit_after_the_backends_retry_after(hardened: Gateway, upstream: Upstream) -> None:
    upstream.clear()
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as raised:
        _client(hardened, max_retries=2).chat.completions.create(
            model="limited", messages=[{"role": "user", "content": "hi"}]
        )
    elapsed = time.monotonic() - started
    headers = raised.value.response.headers
    assert (headers["x-should-retry"], headers["retry-after"]) == ("true", "1")
    assert _upstream_calls(upstream, "limited-error-429") == 3, "one call, then the SDK's two retries"
    # The SDK's own backoff would wait about 0.4 s then 0.9 s; the upstream's Retry-After says 1 s each time.
    assert elapsed >= 1.9


@pytest.mark.parametrize(("model", "upstream_model", "status"), [("refusing", "refusing-error-400", 400),
                                                                  ("locked", "locked-require-key", 502)])  # fmt: skip
def test_the_sdk_does_not_retry_what_retrying_cannot_fix(
    hardened: Gateway, upstream: Upstream, model: str, upstream_model: str, status: int
) -> None:
    upstream.clear()
    with pytest.raises(openai.APIStatusError) as raised:
        _client(hardened, max_retries=2).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == status and raised.value.response.headers["x-should-retry"] == "false"
    assert _upstream_calls(upstream, upstream_model) == 1


# -- 5. no Host-built redirects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/chat/completions/"), ("GET", "/v1/models/")])
def test_a_trailing_slash_is_a_404_never_a_redirect(hardened: Gateway, method: str, path: str) -> None:
    response = httpx.request(method, f"{hardened.url}{path}", headers={"host": "evil.example"}, json={"model": "auto"})
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["error"]["code"] == "not_found" and "evil.example" not in response.text


# -- 2. bounded input -------------------------------------------------------------------------------------------------


def _peak_rss_kb(gateway: Gateway) -> int:
    status = Path(f"/proc/{gateway.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def test_a_chunked_body_is_refused_at_the_limit_not_read_whole(hardened: Gateway) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * (1 << 20)

    before = _peak_rss_kb(hardened)
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    response = httpx.post(f"{hardened.base_url}/chat/completions", content=body(), headers=headers, timeout=60)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert "content-length" not in response.request.headers, "sent chunked"
    assert _peak_rss_kb(hardened) - before < 40_000, "at most the 20 MB limit is held, not the 100 MB sent"


@pytest.mark.parametrize("path", ["/chat/completions", "/feedback"])
def test_deep_nesting_is_a_400_not_a_500(hardened: Gateway, path: str) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    content = f'{{"model": "auto", "request_id": "r", "messages": [], "metadata": {nested}}}'
    response = httpx.post(
        f"{hardened.base_url}{path}", content=content, headers={"authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The body's JSON is nested deeper than 64 levels."


@pytest.mark.parametrize(
    ("content", "params", "param"),
    [("word " * 10_000, {}, "messages"), ("hi", {"max_tokens": 1_000_000_000}, "max_tokens")],
)
def test_a_request_no_model_can_take_is_a_400_naming_the_parameter(
    hardened: Gateway, upstream: Upstream, content: str, params: dict[str, Any], param: str
) -> None:
    upstream.clear()
    with pytest.raises(openai.BadRequestError) as raised:
        _client(hardened, max_retries=2).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": content}], **params
        )
    error = raised.value.body
    assert isinstance(error, dict) and (error["param"], error["code"]) == (param, "context_length_exceeded")
    assert raised.value.response.headers["x-should-retry"] == "false" and upstream.requests() == []
