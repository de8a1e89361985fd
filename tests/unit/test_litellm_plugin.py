"""autoroute as a LiteLLM proxy callback: routing in the pre-call hook, the answering model named in the response and
its headers, attempts from LiteLLM's events, the call's end reported to the sink."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import litellm
import pytest
from litellm.constants import RETURN_RAW_MODEL_NAME_METADATA_KEY

from router_plugins import litellm_plugin
from router_plugins.errors import RoutingError
from router_plugins.litellm_plugin import AutorouteCallback
from router_plugins.plugin_calls import Attempt, PluginCall
from router_plugins.plugin_engine import EngineHolder
from router_plugins.types import ChatRequest, Classification

CONFIG = (Path(__file__).parent.parent / "fixtures" / "litellm_plugin" / "registry.yaml").read_text()
CODING = "Implement a regex in a code snippet that parses dates."
START = datetime.datetime(2026, 1, 1, 12, 0, 0)


class ListSink:
    """Keeps what the callback reports."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.ended: list[tuple[PluginCall, str, str | None, int, BaseException | None]] = []
        self.refusals: list[tuple[ChatRequest, RoutingError]] = []
        self.started = 0

    def labels(self) -> Sequence[tuple[str, str]]:
        return ()

    def attach(self, engines: EngineHolder) -> None:
        self.engines = engines

    async def start(self) -> None:
        self.started += 1

    def attempt(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def finished(
        self, call: PluginCall, status: str, served_by: str | None, attempts: int, error: BaseException | None
    ) -> None:
        self.ended.append((call, status, served_by, attempts, error))

    def refused(
        self, request: ChatRequest, created_at: float, classification: Classification, language: str,
        error: RoutingError,
    ) -> None:  # fmt: skip
        self.refusals.append((request, error))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG + f"storage: {{data_dir: {tmp_path / 'data'}}}\n")
    return path


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def callback(config: Path, sink: ListSink) -> AutorouteCallback:
    return AutorouteCallback(config, sink=sink)


def _body(content: str, model: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "litellm_call_id": "call-1", **extra}


def _hook(callback: AutorouteCallback, data: dict) -> dict:
    return asyncio.run(callback.async_pre_call_hook(None, None, data, "acompletion"))


def _event(data: dict, model: str, **extra: Any) -> dict[str, Any]:
    """The kwargs of one LiteLLM success or failure event for `data`'s call, answered by `model`."""
    return {"model": model, "litellm_params": {"metadata": {**data["metadata"], "model_group": model}}, **extra}


def test_auto_is_routed_with_the_decisions_fallback_order(callback: AutorouteCallback, sink: ListSink) -> None:
    data = _hook(callback, _body(CODING))
    assert data["model"] == "coder"
    assert (data["fallbacks"], data["num_retries"]) == (["mini"], 0), "one call per backend, in the decision's order"
    assert data["metadata"][RETURN_RAW_MODEL_NAME_METADATA_KEY] is True, "LiteLLM must not stamp `auto` over it"
    meta = data["metadata"]["autoroute"]
    assert (meta["request_id"], meta["task"], meta["order"]) == ("call-1", "coding", ["coder", "mini"])
    assert meta["router"].startswith("static-rules@") and sink.started == 1
    cheap = _hook(callback, _body("hi there, how are you?", "auto:cost"))
    assert cheap["model"] == "mini"


def test_a_named_registry_model_is_recorded_and_other_names_pass_untouched(callback: AutorouteCallback) -> None:
    named = _hook(callback, _body("hello", "coder"))
    assert named["model"] == "coder" and "fallbacks" not in named, "a named model is not re-routed"
    assert named["metadata"]["autoroute"]["router"].startswith("passthrough@")
    assert RETURN_RAW_MODEL_NAME_METADATA_KEY not in named["metadata"]
    other = _body("hello", "gpt-4o-somewhere-else")
    assert _hook(callback, dict(other)) == other


def test_what_cannot_be_routed_is_refused_with_litellms_error(callback: AutorouteCallback, sink: ListSink) -> None:
    with pytest.raises(litellm.BadRequestError, match="preference") as bad:
        _hook(callback, _body("hello", "auto:fastest"))
    assert bad.value.status_code == 400
    huge = _body("x" * 4_000_000)
    with pytest.raises(litellm.BadRequestError, match="context window") as too_large:
        _hook(callback, huge)
    assert too_large.value.code == "context_length_exceeded"
    assert [error.code for _, error in sink.refusals] == ["context_length_exceeded"], "recorded as refused"


def test_a_fallback_is_two_attempts_and_the_call_ends_with_the_second(
    callback: AutorouteCallback, sink: ListSink
) -> None:
    data = _hook(callback, _body(CODING))
    failed = _event(data, "coder", exception=litellm.InternalServerError("boom", "openai", "coder"))
    asyncio.run(callback.async_log_failure_event(failed, None, START, START + datetime.timedelta(seconds=2)))
    assert sink.ended == [], "the call goes on with its fallback"
    usage = SimpleNamespace(usage=SimpleNamespace(prompt_tokens=1000, completion_tokens=2000))
    ok = _event(data, "mini", response_cost=0.0)
    asyncio.run(callback.async_log_success_event(ok, usage, START, START + datetime.timedelta(seconds=1.5)))
    first, second = sink.attempts
    assert (first.attempt, first.model, first.outcome) == (1, "coder", "failure")
    assert first.error_class == "InternalServerError"
    assert (first.latency_ms, first.cost_usd, first.task) == (2000.0, None, "coding")
    assert (second.attempt, second.model, second.outcome, second.latency_ms, second.ttft_ms) == (2, "mini", "success",
                                                                                                  1500.0, 1500.0)
    assert (second.cost_usd, second.cost_source) == (pytest.approx((1000 * 0.1 + 2000 * 0.2) / 1e6), "registry")
    ((call, status, served_by, attempts, error),) = sink.ended
    assert (call.decision.model, status, served_by, attempts, error) == ("coder", "success", "mini", 2, None)


