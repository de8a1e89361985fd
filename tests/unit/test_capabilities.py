"""Capability-aware routing: requests with images, tools or a JSON response_format reach only models that take them,
or get a 400 naming what no model supports."""

from __future__ import annotations

import pytest

from proxy.errors import routing_error
from router_plugins.assembly import assemble
from router_plugins.errors import CapabilityMissing
from router_plugins.registry import parse_registry
from router_plugins.types import ChatRequest, Classification

REGISTRY = """
models:
  - {name: sees, litellm_params: {model: openai/sees}, supports_vision: true, supports_tools: false,
     quality: {default: 0.5}}
  - {name: tools-json, litellm_params: {model: openai/tj}, quality: {default: 0.9}}
  - {name: plain, litellm_params: {model: openai/plain}, supports_tools: false, supports_json: false,
     quality: {default: 0.95}}
"""
IMAGE = {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}  # fmt: skip
TEXT = {"role": "user", "content": "Describe a cat."}
TOOLS = {"tools": [{"type": "function", "function": {"name": "look"}}]}
JSON = {"response_format": {"type": "json_object"}}
CHAT = Classification("chat", 1.0, "test")


def _route(messages: tuple, **params: object) -> str:
    engine = assemble(parse_registry(REGISTRY), None)
    return engine.route(ChatRequest("r", "auto:quality", messages, params=params), CHAT, "en").decision.model


def test_what_a_request_needs() -> None:
    assert ChatRequest("r", "auto", (IMAGE,), params={**TOOLS, **JSON}).needs == ("tools", "vision", "json")
    assert ChatRequest("r", "auto", (TEXT,), params={"response_format": {"type": "text"}}).needs == ()


@pytest.mark.parametrize(
    ("messages", "params", "model"),
    [((TEXT,), {}, "plain"), ((IMAGE,), {}, "sees"), ((TEXT,), TOOLS, "tools-json"), ((TEXT,), JSON, "tools-json")],
)
def test_auto_routes_only_to_capable_models(messages: tuple, params: dict, model: str) -> None:
    assert _route(messages, **params) == model


def test_what_no_model_supports_is_a_400_naming_it() -> None:
    with pytest.raises(CapabilityMissing) as missing:
        _route((IMAGE,), **TOOLS)

    error = routing_error(missing.value)
    assert (error.status, error.code, error.param) == (400, "unsupported_capability", "tools")
    assert "no available model takes tool calls and images (registry: supports_tools, supports_vision)" in error.message


def test_a_named_model_without_the_capability_is_refused() -> None:
    engine = assemble(parse_registry(REGISTRY), None)

    with pytest.raises(CapabilityMissing, match="'plain' does not take images") as missing:
        engine.passthrough(ChatRequest("r", "plain", (IMAGE,)), CHAT)
    assert routing_error(missing.value).param == "messages"
    assert engine.passthrough(ChatRequest("r", "sees", (IMAGE,)), CHAT).model == "sees"
