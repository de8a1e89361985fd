"""autoroute inside an existing LiteLLM proxy: a callback that routes `model="auto"`, names the backend that answered
and reports every call to a sink.

LiteLLM loads it from its config (`litellm_settings.callbacks`) in one of two forms:

- `proxy.litellm_plugin.proxy_handler`: at parity with the gateway. This callback with the store sink
  (`proxy/litellm_plugin.py`): decisions and attempts go into the config's store, feedback for its requests is
  accepted by request id, and the learning loop runs.
- `router_plugins.litellm_plugin.proxy_handler`: routing alone. Nothing is recorded or learned here; the learned
  state a gateway on the same data directory publishes is still picked up.

The registry is `AUTOROUTE_CONFIG` (default `config.yaml`). LiteLLM's `model_list` names every registry model (the
same `model_name`) and `auto` (the proxy accepts only names it knows; the hook rewrites it). Per chat request:

1. pre-call hook: classify and route with the one assembly, as `autoroute serve` on the same config and data
   directory does (`plugin_engine.EngineHolder`, which also swaps in new learned state). `model` becomes the chosen
   registry model, `fallbacks` the decision's next candidates (`router.max_attempts` in all) and `num_retries` 0: one
   call per backend in the decision's order, as in the gateway. `metadata.autoroute` carries the decision. The
   request id is LiteLLM's call id (its `x-litellm-call-id` header). A request naming a registry model is recorded as
   `passthrough`; other names pass untouched. One that cannot be routed is refused (LiteLLM answers 400 or 503).
2. LiteLLM's success and failure events, one per backend call: an `Attempt`, numbered by the backend's place in
   that order.
3. post-call success hook and streaming iterator hook: the response's `model` (each chunk's) is the registry model
   that answered, not `auto`.
4. response-headers hook: `x-autoroute-request-id`, `-model` (the one that answered), `-task`, `-language`,
   `-router`, `-preference`, and `-arm` under an A/B test.
5. the call's end (its success event, the proxy's failure hook, a stream cut short): the sink's `finished`.

This module imports LiteLLM (it is loaded by LiteLLM); nothing else in `router_plugins` does.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litellm
from litellm.constants import RETURN_RAW_MODEL_NAME_METADATA_KEY
from litellm.integrations.custom_logger import CustomLogger

from .assembly import Routed
from .errors import RoutingError
from .headers import decision_headers
from .language import detect_language
from .plugin_calls import Attempt, CallSink, PluginCall
from .plugin_engine import EngineHolder
from .prices import resolve_prices
from .registry import Registry
from .types import PREFERENCES, ChatRequest

log = logging.getLogger(__name__)

METADATA_KEY = "autoroute"
MAX_OPEN_CALLS = 10_000
"""Calls waiting for their end; beyond this the oldest is forgotten (LiteLLM never reported how it ended)."""
PASSED_PARAMS = ("tools", "functions", "max_tokens", "max_completion_tokens")
"""What routing reads of the request beyond its messages: tool support and the room the answer needs."""


@dataclass
class _Open:
    call: PluginCall
    attempts: int = 0


class AutorouteCallback(CustomLogger):
    """The LiteLLM callback (its hooks: the module docstring). With no sink it only routes."""

    def __init__(
        self, config: str | Path | None = None, data_dir: str | Path | None = None, sink: CallSink | None = None
    ) -> None:
        super().__init__()
        self.sink = sink
        self.engines = EngineHolder(config, data_dir, labels=sink.labels if sink is not None else None,
                                    prepare=_with_litellm_prices)  # fmt: skip
        self.data_dir = self.engines.data.root
        if sink is not None:
            sink.attach(self.engines)
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._started: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def registry(self) -> Registry:
        return self.engines.registry

    # -- routing ----------------------------------------------------------------------------------------------

    def decide(self, data: dict[str, Any]) -> PluginCall | None:
        """Route one LiteLLM request body in place; None when it names a model the registry does not serve."""
        engine = self.engines.engine
        registry = engine.registry
        requested = str(data.get("model") or "")
        auto = requested == "auto" or requested.startswith("auto:")
        named = registry.model(requested)
        if not auto and (named is None or not named.enabled):
            return None
        preference = (requested.partition(":")[2] if auto else "") or registry.router.default_preference
        if preference not in PREFERENCES:
            raise _refusal(f"unknown routing preference {preference!r}; use one of {', '.join(PREFERENCES)}",
                           "invalid_preference", retryable=False)  # fmt: skip
        request_id = str(data.get("litellm_call_id") or uuid.uuid4())
        params = {k: data[k] for k in PASSED_PARAMS if data.get(k) is not None}
        request = ChatRequest(request_id, requested, tuple(data.get("messages") or ()), bool(data.get("stream")),
                              preference, params)  # fmt: skip
        created_at, text = time.time(), request.last_user_text()
        classification, language = engine.classify(text), detect_language(text)
        try:
            routed = engine.route(request, classification, language) if auto else Routed(
                engine.passthrough(request, classification))  # fmt: skip
        except RoutingError as exc:
            if self.sink is not None:
                self.sink.refused(request, created_at, classification, language, exc)
            raise _refusal(str(exc), exc.code, exc.retryable) from exc
        call = PluginCall(request, created_at, classification, language, routed.decision, routed.arm,
                          routed.counterfactual)  # fmt: skip
        self._rewrite(data, call, registry.router.max_attempts)
        if self.sink is not None:
            self._open[request_id] = _Open(call)
            while len(self._open) > MAX_OPEN_CALLS:
                self._open.popitem(last=False)
        return call

    @staticmethod
    def _rewrite(data: dict[str, Any], call: PluginCall, max_attempts: int) -> None:
        decision, request, c = call.decision, call.request, call.classification
        order = decision.fallback_order[:max_attempts] if request.is_auto else (decision.model,)
        data["model"] = decision.model
        metadata = data.setdefault("metadata", {})
        if request.is_auto:
            data["fallbacks"], data["num_retries"] = list(order[1:]), 0
            metadata[RETURN_RAW_MODEL_NAME_METADATA_KEY] = True  # LiteLLM would restamp `auto` over our model name
        metadata[METADATA_KEY] = {
            "request_id": request.request_id, "requested_model": request.requested_model, "auto": request.is_auto,
            "preference": request.preference, "task": c.task, "task_confidence": c.confidence, "layer": c.layer,
            "language": call.language, "router": f"{decision.router}@{decision.router_version}",
            "reason": decision.reason, "propensity": decision.propensity, "ab_arm": call.arm,
            "alternatives": [a.to_dict() for a in decision.alternatives], "order": list(order),
            "counterfactual_model": call.counterfactual.model if call.counterfactual else None,
            "stream": request.stream,
        }  # fmt: skip

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        if call_type in ("completion", "acompletion"):
            await self._ensure_started()
            self.decide(data)
        return data

    async def _ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await self._started

    async def _start(self) -> None:
        self._tasks.append(asyncio.create_task(self.engines.watch(), name="autoroute-engine-watch"))
        if self.sink is not None:
            await self.sink.start()

    # -- the answer -------------------------------------------------------------------------------------------

    def served_model(self, response: object, data: dict[str, Any]) -> str:
        """The registry model that answered: the model group LiteLLM reports (a fallback's), else the routed one."""
        hidden = getattr(response, "_hidden_params", None)
        headers = (hidden.get("additional_headers") if isinstance(hidden, dict) else None) or {}
        group = headers.get("x-litellm-model-group")
        if isinstance(group, str) and self.registry.model(group) is not None:
            return group
        return str(data.get("model"))

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: Any, response: Any) -> Any:
        meta = _meta(data)
        if meta is not None and meta["auto"] and hasattr(response, "model"):
            response.model = self.served_model(response, data)
        return response

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict
    ) -> AsyncGenerator[Any, None]:
        meta = _meta(request_data)
        if meta is None:
            async for item in response:
                yield item
            return
        served = self.served_model(response, request_data)
        try:
            async for item in response:
                if meta["auto"]:
                    if isinstance(item, dict):
                        item["model"] = served
                    elif hasattr(item, "model"):
                        item.model = served
                yield item
        except BaseException as exc:  # the client left, or the backend broke off after the first chunk
            order = meta["order"]
            self._finish(meta["request_id"], "partial", served, order.index(served) + 1 if served in order else None,
                         exc if isinstance(exc, Exception) else None)  # fmt: skip
            raise

    async def async_post_call_response_headers_hook(
        self,
        data: dict,
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        meta = _meta(data)
        if meta is None:
            return None
        served = self.served_model(response, data) if response is not None else str(data.get("model"))
        return decision_headers(meta["request_id"], served, meta["task"], meta["language"], meta["router"],
                                meta["preference"], meta["ab_arm"])  # fmt: skip

    # -- outcomes ---------------------------------------------------------------------------------------------

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._attempt(kwargs, response_obj, start_time, end_time, ok=True)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._attempt(kwargs, response_obj, start_time, end_time, ok=False)

    async def async_post_call_failure_hook(
        self,
        request_data: dict,
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        meta = _meta(request_data)
        if meta is not None:
            self._finish(meta["request_id"], "failure", None, None, original_exception)

    def attempt_of(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any, ok: bool
    ) -> Attempt | None:
        """The attempt LiteLLM reports in one success or failure event; None for a call that was not ours."""
        meta = _meta(kwargs.get("litellm_params") or {})
        if meta is None:
            return None
        metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        model = str(metadata.get("model_group") or kwargs.get("model"))
        order = meta["order"]
        number = order.index(model) + 1 if model in order else len(order) + 1
        latency = _ms(start_time, end_time)
        first = kwargs.get("completion_start_time")
        stream = bool(meta["stream"])
        if not ok:
            error = kwargs.get("exception")
            ttft = None if stream else latency
            return Attempt(meta["request_id"], number, model, meta["task"], "failure", latency, ttft, stream=stream,
                           error_class=type(error).__name__ if error is not None else None,
                           error_message=str(error)[:2000] if error is not None else None)  # fmt: skip
        usage = getattr(response_obj, "usage", None)
        prompt, completion = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
        cost, source = self._cost(model, kwargs.get("response_cost"), prompt, completion)
        ttft = _ms(start_time, first) if stream and first is not None else latency
        return Attempt(meta["request_id"], number, model, meta["task"], "success", latency, ttft, prompt, completion,
                       cost, source, stream)  # fmt: skip

    def _attempt(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any, ok: bool) -> None:
        if self.sink is None:
            return
        attempt = self.attempt_of(kwargs, response_obj, start_time, end_time, ok)
        if attempt is None:
            return
        self.sink.attempt(attempt)
        pending = self._open.get(attempt.request_id)
        if pending is not None:
            pending.attempts = max(pending.attempts, attempt.attempt)
        if ok:
            self._finish(attempt.request_id, "success", attempt.model, attempt.attempt, None)

    def _finish(
        self, request_id: str, status: str, served_by: str | None, attempts: int | None, error: BaseException | None
    ) -> None:
        pending = self._open.pop(request_id, None)
        if pending is None or self.sink is None:
            return  # not ours, or already ended (a stream cut short, then LiteLLM's own event)
        self.sink.finished(pending.call, status, served_by, attempts or max(pending.attempts, 1), error)

    def _cost(
        self, model_name: str, litellm_cost: Any, prompt: int | None, completion: int | None
    ) -> tuple[float | None, str | None]:
        """The registry's prices (as served) × the tokens, as the gateway prices a call; else LiteLLM's figure."""
        model = self.registry.model(model_name)
        if model is not None and model.input_cost_per_mtok is not None and model.output_cost_per_mtok is not None:
            if prompt is not None or completion is not None:
                usd = (prompt or 0) * model.input_cost_per_mtok + (completion or 0) * model.output_cost_per_mtok
                return usd / 1e6, "registry"
        if isinstance(litellm_cost, (int, float)):
            return float(litellm_cost), "litellm"
        return None, None


def _meta(data: dict[str, Any]) -> dict[str, Any] | None:
    """The decision `decide` put in a request's (or an event's `litellm_params`) metadata; None when not ours."""
    metadata = data.get("metadata")
    meta = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    return meta if isinstance(meta, dict) and "order" in meta else None


def _refusal(message: str, code: str, retryable: bool) -> Exception:
    """LiteLLM's error for a request autoroute refuses: the proxy answers it in OpenAI's shape, 503 or 400."""
    if retryable:
        error: Exception = litellm.ServiceUnavailableError(f"autoroute: {message}", "autoroute", "auto")
        error.code = code  # type: ignore[attr-defined]  # read by LiteLLM's error envelope
        return error
    return litellm.BadRequestError(f"autoroute: {message}", "auto", "autoroute", body={"code": code})


def _with_litellm_prices(registry: Registry) -> Registry:
    return resolve_prices(registry, litellm.get_model_info)


def _ms(start: Any, end: Any) -> float | None:
    try:
        delta = end - start
    except TypeError:
        return None
    seconds = delta.total_seconds() if hasattr(delta, "total_seconds") else float(delta)
    return round(seconds * 1000, 3)


_handler: AutorouteCallback | None = None


def __getattr__(name: str) -> Any:
    """`proxy_handler`, built on first access (LiteLLM's `getattr(module, "proxy_handler")`): importing this module
    reads no config."""
    global _handler
    if name != "proxy_handler":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _handler is None:
        _handler = AutorouteCallback()
    return _handler


__all__ = ["METADATA_KEY", "AutorouteCallback"]
