"""Sessions over real sockets: an agent's tool loop, driven by the real `openai` client with exploration on, stays on
one model; when that model starts failing, the session escalates to another, once, and says why."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from .conftest import Gateway, Upstream, free_port

REGISTRY = """
models:
  - {name: alpha, litellm_params: {model: openai/alpha, api_base: "{UPSTREAM}", timeout_s: 5}, quality: {default: 0.8},
     input_cost_per_mtok: 1, output_cost_per_mtok: 1}
  - {name: beta, litellm_params: {model: openai/beta, api_base: "{UPSTREAM}", timeout_s: 5}, quality: {default: 0.8},
     input_cost_per_mtok: 1, output_cost_per_mtok: 1}
  - {name: gamma, litellm_params: {model: openai/gamma, api_base: "{UPSTREAM}", timeout_s: 5}, quality: {default: 0.8},
     input_cost_per_mtok: 1, output_cost_per_mtok: 1}
router:
  circuit_breaker: {enabled: false}
  classifier:
    transformer_knn: {enabled: false}
    torch_head: {enabled: false}
learning:
  explore: "on"
  winrate: {exploration: 0.9}
storage: {flush_interval_ms: 50}
"""
TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file",
                                           "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip
FORCE = {"type": "function", "function": {"name": "read_file"}}


def _registry(upstream: Upstream, dead: str | None = None) -> str:
    """The registry; `dead`'s backend moved to a port nothing listens on."""
    text = REGISTRY.replace("{UPSTREAM}", f"{upstream.url}/v1")
    if dead is not None:
        text = text.replace(f"openai/{dead}, api_base: \"{upstream.url}/v1\"",
                            f"openai/{dead}, api_base: \"http://127.0.0.1:{free_port()}/v1\"")  # fmt: skip
    return text


@pytest.fixture
def session_gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return start_gateway(_registry(upstream))


def _turn(client: openai.OpenAI, messages: list[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=messages,
        tools=TOOLS,
        tool_choice=FORCE,  # type: ignore[arg-type]
    )
    message = raw.parse().choices[0].message
    return (
        raw.headers["x-autoroute-model"],
        raw.headers["x-autoroute-request-id"],
        message.model_dump(exclude_none=True),
    )


def _tool_loop(client: openai.OpenAI, opening: str, turns: int) -> list[tuple[str, str]]:
    """An agent: the model calls a tool, the tool answers, the model is asked again; `turns` requests."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding agent."},
                                      {"role": "user", "content": opening}]  # fmt: skip
    served = []
    for i in range(turns):
        model, request_id, message = _turn(client, messages)
        served.append((model, request_id))
        call = message["tool_calls"][0]
        messages += [message, {"role": "tool", "tool_call_id": call["id"], "content": f"contents of file {i}"}]
    return served


def test_a_tool_loop_stays_on_one_model_with_exploration_on(session_gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=session_gateway.base_url, api_key="unused", max_retries=0)
    loops = [_tool_loop(client, f"Fix the failing test number {n} in utils.py.", 5) for n in range(6)]

    firsts = {loop[0][0] for loop in loops}
    assert len(firsts) > 1, "exploration chose different models for different sessions"
    for loop in loops:
        assert {model for model, _ in loop} == {loop[0][0]}, f"a session switched model: {loop}"
    last = loops[-1]
    rows = {
        r["request_id"]: r
        for r in session_gateway.wait_rows(
            "SELECT * FROM routing_decisions WHERE request_id IN (?, ?, ?, ?, ?)",
            tuple(rid for _, rid in last),
            count=5,
        )
    }
    origin = last[0][1]
    assert [rows[rid]["session_origin"] for _, rid in last] == [origin] * 5
    assert len({rows[rid]["session_id"] for _, rid in last}) == 1
    assert [rows[rid]["router_name"] == "session" for _, rid in last] == [False, True, True, True, True]
    assert all("session: kept" in rows[rid]["selection_reason"] for _, rid in last[1:])


def test_a_session_escalates_when_its_model_fails(session_gateway: Gateway, upstream: Upstream) -> None:
    client = openai.OpenAI(base_url=session_gateway.base_url, api_key="unused", max_retries=0)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Refactor the parser module."}]
    pinned, first_id, message = _turn(client, messages)
    messages += [message, {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "..."}]

    broken = _registry(upstream, dead=pinned)  # the pinned model's backend goes away
    assert broken != session_gateway.config.read_text()
    _reload(session_gateway, broken)

    moved, moved_id, message = _turn(client, messages)
    messages += [message, {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "..."}]
    stays, _, _ = _turn(client, messages)

    assert moved != pinned and stays == moved, "escalated once, then kept the new model"
    row = session_gateway.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (moved_id,))[0]
    assert f"escalated from {pinned} to {moved}" in row["selection_reason"]
    assert row["session_origin"] == moved_id and row["attempts"] == 2


def _reload(gateway: Gateway, text: str) -> None:
    before = gateway.config.stat().st_mtime_ns
    gateway.config.write_text(text)
    os.utime(gateway.config, ns=(before + 1_000_000_000, before + 1_000_000_000))
    time.sleep(4)  # the watcher looks every 2 s
