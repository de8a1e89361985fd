"""The one error shape every client sees: OpenAI's `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from starlette.responses import Response

from router_plugins.errors import (
    CapabilityMissing,
    ConstraintsUnmet,
    ModelNotFound,
    ModelUnavailable,
    RequestTooLarge,
    RoutingError,
)

RETRY_AFTER_S = 1
"""What a 429 or 503 tells the client to wait when no backend said how long."""
MAX_RETRY_AFTER_S = 30
"""A backend's longer Retry-After is cut to this: the client may try again sooner, through another backend."""
UPSTREAM_REJECTED = "upstream_rejected"
"""The last backend refused the request for good (a 4xx): its status and message are passed on."""
UPSTREAM_UNAVAILABLE = "upstream_unavailable"
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses answered `x-should-retry: true` unless the error says otherwise; every other one is final."""


class ApiError(Exception):
    """An error answered to the client with an HTTP status and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_response(self, extra_headers: dict[str, str] | None = None) -> Response:
        # The retry hints the OpenAI SDKs obey: `x-should-retry` on every error, `retry-after` on 429 and 503.
        hints = {"x-should-retry": "true" if self.status in RETRYABLE_STATUSES else "false"}
        if self.status in (429, 503):
            hints["retry-after"] = str(RETRY_AFTER_S)
        return Response(
            json.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers={**hints, **self.headers, **(extra_headers or {})},
        )


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "Missing or invalid API key: send it as 'Authorization: Bearer <key>'.",
        type="authentication_error",
        code="invalid_api_key",
        headers={"www-authenticate": "Bearer"},
    )


def model_not_found(name: str) -> ApiError:
    return ApiError(
        404,
        f"The model '{name}' does not exist. Use 'auto' (or auto:quality, auto:balanced, auto:cost, auto:latency) "
        "or a model listed by GET /v1/models.",
        param="model",
        code="model_not_found",
    )


def internal_error() -> ApiError:
    return ApiError(500, "The gateway failed to handle this request; it has been logged.", type="server_error")


def routing_error(exc: RoutingError) -> ApiError:
    """The OpenAI-style error for a request the routing engine could not route."""
    if isinstance(exc, ModelNotFound):
        return model_not_found(exc.model)
    if isinstance(exc, ModelUnavailable):
        return ApiError(
            503,
            f"The model '{exc.model}' is not usable: the gateway has no credentials for it "
            f"({exc.api_key_env} is not set).",
            type="server_error",
            param="model",
            code=exc.code,
        )
    if isinstance(exc, ConstraintsUnmet):
        return ApiError(
            400,
            f"No available model meets this request's constraints for task '{exc.task}' "
            f"(max_cost_per_1k={exc.max_cost_per_1k}, min_quality={exc.min_quality}).",
            param="autoroute",
            code=exc.code,
        )
    if isinstance(exc, CapabilityMissing):
        return bad_request(f"This request cannot be served: {exc}.", param=exc.param, code=exc.code)
    if isinstance(exc, RequestTooLarge):
        asked = "the prompt needs" if exc.param == "messages" else f"the prompt and '{exc.param}' need"
        return bad_request(
            f"No model can take this request: {asked} about {exc.needed_tokens} tokens, and the largest "
            f"context window is {exc.largest_window}.",
            param=exc.param,
            code=exc.code,
        )
    return ApiError(
        503,
        "No backend is available for this request: every model in the registry is disabled, lacks "
        "credentials, or cannot serve it (tools, context window).",
        type="server_error",
        code=exc.code,
    )


def backends_failed(errors: Sequence[tuple[str, Any]], headers: dict[str, str]) -> ApiError:
    """The error for a request whose every backend failed: the last one's refusal when it was final (a 4xx), else
    429 when all were rate limited, 504 when the last timed out, 502 otherwise. The client is told to retry only
    when some failure may pass (a rate limit, a 5xx, a timeout; not a refusal), after the backends' Retry-After."""
    last_model, last = errors[-1]
    if not last.retryable:  # the same rule as BackendsFailed.code
        return ApiError(last.status, last.message, code=UPSTREAM_REJECTED,
                        headers={**headers, "x-should-retry": "false"})  # fmt: skip
    summary = "; ".join(f"{name}: {exc.message}" for name, exc in errors)
    status = 429 if all(e.status == 429 for _, e in errors) else (504 if last.status == 504 else 502)
    kind = "rate_limit_error" if status == 429 else "server_error"
    hints = {"x-should-retry": "true" if any(e.transient for _, e in errors) else "false"}
    waits = [e.retry_after for _, e in errors if e.retry_after is not None]
    if status == 429 and waits:
        hints["retry-after"] = str(math.ceil(min(max(waits), MAX_RETRY_AFTER_S)))
    return ApiError(
        status,
        f"Every backend tried failed ({summary}).",
        type=kind,
        code=UPSTREAM_UNAVAILABLE,
        headers={**headers, **hints, "x-autoroute-model": last_model},
    )
