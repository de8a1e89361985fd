"""The OpenAPI 3.1 document served at GET /openapi.json: the real bodies, statuses and headers of every route.

The routes take a raw `Request` (their bodies are read and checked by hand, `proxy/validation.py`), so FastAPI cannot
derive their schemas; this module writes the document from the models of `proxy/api_requests.py` and
`proxy/api_responses.py` and a table of operations, and `app.openapi` serves it. Decisions:
- No auth on the document: it holds no secret and no model name (those stay behind auth at /v1/models). It does
  list the registry's task types, as the enum of the feedback's `task`, so it is rebuilt when they change.
- No /docs or /redoc (a 404 in OpenAI's shape): FastAPI's pages load their scripts from a CDN, which a gateway
  must not make its users' browsers fetch; point any OpenAPI viewer at /openapi.json instead.
- The OpenAI-compatible aliases without `/v1` (`/chat/completions`, `/models`) are served but not listed.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from . import api_requests, api_responses

OPENAPI_URL = "/openapi.json"
_REF = "#/components/schemas/{model}"
_AUTH: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_STRING = {"type": "string"}


def serve_openapi(app: FastAPI) -> None:
    """Make `app` (created with `openapi_url=OPENAPI_URL`) serve this document; FastAPI calls `app.openapi()`."""

    def document() -> dict[str, Any]:
        services = getattr(app.state, "services", None)
        tasks = tuple(t.name for t in services.holder.current.registry.tasks) if services is not None else None
        return openapi_document(tasks)

    app.openapi = document  # type: ignore[method-assign]  # FastAPI's documented hook for a hand-written document


@functools.lru_cache(maxsize=4)
def openapi_document(task_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The document; `task_names` (the registry's task types) become the enum of the feedback's `task`.
    Cached: callers must not change it."""
    schemas = _component_schemas()
    if task_names is not None:
        schemas["FeedbackRequest"]["properties"]["task"]["anyOf"][0] = {"enum": list(task_names)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "autoroute",
            "version": "1",
            "description": "An OpenAI-compatible gateway that routes each chat completion to the registry backend "
            'that fits its task. Every error has OpenAI\'s shape, `{"error": {message, type, param, code}}`, and '
            "says whether to retry in `x-should-retry`.",
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A key held by one of the variables the registry names in `auth.api_key_envs`. "
                    "A gateway configured without any accepts every request.",
                }
            },
        },
    }


def _component_schemas() -> dict[str, Any]:
    models = [(model, "validation") for model in (*api_requests.REQUEST_MODELS, *api_responses.RESPONSE_MODELS)]
    _, top = models_json_schema(models, ref_template=_REF)  # type: ignore[arg-type]  # a literal, not a str
    return {name: _tidy(schema) for name, schema in top["$defs"].items()}


def _tidy(node: Any, properties: bool = False) -> Any:
    """Without pydantic's generated titles and `default: null`s: a field left out is the same as a null one."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    if properties:  # keys are field names here, not keywords
        return {key: _tidy(value) for key, value in node.items()}
    return {
        key: _tidy(value, key == "properties")
        for key, value in node.items()
        if not (key == "title" and isinstance(value, str)) and not (key == "default" and value is None)
    }


# -- operations ----------------------------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _header(description: str, schema: dict[str, Any] | None = None, required: bool = True) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema or _STRING}


_SHOULD_RETRY = _header("Whether retrying the same request may succeed.", {"enum": ["true", "false"]})
_RETRY_AFTER = _header("Seconds to wait before retrying.", {"type": "integer", "minimum": 0})
_REQUEST_ID = _header("The request's id: name it in POST /v1/feedback.")
_DECISION_HEADERS = {
    "x-autoroute-request-id": _REQUEST_ID,
    "x-autoroute-model": _header("The registry model that answered."),
    "x-autoroute-task": _header("The task type the classifier gave the prompt."),
    "x-autoroute-language": _header("ISO 639-1 code of the last user message's language; `und` when unknown."),
    "x-autoroute-router": _header("The router that decided, as `name@version`."),
    "x-autoroute-preference": _header("The preference routed for.", {"enum": ["quality", "balanced", "cost",
                                                                               "latency"]}),
    "x-autoroute-arm": _header("The A/B arm (`control` or `treatment`) when an experiment runs.", required=False),
}  # fmt: skip


def _errors(table: dict[str, str], *, chat: bool = False) -> dict[str, Any]:
    """Error responses by status, with the retry hints every error carries (and the request id of a chat's)."""
    out = {}
    for status, description in table.items():
        headers = {"x-should-retry": _SHOULD_RETRY}
        if status in ("429", "503"):
            headers["retry-after"] = _RETRY_AFTER
        if status == "401":
            headers["www-authenticate"] = _header("`Bearer`.")
        if chat:
            headers["x-autoroute-request-id"] = _REQUEST_ID
        content = {"application/json": {"schema": _ref("ErrorResponse")}}
        out[status] = {"description": description, "headers": headers, "content": content}
    return out


_BAD_JSON = "The body is not a JSON object, or is nested deeper than 64 levels (`invalid_json`)"
_UNAUTHORIZED = "Missing or wrong key (`invalid_api_key`); only when the gateway has keys."
_TOO_LARGE = "The body is over 20 MB (`request_too_large`)."
_INTERNAL = "The gateway failed (a bug; it is logged)."


def _ok(schema: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}
    return {**body, "headers": headers} if headers else body


# OpenAPI 3.1 has no word for one event of a stream (3.2's `itemSchema`); as is common, and as schemathesis reads
# it, the schema of an event stream describes each event.
_SSE_EVENT = {
    "type": "object",
    "description": "One server-sent event (the stream's body is a sequence of them): `data: <ChatCompletionChunk>` "
    "events, then `data: [DONE]`. A failure after the first byte is one `data: <StreamError>` event, and no "
    "`[DONE]`.",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "if": {"const": "[DONE]"},
            "else": {
                "contentMediaType": "application/json",
                "contentSchema": {"anyOf": [_ref("ChatCompletionChunk"), _ref("StreamError")]},
            },
        }
    },
}


