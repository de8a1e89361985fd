"""Retry hints: every error says whether retrying can help (`x-should-retry`), and 429/503 say when (`retry-after`)."""

from __future__ import annotations

from types import ModuleType

import httpx
import pytest

from proxy.errors import ApiError, backends_failed, bad_request, model_not_found
from proxy.forward import Forwarder, UpstreamError, classify_error


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    return Forwarder(env={})._litellm


def _hints(error: ApiError) -> tuple[int, str | None, str | None]:
    headers = error.to_response().headers
    return error.status, headers.get("x-should-retry"), headers.get("retry-after")


def test_request_errors_are_final_and_unavailability_is_retried_after_a_second() -> None:
    assert _hints(bad_request("no")) == (400, "false", None)
    assert _hints(model_not_found("x")) == (404, "false", None)
    assert _hints(ApiError(503, "later", type="server_error")) == (503, "true", "1")


def test_a_rate_limit_everywhere_is_retried_after_the_backends_wait_capped() -> None:
    waits = [UpstreamError(429, "RateLimitError", "slow", True, retry_after=s) for s in (2.0, 120.0)]
    assert _hints(backends_failed([("a", waits[0])], {})) == (429, "true", "2")
    assert _hints(backends_failed([("a", waits[0]), ("b", waits[1])], {})) == (429, "true", "30")
    unsaid = UpstreamError(429, "RateLimitError", "slow", True)
    assert _hints(backends_failed([("a", unsaid)], {})) == (429, "true", "1")


def test_failures_retrying_cannot_fix_are_final() -> None:
    rejected = UpstreamError(400, "BadRequestError", "bad schema", False)
    refused = UpstreamError(502, "AuthenticationError", "refused the gateway's credentials", True, transient=False)
    down = UpstreamError(502, "InternalServerError", "boom", True)
    assert _hints(backends_failed([("a", rejected)], {})) == (400, "false", None)
    assert _hints(backends_failed([("a", refused)], {})) == (502, "false", None)
    assert _hints(backends_failed([("a", refused), ("b", down)], {})) == (502, "true", None)
    assert _hints(backends_failed([("a", UpstreamError(504, "Timeout", "slow", True))], {})) == (504, "true", None)


def test_the_backends_retry_after_is_read_from_its_response(litellm: ModuleType) -> None:
    request = httpx.Request("POST", "http://upstream.test/v1/chat/completions")
    response = httpx.Response(429, headers={"Retry-After": "7"}, request=request)
    exc = litellm.exceptions.RateLimitError(message="slow down", llm_provider="openai", model="m", response=response)
    assert classify_error(exc).retry_after == 7.0
    refused = litellm.exceptions.AuthenticationError(message="bad key", llm_provider="openai", model="m")
    assert classify_error(refused).transient is False
