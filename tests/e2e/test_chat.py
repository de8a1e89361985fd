"""model="auto" and named models through the real gateway, with the real openai client (sync, async, streaming)."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from .conftest import Gateway, Upstream

ROUTED = [
    ("Write a Python function that merges two sorted lists.", "coding", "coder"),
    ("Solve for x: 3x + 7 = 22", "math", "mathematician"),
    ("hello!", "chat", "mini"),
    ("Summarize this article in three bullet points: the council met on Tuesday to discuss the budget.", "summarization", "mini"),
    ("Translate 'where is the station' into Spanish", "translation", "mini"),
]  # fmt: skip


@pytest.mark.parametrize(("prompt", "task", "model"), ROUTED)
def test_auto_routes_each_task_to_its_backend_and_records_it(gateway: Gateway, prompt: str, task: str, model: str) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": prompt}])
    completion = raw.parse()

    assert completion.model == model
    assert completion.choices[0].message.content.startswith(f"[{model.replace('frontier', 'frontier-large')}]")
    assert raw.headers["x-autoroute-model"] == model
    assert raw.headers["x-autoroute-task"] == task
    assert raw.headers["x-autoroute-router"].startswith("static-rules@")
    assert raw.headers["x-autoroute-preference"] == "balanced"
    request_id = raw.headers["x-autoroute-request-id"]

    (decision,) = gateway.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))
    assert (decision["task"], decision["selected_model"], decision["status"]) == (task, model, "success")
    attempts = json.loads(decision["layer_attempts"])
    assert attempts and all({"layer", "confidence", "threshold", "latency_ms", "accepted"} <= set(a) for a in attempts)
    assert attempts[-1]["accepted"] is True and attempts[-1]["task"] == task
    alternatives = json.loads(decision["alternatives"])
    assert alternatives[0]["model"] == model and "score" in alternatives[0]
    assert decision["prompt_text"] == prompt[:500]

    (perf,) = gateway.wait_rows("SELECT * FROM model_performance WHERE request_id = ?", (request_id,))
    assert perf["outcome"] == "success" and perf["model"] == model and perf["task"] == task
    assert perf["prompt_tokens"] == completion.usage.prompt_tokens
    assert perf["completion_tokens"] == completion.usage.completion_tokens
    assert perf["latency_ms"] > 0 and perf["cost_source"] == "litellm"
    assert perf["cost_usd"] > 0 or model == "local-small"


def test_preference_suffix_changes_the_choice(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    prompt = [{"role": "user", "content": "Solve for x: 3x + 7 = 22"}]
    by_quality = client.chat.completions.with_raw_response.create(model="auto:quality", messages=prompt)
    by_latency = client.chat.completions.with_raw_response.create(model="auto:latency", messages=prompt)
    assert by_quality.headers["x-autoroute-model"] == "mathematician"
    assert by_latency.headers["x-autoroute-preference"] == "latency"
    # The specialist is the slowest backend by far: a latency preference must leave it.
    assert by_latency.headers["x-autoroute-model"] == "frontier"


def test_named_model_passes_through_with_parameters_untouched(gateway: Gateway, upstream: Upstream) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    params = {
        "temperature": 0.3, "max_tokens": 50, "stop": ["\n\n"], "n": 2, "seed": 7,
        "response_format": {"type": "json_object"}, "tools": tools, "tool_choice": "auto", "top_p": 0.9,
    }  # fmt: skip
    upstream.clear()
    raw = client.chat.completions.with_raw_response.create(
        model="frontier", messages=[{"role": "user", "content": "Give me JSON about cats"}], **params
    )
    completion = raw.parse()
    assert completion.model == "frontier" and len(completion.choices) == 2
    assert json.loads(completion.choices[0].message.content)["model"] == "frontier-large"
    assert raw.headers["x-autoroute-router"].startswith("passthrough@")
    (seen,) = [r for r in upstream.requests() if r["model"] == "frontier-large"]
    for key, value in params.items():
        assert seen["body"][key] == value, key
    request_id = raw.headers["x-autoroute-request-id"]
    (decision,) = gateway.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))
    assert decision["requested_model"] == "frontier" and decision["router_name"] == "passthrough"


def test_tool_call_answers_come_back_through_the_gateway(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    completion = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Write a python function for the weather API"}],
        tools=tools, tool_choice="required",
    )  # fmt: skip
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    follow_up = client.chat.completions.create(
        model="coder",
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [tc.model_dump() for tc in choice.message.tool_calls]},
            {"role": "tool", "tool_call_id": choice.message.tool_calls[0].id, "content": "sunny"},
        ],
    )
    assert follow_up.model == "coder"


def test_streaming_auto_with_usage(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": "Write a Python function that parses ISO dates"}],
        stream=True, stream_options={"include_usage": True},
    ) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-autoroute-model"] == "coder"
        request_id = response.headers["x-autoroute-request-id"]
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "coder" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "[coder] Write a Python function that parses ISO dates"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)

    (perf,) = gateway.wait_rows("SELECT * FROM model_performance WHERE request_id = ?", (request_id,))
    assert perf["outcome"] == "success" and perf["stream"] == 1
    assert 0 < perf["ttft_ms"] <= perf["latency_ms"]
    assert perf["completion_tokens"] == chunks[-1]["usage"]["completion_tokens"]


def test_streaming_without_include_usage_sends_no_usage_chunk_but_records_tokens(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    stream = client.chat.completions.create(
        model="mini", messages=[{"role": "user", "content": "hello there"}], stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.usage is None and c.choices for c in chunks)
    request_id = stream.response.headers["x-autoroute-request-id"]
    (perf,) = gateway.wait_rows("SELECT * FROM model_performance WHERE request_id = ?", (request_id,))
    assert perf["prompt_tokens"] > 0 and perf["completion_tokens"] > 0 and perf["cost_usd"] > 0


def test_async_client_concurrent_requests(gateway: Gateway) -> None:
    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused")
        prompts = [p for p, _, _ in ROUTED] * 4
        results = await asyncio.gather(
            *(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": p}]) for p in prompts)
        )
        await client.close()
        return [r.model for r in results]

    models = asyncio.run(run())
    assert models == [m for _, _, m in ROUTED] * 4


def test_async_streaming(gateway: Gateway) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused")
        stream = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Solve for x: 2x = 10"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return text

    assert asyncio.run(run()) == "[mathematician] Solve for x: 2x = 10"


def test_provider_reported_cost_is_preferred(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.chat.completions.with_raw_response.create(
        model="self-billing", messages=[{"role": "user", "content": "what does this cost"}]
    )
    usage = raw.parse().usage
    (perf,) = gateway.wait_rows(
        "SELECT * FROM model_performance WHERE request_id = ?", (raw.headers["x-autoroute-request-id"],)
    )
    assert perf["cost_source"] == "provider"
    assert perf["cost_usd"] == pytest.approx((usage.prompt_tokens + usage.completion_tokens) * 1e-6)


def test_registry_credentials_reach_the_backend(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="client-key-not-forwarded")
    completion = client.chat.completions.create(model="keyed", messages=[{"role": "user", "content": "hi"}])
    assert completion.model == "keyed"


def test_model_without_credentials_is_unavailable(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="keyless", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    assert info.value.body["code"] == "model_unavailable"
    assert "E2E_UNSET_KEY_VARIABLE" in info.value.body["message"]
