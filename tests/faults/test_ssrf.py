"""SSRF: a request cannot make the gateway call anything but its registry's backends, with the registry's
credentials. A listener outside the registry (`trap`) counts every connection the gateway makes to it."""

from __future__ import annotations

import time
from typing import Any

import httpx

from .conftest import Figures, Gateway, Trap, Upstream, auth_headers, chat_body, client

FORBIDDEN_FIELDS = [
    "api_base", "base_url", "api_key", "api_version", "api_type", "extra_headers", "headers", "custom_llm_provider",
    "organization", "deployment_id", "model_list", "mock_response", "mock_testing_fallbacks", "fallbacks",
    "num_retries", "timeout", "input_cost_per_token", "output_cost_per_token", "litellm_params", "client",
    "aws_access_key_id", "aws_secret_access_key", "aws_region_name", "vertex_credentials", "vertex_project",
    "azure_ad_token", "extra_body", "proxy", "callbacks", "cache", "caching", "litellm_call_id", "litellm_metadata",
    "litellm_trace_id", "litellm_session_id", "aws_session_token", "aws_profile_name", "aws_role_name",
    "aws_bedrock_runtime_endpoint", "vertex_location", "vertex_ai_project", "azure_ad_token_provider", "azure_username",
]  # fmt: skip
"""What LiteLLM would obey to call another host, with other credentials, or not at all: the audit's 43 fields."""


def _value(field: str, trap: Trap) -> Any:
    if field in ("extra_headers", "headers", "litellm_params", "extra_body", "litellm_metadata"):
        return {"api_base": trap.url, "authorization": "Bearer stolen"}
    if field in ("model_list", "fallbacks", "callbacks"):
        return [{"model_name": "auto", "litellm_params": {"model": "openai/x", "api_base": trap.url}}]
    return trap.url


def test_ssrf_forbidden_fields(faults_gateway: Gateway, upstream: Upstream, trap: Trap, figures: Figures) -> None:
    """Each of 43 fields that would steer LiteLLM (api_base, base_url, api_key, custom_llm_provider, mock_response,
    litellm_*, aws_*, vertex_*, azure_*, ...), pointing at a host outside the registry, is a 400
    `forbidden_parameter` naming it, for `auto` and a named model, streamed or not: no backend and no other host is
    called."""
    assert len(set(FORBIDDEN_FIELDS)) == 43
    upstream.clear()
    before = trap.connections
    for i, field in enumerate(FORBIDDEN_FIELDS):
        body = chat_body("hi", "auto" if i % 2 else "steady", stream=bool(i % 3 == 0), **{field: _value(field, trap)})
        response = httpx.post(f"{faults_gateway.base_url}/chat/completions", json=body, headers=auth_headers())
        assert response.status_code == 400, (field, response.text)
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("forbidden_parameter", field)
    time.sleep(0.3)
    assert upstream.requests() == [] and trap.connections == before == 0
    figures["fields"], figures["connections"] = len(FORBIDDEN_FIELDS), trap.connections - before
    figures.summary = "{fields} fields refused with 400 forbidden_parameter; {connections} connections elsewhere"


def test_ssrf_no_unregistered_host(faults_gateway: Gateway, upstream: Upstream, trap: Trap, figures: Figures) -> None:
    """A model named by a URL or a provider prefix is a 404; a hosted tool (MCP server, web or file search) a 400; an
    image part or a function tool naming another host is passed to the registry backend, never fetched by the
    gateway. The host outside the registry sees no connection."""
    before = trap.connections
    upstream.clear()
    sent = 0
    for model in (trap.url, f"{trap.url}/v1", "openai/gpt-4o", f"openai/{trap.url}", "ollama/llama3",
                  "hosted_vllm/steady", "steady/../steady"):  # fmt: skip
        response = httpx.post(f"{faults_gateway.base_url}/chat/completions", json=chat_body("hi", model),
                              headers=auth_headers())  # fmt: skip
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found", model
        sent += 1
    for tool in ({"type": "mcp", "server_url": f"{trap.url}/mcp", "server_label": "x"}, {"type": "web_search"},
                 {"type": "file_search", "vector_store_ids": ["vs"]}, {"type": "code_interpreter"}):  # fmt: skip
        response = httpx.post(f"{faults_gateway.base_url}/chat/completions",
                              json=chat_body("hi", tools=[tool]), headers=auth_headers())  # fmt: skip
        assert response.status_code == 400 and response.json()["error"]["param"] == "tools[0].type", tool
        sent += 1
    assert upstream.requests() == []
    image = [{"type": "text", "text": "what is in this picture?"},
             {"type": "image_url", "image_url": {"url": f"{trap.url}/cat.png"}}]  # fmt: skip
    function = {"type": "function", "server_url": trap.url,
                "function": {"name": "fetch", "parameters": {"type": "object"}, "url": trap.url}}  # fmt: skip
    openai_client = client(faults_gateway)
    for model in ("steady", "auto"):
        reply = openai_client.chat.completions.create(model=model, messages=[{"role": "user", "content": image}])
        assert reply.model == "steady"
        reply = openai_client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                      tools=[function])  # type: ignore[list-item]  # fmt: skip
        assert reply.model == "steady"
        sent += 2
    assert {r["model"] for r in upstream.requests()} == {"steady"}, "only the registry's backend was called"
    time.sleep(0.3)
    assert trap.connections == before == 0
    figures["requests"], figures["connections"] = sent, trap.connections - before
    figures.summary = "{requests} requests naming another host: {connections} connections to it"
