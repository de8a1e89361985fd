"""The one place that sequences a request: classify -> route -> forward (with fallback) -> record.

Classifying and routing are the routing engine's (`router_plugins/assembly.py`, shared with the LiteLLM plugin); this
adds what only the gateway has: the transformer's layers 3-4 when the cheap layers were unsure, forwarding through
LiteLLM with fallback, and recording. Errors are domain errors (`RoutingError`, `BackendsFailed`, `ShuttingDown`);
the HTTP layer maps them to OpenAI's error shape (`proxy/errors.py`).

Every wait on a backend is bounded by the shutdown drain (`proxy/drain.py`): when its grace period runs out, the
request ends (503 before the first byte, one error frame after it) and is recorded `cancelled`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from router_plugins.errors import RoutingError
from router_plugins.headers import decision_headers
from router_plugins.health import CircuitBreaker, CircuitBreakerSettings
from router_plugins.language import UNKNOWN, detect_language
from router_plugins.registry import ModelEntry, StorageSettings
from router_plugins.sessions import Sessions, Turn
from router_plugins.types import ChatRequest, Classification, RouteDecision

from .drain import SHUTTING_DOWN, Drain, ShuttingDown
from .errors import UPSTREAM_REJECTED, UPSTREAM_UNAVAILABLE
from .events import DecisionRecord, Outcome, PerformanceRecord
from .forward import Forwarder, StreamHandle, UpstreamError, Usage
from .recorder import Recorder
from .runtime import Runtime
from .streaming import relay_stream

log = logging.getLogger(__name__)

EMBED_TIMEOUT_S = 1.0
"""The longest a request waits for the transformer embedding (e.g. while the model is still loading)."""


class Embeddings(Protocol):
    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    @property
    def busy(self) -> bool: ...


@dataclass(frozen=True)
class Completed:
    body: dict
    headers: dict[str, str]


@dataclass(frozen=True)
class Streaming:
    handle: StreamHandle
    chunks: object
    """An async iterator of SSE-framed bytes."""
    headers: dict[str, str]


@dataclass
class CallContext:
    """What the pipeline learned about one request so far; becomes its DecisionRecord."""

    request: ChatRequest
    created_at: float
    started: float
    classification: Classification
    decision: RouteDecision
    prompt_text: str | None
    attempts: int = 0
    served_by: str | None = None
    ab_arm: str | None = None
    counterfactual: RouteDecision | None = None
    language: str = UNKNOWN
    turn: Turn | None = None
    """The session this request continues or opens (`router_plugins/sessions.py`); None without one."""
    session_origin: str | None = None
    """The request id of the decision that chose the model that answered, for a session's turn."""

    def headers(self, runtime: Runtime) -> dict[str, str]:
        d = self.decision
        return decision_headers(
            self.request.request_id,
            self.served_by or d.model,
            self.classification.task,
            self.language,
            f"{d.router}@{d.router_version}",
            self.request.preference,
            self.ab_arm,
        ) | (  # fmt: skip
            {"x-autoroute-session": self.turn.key.value} if self.turn else {}
        )

    def record(
        self, status: Outcome, error_code: str | None = None, error_message: str | None = None
    ) -> DecisionRecord:
        c, d, r = self.classification, self.decision, self.request
        return DecisionRecord(
            request_id=r.request_id,
            created_at=self.created_at,
            requested_model=r.requested_model,
            preference=r.preference,
            task=c.task,
            task_confidence=c.confidence,
            classification_layer=c.layer,
            needs_clarification=c.needs_clarification,
            layer_attempts=[a.to_dict() for a in c.attempts],
            selected_model=self.served_by or d.model,
            routed_model=d.model,
            selection_reason=d.reason,
            alternatives=[a.to_dict() for a in d.alternatives],
            router_name=d.router,
            router_version=d.router_version,
            propensity=d.propensity,
            stream=r.stream,
            status=status,
            attempts=self.attempts,
            prompt_chars=r.prompt_chars(),
            prompt_text=self.prompt_text,
            ab_arm=self.ab_arm,
            counterfactual_model=self.counterfactual.model if self.counterfactual else None,
            counterfactual_router=self.counterfactual.router if self.counterfactual else None,
            language=self.language,
            error_code=error_code,
            error_message=error_message,
            session_id=self.turn.key.value if self.turn else None,
            session_origin=self.session_origin,
            choice_probabilities=dict(d.choice_probabilities),
        )


def kept_prompt(storage: StorageSettings, text: str) -> str | None:
    """The prompt text as `storage.prompt_text` keeps it in the store: all of it, its start, or none."""
    if storage.prompt_text == "none":
        return None
    return text if storage.prompt_text == "full" else text[: storage.truncate_chars]


