"""Forwarding helpers: error classification, OpenAI wire shapes, cost, and the kwargs handed to LiteLLM.

No test here calls a backend: LiteLLM's OpenAI path sends through its aiohttp transport by default, which respx
(an httpx mock) cannot intercept; the real call path is covered end to end against the fake upstream.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import httpx
import pytest

from proxy.forward import (
    NO_KEY,
    Forwarder,
    MissingCredentials,
    UpstreamError,
    Usage,
    classify_error,
    clean_chunk,
    clean_response,
    usage_chunk,
    usage_of,
)
from router_plugins.registry import LiteLLMParams, ModelEntry, parse_registry
from router_plugins.types import ChatRequest

MakeForwarder = Callable[[Mapping[str, str]], Forwarder]


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    """LiteLLM, imported once for the module by building a first Forwarder (about 4 s)."""
    return Forwarder(env={})._litellm


@pytest.fixture
def make_forwarder(litellm: ModuleType) -> MakeForwarder:
    return lambda env: Forwarder(env=env)


def model(name: str = "m", litellm_model: str = "openai/x", **kw: Any) -> ModelEntry:
    params = {k: kw.pop(k) for k in ("api_base", "api_base_env", "api_key_env", "timeout_s", "extra_headers_env")
              if k in kw}
    return ModelEntry(name, LiteLLMParams(litellm_model, **params), **kw)


def http_response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", "http://upstream.test/v1/chat/completions"))


def chat_request(stream: bool = False, **params: Any) -> ChatRequest:
    return ChatRequest("req-1", "auto", ({"role": "user", "content": "hi"},), stream=stream, params=params)


# -- classify_error ------------------------------------------------------------------------------------------------


def test_rate_limit_is_retryable(litellm: ModuleType) -> None:
    error = classify_error(litellm.exceptions.RateLimitError(message="slow down", llm_provider="openai", model="m"))

    assert (error.status, error.error_class, error.retryable) == (429, "RateLimitError", True)


@pytest.mark.parametrize("name", ["InternalServerError", "ServiceUnavailableError", "BadGatewayError"])
def test_server_errors_are_retryable_as_502(litellm: ModuleType, name: str) -> None:
    exc = getattr(litellm.exceptions, name)(message="OpenAIException - stack trace", llm_provider="openai", model="m")

    error = classify_error(exc)

    assert (error.status, error.error_class, error.retryable) == (502, name, True)
    assert "stack trace" not in error.message


def test_timeout_is_retryable_as_504(litellm: ModuleType) -> None:
    error = classify_error(litellm.exceptions.Timeout(message="took too long", model="m", llm_provider="openai"))

    assert (error.status, error.error_class, error.retryable) == (504, "Timeout", True)


def test_asyncio_timeout_is_504() -> None:
    error = classify_error(TimeoutError())

    assert (error.status, error.retryable) == (504, True)


def test_connection_error_is_retryable(litellm: ModuleType) -> None:
    exc = litellm.exceptions.APIConnectionError(message="connection refused", llm_provider="openai", model="m")

    error = classify_error(exc)

    assert (error.status, error.error_class, error.retryable) == (502, "APIConnectionError", True)


def test_bad_request_is_not_retryable_and_keeps_the_backends_message(litellm: ModuleType) -> None:
    # LiteLLM builds its messages as "<Provider>Exception - <backend's message>".
    exc = litellm.exceptions.BadRequestError(
        message="OpenAIException - Invalid value for 'logit_bias'", model="m", llm_provider="openai"
    )

    error = classify_error(exc)

    assert (error.status, error.error_class, error.retryable) == (400, "BadRequestError", False)
    assert error.message == "Invalid value for 'logit_bias'"


def test_unprocessable_entity_keeps_its_status(litellm: ModuleType) -> None:
    exc = litellm.exceptions.UnprocessableEntityError(
        message="OpenAIException - bad schema", model="m", llm_provider="openai", response=http_response(422)
    )

    error = classify_error(exc)

    assert (error.status, error.retryable, error.message) == (422, False, "bad schema")


@pytest.mark.parametrize(("name", "status"), [("AuthenticationError", 401), ("PermissionDeniedError", 403)])
def test_refused_gateway_credentials_are_retryable(litellm: ModuleType, name: str, status: int) -> None:
    exc = getattr(litellm.exceptions, name)(
        message="OpenAIException - bad key sk-123", llm_provider="openai", model="m", response=http_response(status)
    )

    error = classify_error(exc)

    assert (error.status, error.retryable) == (502, True)
    assert f"status {status}" in error.message
    assert "sk-123" not in error.message


def test_unknown_model_at_the_backend_is_retryable(litellm: ModuleType) -> None:
    exc = litellm.exceptions.NotFoundError(message="no such model", model="m", llm_provider="openai")

    error = classify_error(exc)

    assert (error.status, error.retryable) == (502, True)


def test_context_window_exceeded_may_fit_another_backend(litellm: ModuleType) -> None:
    exc = litellm.exceptions.ContextWindowExceededError(message="too long", model="m", llm_provider="openai")

    error = classify_error(exc)

    assert (error.status, error.error_class, error.retryable) == (400, "ContextWindowExceededError", True)


def test_missing_credentials_is_retryable_503() -> None:
    error = classify_error(MissingCredentials("needs KEY"))

    assert (error.status, error.error_class, error.retryable) == (503, "MissingCredentials", True)


def test_unexpected_exception_is_a_retryable_502() -> None:
    error = classify_error(RuntimeError("boom"))

    assert (error.status, error.error_class, error.retryable) == (502, "RuntimeError", True)


def test_an_upstream_error_passes_through_unchanged() -> None:
    original = UpstreamError(418, "Teapot", "short and stout", False)

    assert classify_error(original) is original


# -- wire shapes ---------------------------------------------------------------------------------------------------

LITELLM_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1",
    "created": 1_700_000_000,
    "model": "x-2024-01-01",
    "object": "chat.completion",
    "system_fingerprint": None,
    "choices": [
        {
            "finish_reason": "stop",
            "index": 0,
            "message": {
                "content": "hello",
                "role": "assistant",
                "tool_calls": None,
                "function_call": None,
                "provider_specific_fields": {"refusal": None},
            },
        }
    ],
    "usage": {
        "completion_tokens": 2, "prompt_tokens": 8, "total_tokens": 10, "prompt_tokens_details": None, "cost": 0.0004,
    },  # fmt: skip
    "_hidden_params": {"api_base": "http://secret.internal"},
    "provider_specific_fields": None,
    "citations": None,
}


def test_clean_response_has_openais_shape_only() -> None:
    body = clean_response(LITELLM_RESPONSE, "registry-name")

    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "registry-name",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"completion_tokens": 2, "prompt_tokens": 8, "total_tokens": 10},
    }


def test_clean_response_keeps_tool_calls_and_null_content() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    raw = {**LITELLM_RESPONSE, "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [call]}}]}  # fmt: skip

    message = clean_response(raw, "m")["choices"][0]["message"]

    assert message == {"role": "assistant", "content": None, "tool_calls": [call]}


def test_clean_response_keeps_a_system_fingerprint() -> None:
    assert clean_response({**LITELLM_RESPONSE, "system_fingerprint": "fp_1"}, "m")["system_fingerprint"] == "fp_1"


def test_usage_cost_is_read_as_provider_cost() -> None:
    assert usage_of(LITELLM_RESPONSE["usage"]) == Usage(8, 2, 0.0004)


@pytest.mark.parametrize("raw", [None, "10 tokens", {"prompt_tokens": 3, "cost": True}])
def test_usage_of_odd_values(raw: Any) -> None:
    usage = usage_of(raw)

    assert usage.provider_cost is None


def content_chunk(**delta: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-2",
        "created": 1_700_000_001,
        "model": "x",
        "object": "chat.completion.chunk",
        "system_fingerprint": None,
        "choices": [
            {"finish_reason": None, "index": 0, "logprobs": None,
             "delta": {"provider_specific_fields": None, "role": None, "function_call": None, "tool_calls": None,
                       "audio": None, **delta}}
        ],
        "provider_specific_fields": None,
        "citations": None,
    }  # fmt: skip


def test_clean_chunk_has_openais_shape_only() -> None:
    chunk, usage = clean_chunk(content_chunk(content="hel", role="assistant"), "registry-name")

    assert usage is None
    assert chunk == {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1_700_000_001,
        "model": "registry-name",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "hel"}, "finish_reason": None, "logprobs": None}
        ],
    }


def test_clean_chunk_keeps_the_finish_chunk_with_an_empty_delta() -> None:
    raw = content_chunk(content=None)
    raw["choices"][0]["finish_reason"] = "stop"

    chunk, _ = clean_chunk(raw, "m")

    assert chunk is not None
    assert chunk["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]


def test_usage_only_chunk_gives_no_chunk_and_the_usage() -> None:
    raw = content_chunk(content=None)
    raw["usage"] = {"completion_tokens": 2, "prompt_tokens": 8, "total_tokens": 10, "cost": 0.0003}

    chunk, usage = clean_chunk(raw, "m")

    assert chunk is None
    assert usage == Usage(8, 2, 0.0003)


def test_usage_riding_on_a_content_chunk_keeps_both() -> None:
    raw = content_chunk(content="end")
    raw["usage"] = {"completion_tokens": 1, "prompt_tokens": 1, "total_tokens": 2}

    chunk, usage = clean_chunk(raw, "m")

    assert chunk is not None and chunk["choices"][0]["delta"] == {"content": "end"}
    assert usage == Usage(1, 1, None)


def test_usage_chunk_strips_the_provider_cost() -> None:
    template = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 5, "model": "m", "choices": []}
    raw_usage = {"completion_tokens": 2, "prompt_tokens": 8, "total_tokens": 10, "cost": 0.0003}

    chunk = usage_chunk(template, Usage(8, 2, 0.0003), raw_usage)

    assert chunk == {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "m",
        "choices": [],
        "usage": {"completion_tokens": 2, "prompt_tokens": 8, "total_tokens": 10},
    }


def test_usage_chunk_without_raw_usage_is_built_from_the_counts() -> None:
    chunk = usage_chunk({"id": "c", "model": "m"}, Usage(8, 2), None)

    assert chunk["usage"] == {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}


# -- cost and prices -----------------------------------------------------------------------------------------------


def test_provider_cost_wins(make_forwarder: MakeForwarder) -> None:
    priced = model(input_cost_per_mtok=2.5, output_cost_per_mtok=10.0)

    assert make_forwarder({}).cost(priced, Usage(1000, 500, 0.123)) == (0.123, "provider")


def test_registry_prices_go_through_litellms_cost_function(make_forwarder: MakeForwarder) -> None:
    # LiteLLM's own map prices gpt-4o-mini at 0.15/0.60 per Mtok; the registry's prices must win.
    priced = model(litellm_model="openai/gpt-4o-mini", input_cost_per_mtok=2.5, output_cost_per_mtok=10.0)

    cost, source = make_forwarder({}).cost(priced, Usage(1000, 500))

    assert source == "litellm"
    assert cost == pytest.approx(1000 * 2.5e-6 + 500 * 10e-6)


def test_litellms_map_prices_a_known_model_without_registry_prices(make_forwarder: MakeForwarder) -> None:
    cost, source = make_forwarder({}).cost(model(litellm_model="openai/gpt-4o-mini"), Usage(1000, 500))

    assert source == "litellm"
    assert cost == pytest.approx(1000 * 0.15e-6 + 500 * 0.6e-6)


def test_unknown_model_without_prices_has_no_cost(make_forwarder: MakeForwarder) -> None:
    assert make_forwarder({}).cost(model(litellm_model="openai/no-such-model-zz9"), Usage(1000, 500)) == (None, None)


def test_no_usage_means_no_cost(make_forwarder: MakeForwarder) -> None:
    priced = model(input_cost_per_mtok=2.5, output_cost_per_mtok=10.0)

    assert make_forwarder({}).cost(priced, Usage()) == (None, None)


def test_resolve_prices_fills_only_what_the_registry_leaves_out(make_forwarder: MakeForwarder) -> None:
    registry = parse_registry(
        """\
