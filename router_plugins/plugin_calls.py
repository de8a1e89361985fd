"""What the LiteLLM callback (`router_plugins/litellm_plugin.py`) reports about each call, and to whom: a `CallSink`
(`proxy.litellm_plugin.StoreSink` records it into the store). Plain data: no LiteLLM here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import RoutingError
from .plugin_engine import EngineHolder
from .types import ChatRequest, Classification, RouteDecision


@dataclass(frozen=True)
class PluginCall:
    """One routed request: what the gateway's `CallContext` knows when it starts forwarding."""

    request: ChatRequest
    created_at: float
    classification: Classification
    language: str
    decision: RouteDecision
    arm: str | None = None
    counterfactual: RouteDecision | None = None


@dataclass(frozen=True)
class Attempt:
    """One backend call as LiteLLM reported it: a `model_performance` row."""

    request_id: str
    attempt: int
    """1 for the routed model, 2 for the first fallback, ..."""
    model: str
    task: str
    outcome: str
    """`success` or `failure`."""
    latency_ms: float | None
    ttft_ms: float | None
    """Time to the first chunk of a stream; the latency of a call that did not stream."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    cost_source: str | None = None
    """`registry` (its prices, as served, × the tokens) or `litellm` (LiteLLM's own figure)."""
    stream: bool = False
    error_class: str | None = None
    error_message: str | None = None
    """As the backend said it: a sink that keeps it redacts it first."""


class CallSink(Protocol):
    """Where the callback reports decisions and attempts (`proxy.litellm_plugin.StoreSink` records them)."""

    def labels(self) -> Sequence[tuple[str, str]]:
        """(prompt, task) pairs named by feedback, newest first: the classifier's corrections."""
        ...

    def attach(self, engines: EngineHolder) -> None:
        """Called once the routing is built, before any event loop runs."""
        ...

    async def start(self) -> None:
        """Called on LiteLLM's event loop before the first call is reported."""
        ...

    def attempt(self, attempt: Attempt) -> None: ...

    def finished(
        self, call: PluginCall, status: str, served_by: str | None, attempts: int, error: BaseException | None
    ) -> None:
        """The call ended: `success`, `failure` (every backend tried failed) or `partial` (a stream cut short)."""
        ...

    def refused(
        self,
        request: ChatRequest,
        created_at: float,
        classification: Classification,
        language: str,
        error: RoutingError,
    ) -> None:
        """No model could be routed to: the request was refused before any backend was called."""
        ...


__all__ = ["Attempt", "CallSink", "PluginCall"]