def refused_at_routing(
    request: ChatRequest, created_at: float, classification: Classification, language: str, prompt_text: str | None,
    exc: RoutingError,
) -> DecisionRecord:  # fmt: skip
    """The record of a request no model could be routed to: how it was classified, and why it was refused."""
    c = classification
    return DecisionRecord(
        request.request_id, created_at, request.requested_model, request.preference, c.task, c.confidence, c.layer,
        c.needs_clarification, [a.to_dict() for a in c.attempts], None, None, None, [], None, None, None,
        request.stream, "rejected", 0, request.prompt_chars(), prompt_text, language=language, error_code=exc.code,
        error_message=str(exc),
    )  # fmt: skip


class Pipeline:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        forwarder: Forwarder,
        recorder: Recorder,
        embeddings: Embeddings | None = None,
        embed_budget_ms: float | None = None,
        drain: Drain | None = None,
        breaker: CircuitBreaker | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self._runtime = runtime
        self._breaker = breaker if breaker is not None else CircuitBreaker(CircuitBreakerSettings(enabled=False))
        self._sessions = sessions if sessions is not None else Sessions()
        """Owned by the gateway too: a session keeps its model across config reloads."""
        """Owned by the gateway, so it outlives config reloads; without one, no model is ever skipped."""
        self._drain = drain if drain is not None else Drain()
        self._forwarder = forwarder
        self._recorder = recorder
        self._embeddings = embeddings
        self._embed_budget_ms = embed_budget_ms
        """With a budget (a CPU), the embedding is waited for at most this long, and not at all while other
        requests' embeddings are queued; without one (a GPU), up to EMBED_TIMEOUT_S."""

    async def handle(self, request: ChatRequest) -> Completed | Streaming:
        runtime = self._runtime()
        ctx = await self._decide(runtime, request)
        registry = runtime.registry
        errors: list[tuple[str, UpstreamError]] = []
        for model_name in self._attempt_order(ctx, registry.router.max_attempts):
            model = registry.model(model_name)
            assert model is not None, "routers only return registry models"
            ctx.attempts += 1
            started = time.perf_counter()
            try:
                async with self._drain.bound():
                    if request.stream:
                        handle = await self._forwarder.open_stream(model, request)
                    else:
                        body, usage = await self._forwarder.complete(model, request)
            except UpstreamError as exc:
                if exc.backend_fault:
                    self._breaker.record(model_name, False, time.monotonic())
                self._record_attempt(ctx, model, "failure", started, None, Usage(), exc)
                errors.append((model_name, exc))
                if not exc.retryable:
                    break
                continue
            except ShuttingDown as exc:
                self._record_attempt(ctx, model, "cancelled", started, None, Usage(), exc)
                self._recorder.record(ctx.record("cancelled", SHUTTING_DOWN, str(exc)))
                raise
            ctx.served_by = model_name
            if ctx.turn is not None:
                settings = registry.router.sessions
                ctx.session_origin, note = self._sessions.served(
                    ctx.turn, model_name, request.request_id, ctx.classification.task, settings
                )
                if note:
                    self._note(ctx, note)
            self._recorder.record(ctx.record("success"))
            if request.stream:
                ttft_ms = (time.perf_counter() - started) * 1000

                def ended(
                    outcome: Outcome, usage: Usage, exc: BaseException | None, m: ModelEntry = model,
                    s: float = started, t: float = ttft_ms,
                ) -> None:  # fmt: skip
                    self._stream_ended(ctx, m, s, t, outcome, usage, exc)

                chunks = relay_stream(
                    handle,
                    include_usage=bool((request.params.get("stream_options") or {}).get("include_usage")),
                    on_end=ended,
                    drain=self._drain,
                )
                return Streaming(handle, chunks, ctx.headers(runtime))
            self._breaker.record(model_name, True, time.monotonic())
            self._record_attempt(ctx, model, "success", started, None, usage, None)
            return Completed(body, ctx.headers(runtime))
        failed = BackendsFailed(errors, ctx.headers(runtime))
        self._recorder.record(ctx.record("failure", failed.code, str(failed)))
        raise failed

    def _attempt_order(self, ctx: CallContext, limit: int) -> Iterator[str]:
        """The models to try, at most `limit`: the fallback order with the models whose breaker is open moved to the
        end, so they are tried only when nothing else is left (never is a request failed only by the breaker). Each
        skip is added to the decision's reason. A named model is not re-routed. Lazy: the breaker is asked right
        before each call, since a half-open model lets exactly one probe through."""
        order = ctx.decision.fallback_order
        if not ctx.request.is_auto:
            yield from order[:limit]
            return
        cooling: list[str] = []
        tried = 0
        for name in order:
            if tried == limit:
                return
            now = time.monotonic()
            if self._breaker.allow(name, now):
                tried += 1
                yield name
            else:
                self._note(ctx, f"skipped {name}: {self._breaker.why_cooling(name, now)}")
                cooling.append(name)
        for name in cooling[: limit - tried]:
            self._note(ctx, f"tried {name} anyway: no other candidate was left")
            yield name

    @staticmethod
    def _note(ctx: CallContext, note: str) -> None:
        ctx.decision = dataclasses.replace(ctx.decision, reason=f"{ctx.decision.reason}; {note}")

    def use_embeddings(self, embeddings: Embeddings) -> None:
        """Let layers 3-4 run: called once the embedding model is loaded."""
        self._embeddings = embeddings

    async def _classify(self, runtime: Runtime, text: str) -> Classification:
        """Layers 1-2 first; the transformer embedding only when they were unsure and the cascade has layers 3-4."""
        classification = runtime.classifier.classify(text)
        if self._embeddings is None or not runtime.classifier.wants_embedding(classification):
            return classification
        budget = self._embed_budget_ms
        if budget is not None and self._embeddings.busy:
            return classification  # never queue behind other requests' embeddings
        try:
            timeout = EMBED_TIMEOUT_S if budget is None else budget / 1000
            vectors = await asyncio.wait_for(self._embeddings.embed([text]), timeout)
        except Exception:  # noqa: BLE001 - a slow or failed embedding leaves the cheap layers' answer standing
            log.warning("no transformer embedding in time; the cheap layers' answer stands", exc_info=True)
            return classification
        return runtime.classifier.resume(text, vectors[0], classification)

    async def _decide(self, runtime: Runtime, request: ChatRequest) -> CallContext:
        created_at, started = time.time(), time.perf_counter()
        engine = runtime.engine
        text = request.last_user_text()
        language = detect_language(text)
        # A named model is only labelled for the record: the cheap layers suffice, no transformer on its path.
        classification = await self._classify(runtime, text) if request.is_auto else engine.classify(text)
        stored = kept_prompt(engine.registry.storage, text)
        turn = self._sessions.open(request, engine.registry.router.sessions) if request.is_auto else None
        if turn is not None and turn.pin is None and turn.reusable:
            turn = self._sessions.recall(turn, await self._recorder.session_pin(turn.key.value))
        try:
            if turn is not None and turn.pin is not None:
                now, pinned = time.monotonic(), turn.pin.model
                cooling = self._breaker.why_cooling(pinned, now) if self._breaker.state(pinned, now) == "open" else None
                routed = engine.continue_session(request, classification, language, turn.pin, cooling)
                decision, arm, counterfactual = routed.decision, routed.arm, routed.counterfactual
            elif request.is_auto:
                routed = engine.route(request, classification, language)
                decision, arm, counterfactual = routed.decision, routed.arm, routed.counterfactual
            else:
                decision, arm, counterfactual = engine.passthrough(request, classification), None, None
        except RoutingError as exc:
            self._recorder.record(refused_at_routing(request, created_at, classification, language, stored, exc))
            raise
        return CallContext(request, created_at, started, classification, decision, stored, ab_arm=arm,
                           counterfactual=counterfactual, language=language, turn=turn)  # fmt: skip

    def _record_attempt(
        self,
        ctx: CallContext,
        model: ModelEntry,
        outcome: Outcome,
        started: float,
        ttft_ms: float | None,
        usage: Usage,
        error: BaseException | None,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        cost, cost_source = self._forwarder.cost(model, usage) if outcome != "failure" else (None, None)
        upstream = error if isinstance(error, UpstreamError) else None
        self._recorder.record(
            PerformanceRecord(
                request_id=ctx.request.request_id,
                created_at=time.time(),
                attempt=ctx.attempts,
                model=model.name,
                task=ctx.classification.task,
                outcome=outcome,
                latency_ms=latency_ms,
                ttft_ms=ttft_ms if ctx.request.stream else latency_ms,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost,
                cost_source=cost_source,
                error_class=upstream.error_class if upstream else (type(error).__name__ if error else None),
                error_message=(upstream.message if upstream else str(error))[:500] if error else None,
                stream=ctx.request.stream,
            )
        )

    def _stream_ended(
        self,
        ctx: CallContext,
        model: ModelEntry,
        started: float,
        ttft_ms: float,
        outcome: Outcome,
        usage: Usage,
        error: BaseException | None,
    ) -> None:
        if outcome != "cancelled" and (not isinstance(error, UpstreamError) or error.backend_fault):
            self._breaker.record(model.name, outcome == "success", time.monotonic())
        self._record_attempt(ctx, model, outcome, started, ttft_ms, usage, error)
        if outcome != "success":
            self._recorder.record(ctx.record(outcome))


class BackendsFailed(Exception):
    """Every backend tried for a request failed (or the first refused it for good); the HTTP layer maps it."""

    def __init__(self, errors: Sequence[tuple[str, UpstreamError]], headers: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {exc.message}" for name, exc in errors))
        self.errors = tuple(errors)
        self.headers = headers

    @property
    def code(self) -> str:
        """The client's error code: the last backend's refusal passed on, or every backend unavailable."""
        return UPSTREAM_UNAVAILABLE if self.errors[-1][1].retryable else UPSTREAM_REJECTED


__all__ = ["BackendsFailed", "CallContext", "Completed", "Pipeline", "Streaming", "kept_prompt", "refused_at_routing"]