models:
  - {name: mapped, litellm_params: {model: openai/gpt-4o-mini}}
  - {name: half, litellm_params: {model: openai/gpt-4o-mini}, input_cost_per_mtok: 9.0}
  - {name: unknown, litellm_params: {model: openai/no-such-model-zz9}}
""",
        "prices.yaml",
    )

    resolved = make_forwarder({}).resolve_prices(registry)

    prices = {m.name: (m.input_cost_per_mtok, m.output_cost_per_mtok) for m in resolved.models}
    assert prices["mapped"] == pytest.approx((0.15, 0.6))
    assert prices["half"] == pytest.approx((9.0, 0.6))
    assert prices["unknown"] == (None, None)


# -- credentials and kwargs ----------------------------------------------------------------------------------------


def test_has_credentials(make_forwarder: MakeForwarder) -> None:
    keyed = model(api_key_env="ACME_KEY")

    assert make_forwarder({}).has_credentials(model())
    assert not make_forwarder({}).has_credentials(keyed)
    assert not make_forwarder({"ACME_KEY": ""}).has_credentials(keyed)
    assert make_forwarder({"ACME_KEY": "k"}).has_credentials(keyed)


def test_model_without_a_key_variable_never_gets_a_key_from_the_environment(
    make_forwarder: MakeForwarder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    local = model(api_base="http://127.0.0.1:11434/v1")

    kwargs = make_forwarder(os.environ)._kwargs(local, chat_request(), stream=False)

    assert kwargs["api_key"] == NO_KEY
    assert "sk-from-the-environment" not in repr(kwargs)


def test_model_key_comes_from_its_own_variable(make_forwarder: MakeForwarder) -> None:
    keyed = model(api_key_env="ACME_KEY")

    forwarder = make_forwarder({"ACME_KEY": "sk-acme", "OPENAI_API_KEY": "sk-other"})

    kwargs = forwarder._kwargs(keyed, chat_request(), stream=False)

    assert kwargs["api_key"] == "sk-acme"


def test_unset_key_variable_raises_missing_credentials(make_forwarder: MakeForwarder) -> None:
    with pytest.raises(MissingCredentials, match="ACME_KEY"):
        make_forwarder({"OPENAI_API_KEY": "sk-other"})._kwargs(model(api_key_env="ACME_KEY"), chat_request(), False)


def test_kwargs_for_a_plain_call(make_forwarder: MakeForwarder) -> None:
    entry = model(litellm_model="openai/x", api_base="http://upstream.test/v1", timeout_s=12.5)

    kwargs = make_forwarder({})._kwargs(entry, chat_request(temperature=0.2, seed=3), stream=False)

    # Private LiteLLM switches (leading underscore) are the forwarder's business; everything else is pinned.
    assert {k: v for k, v in kwargs.items() if not k.startswith("_")} == {
        "model": "openai/x",
        "messages": [{"role": "user", "content": "hi"}],
        "api_key": NO_KEY,
        "api_base": "http://upstream.test/v1",
        "timeout": 12.5,
        "num_retries": 0,
        "stream": False,
        "temperature": 0.2,
        "seed": 3,
    }


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"ACME_BASE": "http://backend.internal:8000/v1"}, "http://backend.internal:8000/v1"),
     ({}, "http://127.0.0.1:11434/v1")],
)  # fmt: skip
def test_the_base_url_may_come_from_the_environment(
    make_forwarder: MakeForwarder, env: dict[str, str], expected: str
) -> None:
    entry = model(api_base="http://127.0.0.1:11434/v1", api_base_env="ACME_BASE")

    assert make_forwarder(env)._kwargs(entry, chat_request(), stream=False)["api_base"] == expected


def test_a_model_whose_only_address_is_an_unset_variable_is_not_usable(make_forwarder: MakeForwarder) -> None:
    entry = model(api_base_env="ACME_BASE")

    assert make_forwarder({}).has_credentials(entry) is False
    assert make_forwarder({"ACME_BASE": "http://backend.internal/v1"}).has_credentials(entry) is True


@pytest.mark.parametrize("client_options", [None, {"include_usage": False}])
def test_streams_always_ask_for_usage(make_forwarder: MakeForwarder, client_options: dict[str, bool] | None) -> None:
    params = {"stream_options": client_options} if client_options is not None else {}

    kwargs = make_forwarder({})._kwargs(model(), chat_request(stream=True, **params), stream=True)

    assert kwargs["stream"] is True
    assert kwargs["stream_options"] == {"include_usage": True}
    assert kwargs["num_retries"] == 0


def test_extra_headers_come_from_their_variables(make_forwarder: MakeForwarder) -> None:
    entry = model(extra_headers_env={"X-Org": "ACME_ORG"})

    kwargs = make_forwarder({"ACME_ORG": "org-7"})._kwargs(entry, chat_request(), stream=False)

    assert kwargs["extra_headers"] == {"X-Org": "org-7"}
