"""autoroute inside an existing LiteLLM proxy: a callback that routes `model="auto"` and records every outcome.

In the LiteLLM proxy's config (its `model_list` names the same models as the autoroute registry):

    litellm_settings:
      callbacks: router_plugins.litellm_plugin.proxy_handler

and `AUTOROUTE_CONFIG=/path/to/config.yaml` (default `config.yaml`) in its environment. Before each call the
pre-call hook classifies and routes exactly as the gateway on the same config and data directory does: both build
their routing with `router_plugins.assembly` (the cheap classifier layers with the data directory's text model and
tuned thresholds, the language's candidates, the configured chain with the learned router's current artifact, the
win-rate policies and the A/B split). What only a gateway has is left out: the corrections from feedback, and layers
3-4, which run inline only on a GPU. The hook rewrites `model` to the chosen registry model; `metadata.autoroute`
carries the decision. Success and
failure events append one JSON line each to `<data_dir>/litellm-outcomes.jsonl` (latency, time to first token,
tokens, cost as LiteLLM computed it), which `autoroute` tooling can read. Requests naming a model pass untouched.

This module imports LiteLLM (it is loaded by LiteLLM); nothing else in `router_plugins` does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from .assembly import Parts, RoutingEngine, assemble
from .classify import StaticEmbedder
from .classify.assembly import ClassifierSources
from .datadir import DataDir
from .errors import RoutingError
from .language import detect_language
from .registry import Registry, load_registry
from .routers.winrate import WinRateState, load_state
from .types import PREFERENCES, ChatRequest, RouteDecision

log = logging.getLogger(__name__)

OUTCOMES_FILE = "litellm-outcomes.jsonl"
WINRATE_SNAPSHOT = "winrate-current.json"
"""Written by the gateway's aggregator (`proxy/learning.py`) into the same data directory."""
METADATA_KEY = "autoroute"


class AutorouteCallback(CustomLogger):
    """Routes `auto` requests in LiteLLM's pre-call hook; logs outcomes from LiteLLM's success/failure events."""

    def __init__(self, config: str | Path | None = None, data_dir: str | Path | None = None) -> None:
        super().__init__()
        source = load_registry(config or os.environ.get("AUTOROUTE_CONFIG", "config.yaml"))
        data = DataDir.resolve(source, data_dir)
        self.data_dir = data.root
        artifacts = data.artifacts
        # The static table (~30 s to distil at the first start; `autoroute build-embeddings` does it beforehand).
        embedder = None
        if source.router.classifier.static_embedding.enabled:
            embedder = StaticEmbedder.load_or_build(self.data_dir)
        # The same assembly as the gateway: its text model (the data directory's fit, else the shipped one), its tuned
        # thresholds, its chain with the learned router's current artifact, and the win rates its aggregator
        # published (`winrate-current.json`), read again when that file changes.
        parts = Parts(embedder, ClassifierSources(artifacts).text_model(), winrate=self._winrate)
        self._winrate_file = artifacts / WINRATE_SNAPSHOT
        self._winrate_state: tuple[object, WinRateState] = (None, WinRateState())
        self.engine: RoutingEngine = assemble(source, artifacts, parts)
        self.registry: Registry = self.engine.registry
        self._lock = threading.Lock()

    def _winrate(self) -> WinRateState:
        try:
            stamp: object = self._winrate_file.stat().st_mtime_ns
        except OSError:
            stamp = None
        if stamp != self._winrate_state[0]:
            self._winrate_state = (stamp, load_state(self._winrate_file) or WinRateState())
        return self._winrate_state[1]

    # -- routing ----------------------------------------------------------------------------------------------

    def decide(self, data: dict[str, Any]) -> RouteDecision | None:
        """The decision for one LiteLLM request body, or None when it names a model (or none can serve it)."""
        requested = str(data.get("model") or "")
        if requested != "auto" and not requested.startswith("auto:"):
            return None
        preference = requested.partition(":")[2] or self.registry.router.default_preference
        if preference not in PREFERENCES:
            raise ValueError(f"unknown routing preference {preference!r}; use one of {', '.join(PREFERENCES)}")
        messages = tuple(data.get("messages") or ())
        request_id = str(data.get("litellm_call_id") or uuid.uuid4())
        request = ChatRequest(request_id, requested, messages, bool(data.get("stream")), preference,
                              {k: v for k, v in data.items() if k in ("tools", "functions", "max_tokens")})  # fmt: skip
        text = request.last_user_text()
        classification = self.engine.classify(text)
        language = detect_language(text)
        try:
            routed = self.engine.route(request, classification, language)
        except RoutingError as exc:
            log.warning("autoroute could not route %s: %s", request_id, exc)
            return None
        decision, counterfactual = routed.decision, routed.counterfactual
        data["model"] = decision.model
        metadata = data.setdefault("metadata", {})
        metadata[METADATA_KEY] = {
            "request_id": request.request_id, "requested_model": requested, "task": classification.task,
            "task_confidence": classification.confidence, "layer": classification.layer, "language": language,
            "router": f"{decision.router}@{decision.router_version}", "reason": decision.reason,
            "propensity": decision.propensity, "alternatives": [c.to_dict() for c in decision.alternatives],
            "ab_arm": routed.arm, "counterfactual_model": counterfactual.model if counterfactual else None,
        }  # fmt: skip
        return decision

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        if call_type in ("completion", "acompletion"):
            self.decide(data)
        return data

    # -- recording --------------------------------------------------------------------------------------------

    def outcome(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any, ok: bool) -> dict:
        params = kwargs.get("litellm_params") or {}
        decision = ((params.get("metadata") or {}).get(METADATA_KEY)) or {}
        usage = getattr(response_obj, "usage", None) if ok else None
        first = kwargs.get("completion_start_time")
        record = {
            "created_at": time.time(),
            "request_id": decision.get("request_id"),
            "task": decision.get("task"),
            "router": decision.get("router"),
            "propensity": decision.get("propensity"),
            "model": kwargs.get("model"),
            "outcome": "success" if ok else "failure",
            "latency_ms": _ms(start_time, end_time),
            "ttft_ms": _ms(start_time, first) if first is not None else None,
            "prompt_tokens": getattr(usage, "prompt_tokens", None),
            "completion_tokens": getattr(usage, "completion_tokens", None),
            "cost_usd": self._cost(kwargs.get("model"), kwargs.get("response_cost"), usage),
            "error_class": None if ok else type(kwargs.get("exception")).__name__,
        }
        self._append(record)
        return record

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # noqa: ANN001, ANN201
        self.outcome(kwargs, response_obj, start_time, end_time, ok=True)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):  # noqa: ANN001, ANN201
        self.outcome(kwargs, response_obj, start_time, end_time, ok=False)

    def _cost(self, model_name: Any, litellm_cost: Any, usage: Any) -> float | None:
        """LiteLLM's cost when it knows one; else the registry's prices × the usage (LiteLLM books 0 for models it
        has no price for)."""
        if litellm_cost:
            return float(litellm_cost)
        model = self.registry.model(str(model_name))
        if model is None or usage is None or model.input_cost_per_mtok is None or model.output_cost_per_mtok is None:
            return litellm_cost
        prompt, completion = getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0
        return (prompt * model.input_cost_per_mtok + completion * model.output_cost_per_mtok) / 1e6

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str) + "\n"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with self._lock, (self.data_dir / OUTCOMES_FILE).open("a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:  # a full disk must not fail the call that was served
            log.exception("autoroute could not record an outcome")


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