def test_every_backend_failing_ends_the_call_as_a_failure(callback: AutorouteCallback, sink: ListSink) -> None:
    data = _hook(callback, _body(CODING))
    for model in ("coder", "mini"):
        failed = _event(data, model, exception=TimeoutError("slow"))
        asyncio.run(callback.async_log_failure_event(failed, None, START, START + datetime.timedelta(seconds=30)))
    error = litellm.Timeout("slow", "mini", "openai")
    asyncio.run(callback.async_post_call_failure_hook(data, error, None))
    ((_, status, served_by, attempts, ended_by),) = sink.ended
    assert (status, served_by, attempts, ended_by) == ("failure", None, 2, error)
    asyncio.run(callback.async_post_call_failure_hook(data, error, None))
    assert len(sink.ended) == 1, "a call ends once"


def test_the_answer_and_its_headers_name_the_model_that_answered(callback: AutorouteCallback) -> None:
    data = _hook(callback, _body(CODING))
    response = SimpleNamespace(model="auto", _hidden_params={"additional_headers": {"x-litellm-model-group": "mini"}})
    asyncio.run(callback.async_post_call_success_hook(data, None, response))
    assert response.model == "mini", "the fallback answered"
    headers = asyncio.run(callback.async_post_call_response_headers_hook(data, None, response))
    assert headers is not None
    assert (headers["x-autoroute-model"], headers["x-autoroute-request-id"], headers["x-autoroute-task"]) == (
        "mini", "call-1", "coding")  # fmt: skip
    assert headers["x-autoroute-router"].startswith("static-rules@") and headers["x-autoroute-preference"] == "balanced"
    failed = asyncio.run(callback.async_post_call_response_headers_hook(data, None, None))
    assert failed is not None and failed["x-autoroute-model"] == "coder", "no answer: the routed model"
    assert asyncio.run(callback.async_post_call_response_headers_hook({"model": "x"}, None, None)) is None


async def _chunks(models: Sequence[str], fail: bool = False) -> AsyncIterator[Any]:
    for model in models:
        yield SimpleNamespace(model=model)
    if fail:
        raise litellm.InternalServerError("cut", "openai", "coder")


def test_a_stream_names_the_model_in_every_chunk_and_a_cut_is_partial(
    callback: AutorouteCallback, sink: ListSink
) -> None:
    data = _hook(callback, _body(CODING, stream=True))

    async def relay(fail: bool) -> list[str]:
        out = []
        chunks = _chunks(["auto", "auto"], fail)
        async for chunk in callback.async_post_call_streaming_iterator_hook(None, chunks, data):
            out.append(chunk.model)
        return out

    assert asyncio.run(relay(fail=False)) == ["coder", "coder"]
    assert sink.ended == [], "a whole stream ends with LiteLLM's success event"
    first = START + datetime.timedelta(milliseconds=120)
    event = _event(data, "coder", completion_start_time=first)
    response = SimpleNamespace(usage=SimpleNamespace(prompt_tokens=10, completion_tokens=20))
    asyncio.run(callback.async_log_success_event(event, response, START, START + datetime.timedelta(seconds=1)))
    assert (sink.attempts[-1].ttft_ms, sink.attempts[-1].stream) == (120.0, True)
    cut = _hook(callback, _body(CODING, stream=True, litellm_call_id="call-2"))
    with pytest.raises(litellm.InternalServerError):
        asyncio.run(relay_all(callback, cut))
    assert [(status, served) for _, status, served, _, _ in sink.ended] == [("success", "coder"), ("partial", "coder")]


async def relay_all(callback: AutorouteCallback, data: dict) -> None:
    async for _ in callback.async_post_call_streaming_iterator_hook(None, _chunks(["auto"], fail=True), data):
        pass


def test_events_of_calls_the_plugin_did_not_route_are_ignored(callback: AutorouteCallback, sink: ListSink) -> None:
    other = {"model": "gpt-4o", "litellm_params": {"metadata": {"model_group": "gpt-4o"}}}
    asyncio.run(callback.async_log_success_event(other, None, START, START))
    assert sink.attempts == [] and sink.ended == []


def test_the_proxy_handler_is_built_on_first_access(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOROUTE_CONFIG", str(config))
    monkeypatch.setattr(litellm_plugin, "_handler", None)
    handler = litellm_plugin.proxy_handler
    assert isinstance(handler, AutorouteCallback) and litellm_plugin.proxy_handler is handler
    assert handler.sink is None, "routing alone"
    data = _hook(handler, _body(CODING))
    assert data["model"] == "coder"
    with pytest.raises(AttributeError):
        litellm_plugin.nothing_here  # noqa: B018


def test_the_prompts_language_narrows_the_candidates_as_in_the_gateway(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.replace("input_cost_per_mtok: 1.0,", "input_cost_per_mtok: 1.0, languages: [en],"))
    callback = AutorouteCallback(config, tmp_path / "data")
    german = "Schreib eine Python-Funktion, die einen regulären Ausdruck für Datumsangaben implementiert."

    data = _hook(callback, _body(german))
    assert data["metadata"]["autoroute"]["language"] == "de"
    assert data["model"] == "mini", "coder lists English only"
    data = _hook(callback, _body(CODING))
    assert (data["model"], data["metadata"]["autoroute"]["language"]) == ("coder", "en")
