"""The one error shape every client sees: OpenAI's `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response


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
        return Response(
            json.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers={**self.headers, **(extra_headers or {})},
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