_GATEWAY_UNAVAILABLE = (
    "the gateway is still starting (`starting`), or refuses every call until an auth change in its config can be "
    "applied (`auth_misconfigured`)"
)
_UNAVAILABLE = f"Unavailable: {_GATEWAY_UNAVAILABLE}."


def _chat() -> dict[str, Any]:
    ok = _ok("ChatCompletion", "The completion; with `stream: true`, server-sent events.", _DECISION_HEADERS)
    ok["content"]["text/event-stream"] = {"schema": _SSE_EVENT}
    errors = _errors(
        {
            "400": f"Bad request: {_BAD_JSON}; a missing, unknown, forbidden or ill-typed field (`param` names it); "
            "`context_length_exceeded`; `no_model_satisfies_constraints`; `unsupported_capability` (images, tools "
            "or a JSON response_format no candidate takes); or the backend refused it (`upstream_rejected`).",
            "401": _UNAUTHORIZED,
            "404": "The model does not exist (`model_not_found`).",
            "413": _TOO_LARGE,
            "429": "Every backend tried is rate limited (`upstream_unavailable`).",
            "4XX": "The backend refused the request with this status (`upstream_rejected`).",
            "500": _INTERNAL,
            "502": "Every backend tried failed (`upstream_unavailable`).",
            "503": "No backend can serve it (`no_backend_available`, `model_unavailable`: no credentials), the "
            f"gateway is shutting down (`shutting_down`, with `connection: close`), or {_GATEWAY_UNAVAILABLE}.",
            "504": "The last backend tried timed out (`upstream_unavailable`).",
        },
        chat=True,
    )
    return {
        "post": {
            "operationId": "createChatCompletion",
            "summary": "Route and answer a chat completion",
            "security": _AUTH,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}},
            },
            "responses": {"200": ok, **errors},
        }
    }


def _paths() -> dict[str, Any]:
    model_param = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": _STRING,
        "description": "`auto`, `auto:<preference>` or a registry model's name (a `/` in it may be sent as is).",
    }
    return {
        "/v1/chat/completions": _chat(),
        "/v1/models": {"get": {
            "operationId": "listModels", "summary": "The auto variants, then the registry's enabled models",
            "security": _AUTH,
            "responses": {"200": {**_ok("ModelList", "The models."), "links": {"retrieve": {
                "operationId": "retrieveModel", "parameters": {"model": "$response.body#/data/0/id"}}}},
                **_errors({"401": _UNAUTHORIZED, "500": _INTERNAL, "503": _UNAVAILABLE})},
        }},
        "/v1/models/{model}": {"get": {
            "operationId": "retrieveModel", "summary": "One model, as listed by GET /v1/models",
            "security": _AUTH, "parameters": [model_param],
            "responses": {"200": _ok("Model", "The model."), **_errors({
                "401": _UNAUTHORIZED, "404": "No such model (`model_not_found`).", "500": _INTERNAL,
                "503": _UNAVAILABLE})},
        }},
        "/v1/feedback": {"post": {
            "operationId": "createFeedback", "summary": "Score a routed answer, or name its right task",
            "security": _AUTH,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("FeedbackRequest")}}},
            "responses": {"200": _ok("FeedbackResponse", "Recorded, and synced to disk."), **_errors({
                "400": f"Bad request: {_BAD_JSON}; a missing, unknown or invalid field (`param` names it).",
                "401": _UNAUTHORIZED,
                "404": "No request with this id was routed here (`request_not_found`).",
                "413": _TOO_LARGE,
                "500": _INTERNAL,
                "503": "Not recorded: the store is unavailable or failed (`store_unavailable`, "
                f"`feedback_not_recorded`); retry. Or {_GATEWAY_UNAVAILABLE}.",
            })},
        }},
        "/health/liveness": {"get": {
            "operationId": "liveness", "summary": "The process is up", "security": [],
            "responses": {"200": _ok("Liveness", "Alive.")},
        }},
        "/health/readiness": {"get": {
            "operationId": "readiness", "summary": "Whether to send traffic here", "security": [],
            "responses": {
                "200": _ok("Readiness", "Ready: config loaded, store writable."),
                "503": _ok("Readiness", "Not ready (`checks` says why) or shutting down."),
            },
        }},
    }  # fmt: skip
