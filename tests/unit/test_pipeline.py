"""The pipeline's sequencing with a scripted forwarder: fallback order, bounds, and what gets recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from proxy.errors import ApiError, backends_failed, routing_error
from proxy.events import DecisionRecord, PerformanceRecord, Record
from proxy.forward import StreamHandle, UpstreamError, Usage
from proxy.pipeline import BackendsFailed, Completed, Pipeline, Streaming
from proxy.recorder import Recorder
from proxy.runtime import build_runtime
from router_plugins.errors import RoutingError
from router_plugins.registry import ModelEntry, parse_registry
from router_plugins.types import ChatRequest

REGISTRY = """
models:
  - {name: a, litellm_params: {model: openai/a}, input_cost_per_mtok: 1, output_cost_per_mtok: 1, quality: {default: 0.9}}
  - {name: b, litellm_params: {model: openai/b}, input_cost_per_mtok: 1, output_cost_per_mtok: 1, quality: {default: 0.8}}
  - {name: c, litellm_params: {model: openai/c}, input_cost_per_mtok: 1, output_cost_per_mtok: 1, quality: {default: 0.7}}
router:
  max_attempts: 2
  classifier: {static_embedding: {enabled: false}}
"""


class ListStore:
    def __init__(self) -> None:
        self.rows: list[Record] = []

    def write_batch(self, records: Sequence[Record]) -> None:
        self.rows.extend(records)

    def decision_exists(self, request_id: str) -> bool:
        return any(isinstance(r, DecisionRecord) and r.request_id == request_id for r in self.rows)


class ScriptedForwarder:
    """Fails the models in `failures` with the given error, answers the others."""

    def __init__(self, failures: dict[str, UpstreamError]) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def cost(self, model: ModelEntry, usage: Usage) -> tuple[float | None, str | None]:
        return (0.001, "litellm") if usage.prompt_tokens else (None, None)

    async def complete(self, model: ModelEntry, request: ChatRequest) -> tuple[dict[str, Any], Usage]:
        self.calls.append(model.name)
        if model.name in self.failures:
            raise self.failures[model.name]
        return {"model": model.name, "choices": []}, Usage(3, 4)

    async def open_stream(self, model: ModelEntry, request: ChatRequest) -> StreamHandle:
        self.calls.append(model.name)
        if model.name in self.failures:
            raise self.failures[model.name]

        async def rest() -> Any:
            yield {"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
            yield {"id": "x", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

        first = {"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        return StreamHandle(first, rest().__aiter__(), model.name)


def _request(stream: bool = False, model: str = "auto") -> ChatRequest:
    return ChatRequest("req-1", model, ({"role": "user", "content": "hello"},), stream=stream, preference="quality")


def _run(
    forwarder: ScriptedForwarder, request: ChatRequest, registry_yaml: str = REGISTRY
) -> tuple[Completed | Streaming | ApiError, list[Record]]:
    registry = parse_registry(registry_yaml)
    runtime = build_runtime(registry)
    store = ListStore()

    async def go() -> Completed | Streaming | ApiError:
        recorder = Recorder(store, flush_interval_ms=1)  # type: ignore[arg-type]
        await recorder.start()
        pipeline = Pipeline(lambda: runtime, forwarder, recorder)  # type: ignore[arg-type]
        try:
            result: Completed | Streaming | ApiError = await pipeline.handle(request)
            if isinstance(result, Streaming):
                async for _ in result.chunks:  # type: ignore[attr-defined]
                    pass
        except RoutingError as exc:  # mapped as the app's exception handlers map them
            result = routing_error(exc)
        except BackendsFailed as exc:
            result = backends_failed(exc.errors, exc.headers)
        await recorder.stop()
        return result

    return asyncio.run(go()), store.rows


def _performance(rows: list[Record]) -> list[tuple[int, str, str]]:
    return [(r.attempt, r.model, r.outcome) for r in rows if isinstance(r, PerformanceRecord)]


@pytest.mark.parametrize("stream", [False, True])
def test_retryable_failure_falls_back_to_the_next_ranked_model(stream: bool) -> None:
    forwarder = ScriptedForwarder({"a": UpstreamError(502, "InternalServerError", "boom", True)})
    result, rows = _run(forwarder, _request(stream))
    assert not isinstance(result, ApiError)
    assert result.headers["x-autoroute-model"] == "b"
    assert forwarder.calls == ["a", "b"]
    assert _performance(rows) == [(1, "a", "failure"), (2, "b", "success")]
    decision = [r for r in rows if isinstance(r, DecisionRecord)][-1]
    assert (decision.routed_model, decision.selected_model, decision.attempts) == ("a", "b", 2)


def test_attempts_are_bounded_by_max_attempts() -> None:
    error = UpstreamError(502, "InternalServerError", "boom", True)
    forwarder = ScriptedForwarder({"a": error, "b": error, "c": error})
    result, rows = _run(forwarder, _request())
    assert isinstance(result, ApiError) and result.status == 502
    assert forwarder.calls == ["a", "b"], "max_attempts: 2"
    assert result.headers["x-autoroute-model"] == "b"
    decisions = [r for r in rows if isinstance(r, DecisionRecord)]
    assert [(r.status, r.error_code) for r in decisions] == [("failure", "upstream_unavailable")]
    assert decisions[0].error_message == "a: boom; b: boom"


def test_a_request_error_is_not_retried_elsewhere() -> None:
    forwarder = ScriptedForwarder({"a": UpstreamError(400, "BadRequestError", "bad schema", False)})
    result, rows = _run(forwarder, _request())
    assert isinstance(result, ApiError) and (result.status, result.message) == (400, "bad schema")
    assert forwarder.calls == ["a"]
    assert _performance(rows) == [(1, "a", "failure")]


def test_all_rate_limited_is_429() -> None:
    error = UpstreamError(429, "RateLimitError", "slow down", True)
    result, _ = _run(ScriptedForwarder({"a": error, "b": error}), _request())
    assert isinstance(result, ApiError) and (result.status, result.type) == (429, "rate_limit_error")


def test_named_model_gets_no_fallback_and_unknown_is_404() -> None:
    forwarder = ScriptedForwarder({"b": UpstreamError(502, "InternalServerError", "boom", True)})
    result, _ = _run(forwarder, _request(model="b"))
    assert isinstance(result, ApiError) and forwarder.calls == ["b"]
    missing, _ = _run(ScriptedForwarder({}), _request(model="zzz"))
    assert isinstance(missing, ApiError) and (missing.status, missing.code) == (404, "model_not_found")


def test_a_request_refused_at_routing_is_recorded_with_its_classification_and_reason() -> None:
    forwarder = ScriptedForwarder({})
    request = ChatRequest("req-1", "auto", ({"role": "user", "content": "hello"},), max_cost_per_1k=0.0000001)

    result, rows = _run(forwarder, request)

    assert isinstance(result, ApiError) and result.code == "no_model_satisfies_constraints"
    assert forwarder.calls == [] and _performance(rows) == []
    (decision,) = [r for r in rows if isinstance(r, DecisionRecord)]
    assert (decision.status, decision.error_code, decision.requested_model) == ("rejected", result.code, "auto")
    assert decision.task is not None and decision.layer_attempts, "how it was classified is kept"
    assert decision.selected_model is None and "constraints" in (decision.error_message or "")


def test_stream_records_usage_and_ttft() -> None:
    result, rows = _run(ScriptedForwarder({}), _request(stream=True))
    assert isinstance(result, Streaming)
    (perf,) = [r for r in rows if isinstance(r, PerformanceRecord)]
    assert (perf.outcome, perf.prompt_tokens, perf.completion_tokens, perf.cost_usd) == ("success", 3, 1, 0.001)
    assert perf.ttft_ms is not None and 0 <= perf.ttft_ms <= perf.latency_ms


class FakeEmbeddingLayer:
    name = "fake_transformer"
    needs_embedding = True

    def classify(self, text: str, embedding: Any) -> Any:
        from router_plugins.classify.layer import LayerVerdict

        return LayerVerdict("math" if embedding[0] > 0 else None, 0.9, "fake")


class FakeServer:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def embed(self, texts: Sequence[str]) -> Any:
        self.calls += 1
        if self.fail:
            raise RuntimeError("model not loaded")
        import numpy as np

        return np.ones((len(texts), 4))


def _classified_layer(server: FakeServer, text: str) -> tuple[str, str]:
    import dataclasses

    from router_plugins.classify import KeywordLayer, TaskClassifier

    registry = parse_registry(REGISTRY.replace("router:", "tasks:\n  - {name: chat, keywords: [hello]}\n  - {name: math}\nrouter:\n  fallback_task: chat"))
    runtime = build_runtime(registry)
    classifier = TaskClassifier([(KeywordLayer(registry.tasks), 0.5), (FakeEmbeddingLayer(), 0.5)], "chat")
    runtime = dataclasses.replace(runtime, engine=dataclasses.replace(runtime.engine, classifier=classifier))
    pipeline = Pipeline(lambda: runtime, ScriptedForwarder({}), Recorder(ListStore()), server)  # type: ignore[arg-type]
    classification = asyncio.run(pipeline._classify(runtime, text))
    return classification.task, classification.layer


def test_the_transformer_layers_run_only_when_the_cheap_ones_are_unsure() -> None:
    sure = FakeServer()
    assert _classified_layer(sure, "hello there") == ("chat", "keywords") and sure.calls == 0
    unsure = FakeServer()
    assert _classified_layer(unsure, "integrate x squared") == ("math", "fake_transformer") and unsure.calls == 1


def test_a_failing_embedding_keeps_the_cheap_answer() -> None:
    assert _classified_layer(FakeServer(fail=True), "integrate x squared") == ("chat", "fallback")


# a: English only, the best; b: Chinese and English; c: French only. Without languages, `a` wins every `auto` request.
LANGUAGES = (
    REGISTRY.replace("quality: {default: 0.9}}", "quality: {default: 0.9}, languages: [en]}")
    .replace("quality: {default: 0.8}}", "quality: {default: 0.8}, languages: [zh, en], supports_tools: false}")
    .replace("quality: {default: 0.7}}", "quality: {default: 0.7}, languages: [fr]}")
)
CHINESE = "请帮我把这段代码改得更快一些：\n```python\nfor i in range(len(xs)):\n    total += xs[i]\n```"


def _said(text: str, model: str = "auto", **params: Any) -> ChatRequest:
    return ChatRequest("req-1", model, ({"role": "user", "content": text},), preference="quality", params=params)


def _decision(rows: list[Record]) -> DecisionRecord:
    return [r for r in rows if isinstance(r, DecisionRecord)][-1]


def test_auto_routes_among_the_models_that_serve_the_language() -> None:
    result, rows = _run(ScriptedForwarder({}), _said(CHINESE), LANGUAGES)
    assert not isinstance(result, ApiError)
    assert (result.headers["x-autoroute-model"], result.headers["x-autoroute-language"]) == ("b", "zh")
    decision = _decision(rows)
    assert (decision.language, decision.selected_model) == ("zh", "b")
    assert [a["model"] for a in decision.alternatives] == ["b"], "a (English) and c (French) are not candidates"
    assert "language 'zh': 1 of 3 models serve it" in decision.selection_reason


def test_a_model_without_languages_serves_every_language() -> None:
    open_c = LANGUAGES.replace(", languages: [fr]}", "}")
    result, rows = _run(ScriptedForwarder({}), _said(CHINESE), open_c)
    assert not isinstance(result, ApiError)
    assert sorted(a["model"] for a in _decision(rows).alternatives) == ["b", "c"]


def test_a_language_no_model_lists_routes_among_all_and_says_so() -> None:
    result, rows = _run(ScriptedForwarder({}), _said("今日の天気はどうですか？"), LANGUAGES)
    assert not isinstance(result, ApiError) and result.headers["x-autoroute-language"] == "ja"
    decision = _decision(rows)
    assert decision.selected_model == "a" and len(decision.alternatives) == 3
    assert "no available model lists language 'ja'" in decision.selection_reason


def test_when_no_serving_model_can_take_the_request_all_are_asked() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    result, rows = _run(ScriptedForwarder({}), _said(CHINESE, tools=tools), LANGUAGES)
    assert not isinstance(result, ApiError), "b serves Chinese but takes no tools; the request must not fail"
    decision = _decision(rows)
    assert decision.selected_model == "a"
    assert "no available model lists language 'zh', so all were candidates" in (decision.selection_reason or ""), (
        "b, which takes no tools, was never a candidate"
    )


def test_unknown_language_does_not_narrow_the_choice() -> None:
    result, rows = _run(ScriptedForwarder({}), _said("👍 ok"), LANGUAGES)
    assert not isinstance(result, ApiError) and result.headers["x-autoroute-language"] == "und"
    decision = _decision(rows)
    assert (decision.language, decision.selected_model) == ("und", "a")
    assert "language" not in decision.selection_reason


def test_a_named_model_is_not_filtered_but_its_language_is_recorded() -> None:
    forwarder = ScriptedForwarder({})
    result, rows = _run(forwarder, _said(CHINESE, model="c"), LANGUAGES)
    assert not isinstance(result, ApiError) and forwarder.calls == ["c"]
    assert result.headers["x-autoroute-language"] == "zh"
    assert _decision(rows).language == "zh"


def test_a_failure_response_names_the_language_too() -> None:
    error = UpstreamError(502, "InternalServerError", "boom", True)
    result, _ = _run(ScriptedForwarder({"b": error}), _said(CHINESE), LANGUAGES)
    assert isinstance(result, ApiError) and result.headers["x-autoroute-language"] == "zh"
