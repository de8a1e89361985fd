"""The OpenAPI document: a valid OpenAPI 3.1 document that lists exactly the routes served, whose request schemas
accept what `proxy/validation.py` accepts and nothing else, and which the gateway's real answers (in process) match."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from proxy import api_requests, validation
from proxy.app import AppSettings, create_app
from proxy.errors import ApiError
from proxy.events import DecisionRecord
from proxy.openapi import openapi_document
from proxy.routes import _parse_feedback, router
from router_plugins.types import PREFERENCES
from tests.openapi_contract import check_response, component

DOCUMENT = openapi_document(("chat", "coding", "math"))
KEY = "unit-client-key"
CONFIG = """
models:
  - {name: a, litellm_params: {model: openai/a, api_base: "http://127.0.0.1:9/v1"}, input_cost_per_mtok: 1,
     output_cost_per_mtok: 1}
  - {name: acme/b, litellm_params: {model: openai/b, api_base: "http://127.0.0.1:9/v1"}, input_cost_per_mtok: 1,
     output_cost_per_mtok: 1}
auth: {api_key_envs: [UNIT_CLIENT_KEY]}
router:
  classifier: {static_embedding: {enabled: false}}
"""


def test_the_document_is_valid_openapi_3_1_with_valid_schemas() -> None:
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    jsonschema.Draft202012Validator(definitions.OPENAPI_31).validate(DOCUMENT)
    for schema in DOCUMENT["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    refs = {ref for ref in _strings(DOCUMENT) if ref.startswith("#/components/schemas/")}
    assert {ref.rsplit("/", 1)[1] for ref in refs} <= set(DOCUMENT["components"]["schemas"])


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_it_lists_exactly_the_routes_served() -> None:
    served = {
        (method.lower(), route.path.replace(":path}", "}"))
        for route in router.routes
        if getattr(route, "include_in_schema", False)
        for method in getattr(route, "methods", ())
    }
    documented = {(method, path) for path, item in DOCUMENT["paths"].items() for method in item}
    assert documented == served


def test_the_request_schemas_name_what_validation_knows() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert set(chat) == validation.PASSTHROUGH | validation.OUR_FIELDS | validation.ACCEPTED_NOT_FORWARDED
    messages = chat["messages"]["items"]["discriminator"]["mapping"]
    assert set(messages) == validation.ROLES
    for role, ref in messages.items():
        content = schemas[ref.rsplit("/", 1)[1]]["properties"]["content"]["anyOf"]
        parts = next(branch["items"] for branch in content if branch.get("type") == "array")
        kinds = set(parts["discriminator"]["mapping"]) if "discriminator" in parts else {"text"}
        assert kinds == validation.PART_TYPES.get(role, validation.TEXT_PARTS), role
    assert set(schemas["Tool"]["properties"]["type"]["enum"]) == validation.TOOL_TYPES
    assert api_requests.AUTO_MODELS == ["auto", *(f"auto:{p}" for p in PREFERENCES)]
    assert schemas["AutorouteOptions"]["properties"]["preference"]["enum"] == list(PREFERENCES)
    json_types = {bool: "boolean", str: "string", dict: "object", list: "array"}
    for key, types in validation._PARAM_TYPES.items():
        branches = chat[key]["anyOf"]
        found = {schemas[b["$ref"].rsplit("/", 1)[1]]["type"] if "$ref" in b else b["type"] for b in branches}
        assert found == {json_types[t] for t in types} | {"null"}, key
    assert schemas["FeedbackRequest"]["properties"]["task"]["anyOf"][0] == {"enum": ["chat", "coding", "math"]}


USER = {"role": "user", "content": "hi"}
CHAT_BODIES: list[dict[str, Any]] = [
    {"model": "auto", "messages": [USER]},
    {"model": "auto:bogus", "messages": [USER]},  # well-formed: a 404, not a 400
    {"model": "", "messages": [USER]},
    {"model": "auto", "messages": []},
    {"model": "auto", "messages": [USER], "api_base": "http://evil"},
    {"model": "auto", "messages": [USER], "nonsense": 1},
    {"model": "auto", "messages": [{"role": "wizard", "content": "x"}]},
    {"model": "auto", "messages": [{"role": "user"}]},
    {"model": "auto", "messages": [{"role": "user", "content": None}]},
    {"model": "auto", "messages": [{"role": "user", "content": 5}]},
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},  # was a 502
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "foo"}]}]},  # was a 502
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "file"}]}]},  # a 400 from LiteLLM
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]},
    {"model": "auto", "messages": [{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]},
    {"model": "auto", "messages": [{"role": "system", "content": [{"type": "text", "text": "be brief"}]}]},
    {"model": "auto", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
    {"model": "auto", "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},  # was a 500
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},  # was a 500
    {"model": "auto", "messages": [{"role": "user", "content": "x", "name": 5}]},
    {"model": "auto", "messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]},
    {"model": "auto", "messages": [{"role": "assistant", "tool_calls": []}]},
    {"model": "auto", "messages": [{"role": "assistant", "tool_calls": "call"}]},
    {"model": "auto", "messages": [{"role": "assistant", "content": None, "function_call": None}]},
    {"model": "auto", "messages": [{"role": "assistant", "function_call": {"name": "f"}}]},
    {"model": "auto", "messages": [{"role": "tool", "content": "42"}]},
    {"model": "auto", "messages": [{"role": "tool", "content": "42", "tool_call_id": "c"}]},
    {"model": "auto", "messages": [{"role": "user", "content": "x", "tool_call_id": 5}]},
    {"model": "auto", "messages": [USER], "stream": "yes"},
    {"model": "auto", "messages": [USER], "stream_options": {"include_usage": True}},
    {"model": "auto", "messages": [USER], "stream": True, "stream_options": {"include_usage": None}},
    {"model": "auto", "messages": [USER], "stream": True, "stream_options": {"include_usage": True}},
    {"model": "auto", "messages": [USER], "stream_options": None},
    {"model": "auto", "messages": [USER], "temperature": 2.5},
    {"model": "auto", "messages": [USER], "temperature": None},
    {"model": "auto", "messages": [USER], "max_tokens": 0},
    {"model": "auto", "messages": [USER], "max_tokens": 2.0},  # an integer to JSON Schema
    {"model": "auto", "messages": [USER], "max_tokens": 2.5},
    {"model": "auto", "messages": [USER], "n": 129},
    {"model": "auto", "messages": [USER], "stop": ["a", 1]},
    {"model": "auto", "messages": [USER], "tools": [{"type": "function", "function": {"name": "f"}}]},
    {"model": "auto", "messages": [USER], "tools": [{"type": "mcp"}]},
    {"model": "auto", "messages": [USER], "tools": [{"type": {}}]},  # was a 500
    {"model": "auto", "messages": [USER], "response_format": {"type": 1}},
    {"model": "auto", "messages": [USER], "response_format": {"type": "json_object"}},
    {"model": "auto", "messages": [USER], "web_search_options": None},  # was a 502
    {"model": "auto", "messages": [USER], "logprobs": "yes"},
    {"model": "auto", "messages": [USER], "tool_choice": 3},
    {"model": "auto", "messages": [USER], "tool_choice": "required"},
    {"model": "auto", "messages": [USER], "tool_choice": "sometimes"},
    {"model": "auto", "messages": [USER], "tool_choice": {}},  # a 400 from LiteLLM, in its own words
    {"model": "auto", "messages": [USER], "tool_choice": {"type": "function", "function": "f"}},
    {"model": "auto", "messages": [USER], "tool_choice": {"type": "function", "function": {"name": "f"}}},
    {"model": "auto", "messages": [USER], "modalities": ["text", 1]},
    {"model": "auto", "messages": [USER], "functions": [{"name": "f"}, "g"]},
    {"model": "auto", "messages": [USER], "store": "no"},
    {"model": "auto", "messages": [USER], "metadata": {"team": "a"}},
    {"model": "auto", "messages": [USER], "autoroute": {"preference": None}},
    {"model": "auto", "messages": [USER], "autoroute": {"min_quality": 1.5}},
    {"model": "auto", "messages": [USER], "autoroute": {"max_cost_per_1k": 0, "preference": "cost"}},
]


@pytest.mark.parametrize("body", CHAT_BODIES, ids=lambda body: json.dumps(body)[:90])
def test_the_chat_schema_accepts_exactly_what_the_gateway_accepts(body: dict[str, Any]) -> None:
    schema_accepts = component(DOCUMENT, "ChatCompletionRequest").is_valid(body)
    try:
        validation.parse_chat_request(json.dumps(body).encode(), "r", "balanced")
    except ApiError as exc:
        assert exc.status in (400, 404)
        gateway_accepts = exc.status != 400
    else:
        gateway_accepts = True
    assert schema_accepts == gateway_accepts


FEEDBACK_BODIES: list[dict[str, Any]] = [
    {"request_id": "r", "score": 0.5},
    {"request_id": "r", "thumbs": "up", "comment": "ok", "label": "good"},
    {"request_id": "r", "task": "math"},
    {"request_id": "r", "task": "math", "score": 0},
    {"request_id": "r", "task": "astrology"},
    {"request_id": "r", "task": {}},  # was a 500
    {"request_id": "r", "score": 0.5, "thumbs": "up"},
    {"request_id": "r"},
    {"request_id": "", "score": 1},
    {"score": 1},
    {"request_id": "r", "score": True},
    {"request_id": "r", "score": 1.5},
    {"request_id": "r", "thumbs": "sideways"},
    {"request_id": "r", "score": 1, "comment": "x" * 4001},
    {"request_id": "r", "score": 1, "label": "x" * 101},
    {"request_id": "r", "score": None, "thumbs": "down", "task": None},
    {"request_id": "r", "score": 1, "extra": 1},
    {"request_id": "r", "thumbs": "up", "label": 0},  # was silently replaced by `thumbs_up`
    {"request_id": "r", "thumbs": "up", "label": ""},
]


@pytest.mark.parametrize("body", FEEDBACK_BODIES, ids=lambda body: json.dumps(body)[:90])
def test_the_feedback_schema_accepts_exactly_what_the_gateway_accepts(body: dict[str, Any]) -> None:
    schema_accepts = component(DOCUMENT, "FeedbackRequest").is_valid(body)
    try:
        _parse_feedback(body, {"chat", "coding", "math"})
    except ApiError as exc:
        assert exc.status == 400
        gateway_accepts = False
    else:
        gateway_accepts = True
    assert schema_accepts == gateway_accepts


def _decision(request_id: str) -> DecisionRecord:
    return DecisionRecord(request_id, time.time(), "auto", "balanced", "chat", 0.5, "rules", False, [], "a", "a",
                          "only one", [], "static-rules", "1", 1.0, False, "success", 1, 5)  # fmt: skip


# (method, path as requested, path as documented, body, with the key, expected status)
CALLS: list[tuple[str, str, str, Any, bool, int]] = [
    ("GET", "/v1/models", "/v1/models", None, True, 200),
    ("GET", "/v1/models", "/v1/models", None, False, 401),
    ("GET", "/v1/models/auto", "/v1/models/{model}", None, True, 200),
    ("GET", "/v1/models/auto:latency", "/v1/models/{model}", None, True, 200),
    ("GET", "/v1/models/a", "/v1/models/{model}", None, True, 200),
    ("GET", "/v1/models/acme/b", "/v1/models/{model}", None, True, 200),
    ("GET", "/v1/models/acme%2Fb", "/v1/models/{model}", None, True, 200),
    ("GET", "/v1/models/auto:fast", "/v1/models/{model}", None, True, 404),
    ("GET", "/v1/models/nope", "/v1/models/{model}", None, True, 404),
    ("GET", "/v1/models/auto", "/v1/models/{model}", None, False, 401),
    ("POST", "/v1/feedback", "/v1/feedback", {"request_id": "r-1", "thumbs": "up"}, True, 200),
    ("POST", "/v1/feedback", "/v1/feedback", {"request_id": "r-1", "task": "math"}, True, 200),
    ("POST", "/v1/feedback", "/v1/feedback", {"request_id": "r-2", "score": 1}, True, 404),
    ("POST", "/v1/feedback", "/v1/feedback", {"request_id": "r-1", "task": {}}, True, 400),
    ("POST", "/v1/feedback", "/v1/feedback", {"request_id": "r-1", "score": 1}, False, 401),
    ("POST", "/v1/chat/completions", "/v1/chat/completions", b"{not json", True, 400),
    ("POST", "/v1/chat/completions", "/v1/chat/completions", {"model": "auto:x", "messages": [USER]}, True, 404),
    ("POST", "/v1/chat/completions", "/v1/chat/completions", {"model": "auto", "messages": [USER]}, False, 401),
    ("GET", "/health/liveness", "/health/liveness", None, False, 200),
    ("GET", "/health/readiness", "/health/readiness", None, False, 200),
]


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, str, Any, bool]]) -> list[Any]:
    monkeypatch.setenv("UNIT_CLIENT_KEY", KEY)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    app = create_app(AppSettings(config, tmp_path / "data", watch_config=False))

    async def go() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            app.state.services.recorder.record(_decision("r-1"))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
                out = []
                for method, path, body, keyed in calls:
                    headers = {"authorization": f"Bearer {KEY}"} if keyed else {}
                    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
                    out.append(await client.request(method, path, content=content, headers=headers))
                return out

    return asyncio.run(go())


def test_the_answers_are_what_the_document_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = [("GET", "/openapi.json", None, False), ("GET", "/docs", None, False), ("DELETE", "/v1/models", None, True),
             ("GET", "/v1/models/", None, False)]  # fmt: skip
    responses = _serve(tmp_path, monkeypatch, [(m, p, b, k) for m, p, _, b, k, _ in CALLS] + extra)
    for (method, path, documented, _, _, status), response in zip(CALLS, responses):
        assert response.status_code == status, (method, path, response.text)
        check_response(DOCUMENT, method, documented, status, response.headers, response.text)
    retrieved = {r.json()["id"] for r in responses[2:7]}
    assert retrieved == {"auto", "auto:latency", "a", "acme/b"}
    assert responses[2].json() == responses[0].json()["data"][0], "retrieve answers what the list does"

    schema, docs, delete, slash = responses[len(CALLS) :]
    assert schema.status_code == 200, "the document needs no key"
    tasks = schema.json()["components"]["schemas"]["FeedbackRequest"]["properties"]["task"]["anyOf"][0]["enum"]
    assert "coding" in tasks and schema.json()["paths"] == DOCUMENT["paths"]
    assert docs.status_code == 404 and docs.json()["error"]["code"] == "not_found"
    # Found by schemathesis: a 405 must say which methods are allowed (RFC 9110).
    assert delete.status_code == 405 and delete.headers["allow"] == "GET"
    assert slash.status_code == 404 and slash.json()["error"]["code"] == "not_found", "not a model named ''"
