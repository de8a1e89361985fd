"""Nothing of a backend's credentials passes through: redaction of its error text, and the forwarder applying it."""

from __future__ import annotations

import asyncio
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from proxy.forward import Forwarder, UpstreamError
from proxy.redact import REDACTED, configured_secrets, redact
from router_plugins.registry import parse_registry
from router_plugins.types import ChatRequest

REGISTRY = """
models:
  - {name: a, litellm_params: {model: openai/a, api_key_env: A_KEY, extra_headers_env: {x-org: A_ORG}}}
  - {name: b, litellm_params: {model: openai/b}}
auth: {api_key_envs: [CLIENT_KEY]}
"""
ENV = {"A_KEY": "plain-words-key", "A_ORG": "org-value", "CLIENT_KEY": "client-secret", "OTHER": "not-ours"}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Incorrect API key provided: sk-proj-AbCdEf0123456789xyz. See ...", "sk-proj-AbCdEf0123456789xyz"),
        ("headers: {'Authorization': 'Bearer some.opaque-token'}", "some.opaque-token"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("request to https://g.example/v1/models?key=AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOp&alt=sse failed", "AIzaSy"),
        ("POST /v1?api_key=hunter2hunter2 returned 400", "hunter2hunter2"),
        ('{"x-api-key": "kv-7f3a", "error": "bad"}', "kv-7f3a"),
        ("token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 rejected", "9f86d081884c7d659a2f"),
    ],
)
def test_key_shapes_are_redacted(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert REDACTED in redacted


def test_configured_values_are_redacted_whatever_their_shape() -> None:
    secrets = configured_secrets(parse_registry(REGISTRY), ENV)
    assert secrets == {"plain-words-key", "org-value", "client-secret"}
    text = "you sent plain-words-key for org-value; client-secret is wrong, not-ours is kept"
    assert redact(text, secrets) == f"you sent {REDACTED} for {REDACTED}; {REDACTED} is wrong, not-ours is kept"


def test_ordinary_error_text_is_left_alone() -> None:
    text = "Invalid value for 'logit_bias': token 50256 is out of range (max 2048). See https://platform.example/docs"
    assert redact(text) == text


def test_the_forwarder_redacts_a_backends_error_before_anyone_sees_it(litellm: ModuleType) -> None:
    registry = parse_registry(REGISTRY)
    forwarder = Forwarder(env=ENV)
    forwarder.prepare(registry)
    echoed = "OpenAIException - bad request from Authorization: Bearer plain-words-key (key plain-words-key)"

    async def acompletion(**kwargs: Any) -> Any:
        assert kwargs["api_key"] == "plain-words-key"
        raise litellm.exceptions.BadRequestError(message=echoed, model="a", llm_provider="openai")

    forwarder._litellm = SimpleNamespace(acompletion=acompletion)  # a backend that quotes the key it was sent
    request = ChatRequest("r", "a", ({"role": "user", "content": "hi"},))
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(forwarder.complete(registry.models[0], request))
    assert (raised.value.status, raised.value.retryable) == (400, False)
    assert "plain-words-key" not in raised.value.message and "plain-words-key" not in str(raised.value)
    assert raised.value.message.startswith("bad request from Authorization: ")


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    return Forwarder(env={})._litellm
