"""The one place that sequences a request: classify -> route -> forward (with fallback) -> record."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from router_plugins.candidates import Candidates, serving
from router_plugins.language import UNKNOWN, detect_language
from router_plugins.registry import ModelEntry
from router_plugins.routers import Router, WinRateRouter
from router_plugins.types import ChatRequest, Classification, RouteDecision, ScoredCandidate

from .errors import ApiError, model_not_found
from .events import DecisionRecord, Outcome, PerformanceRecord
from .forward import Forwarder, StreamHandle, UpstreamError, Usage
from .recorder import Recorder
from .runtime import Runtime
from .streaming import relay_stream

log = logging.getLogger(__name__)

PASSTHROUGH_ROUTER = "passthrough"
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

    def headers(self, runtime: Runtime) -> dict[str, str]:
        arm = {"x-autoroute-arm": self.ab_arm} if self.ab_arm else {}
        return arm | {
            "x-autoroute-request-id": self.request.request_id,
            "x-autoroute-model": self.served_by or self.decision.model,
            "x-autoroute-task": self.classification.task,
            "x-autoroute-language": self.language,
            "x-autoroute-router": f"{self.decision.router}@{self.decision.router_version}",
            "x-autoroute-preference": self.request.preference,
        }

    def record(self, status: Outcome) -> DecisionRecord:
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
        )


class Pipeline:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        forwarder: Forwarder,
        recorder: Recorder,
        embeddings: Embeddings | None = None,
        embed_budget_ms: float | None = None,
    ) -> None:
        self._runtime = runtime
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
        order = ctx.decision.fallback_order[: registry.router.max_attempts]
        errors: list[tuple[str, UpstreamError]] = []
        for model_name in order:
            model = registry.model(model_name)
            assert model is not None, "routers only return registry models"
            ctx.attempts += 1
            started = time.perf_counter()
            try:
                if request.stream:
                    handle = await self._forwarder.open_stream(model, request)
                else:
                    body, usage = await self._forwarder.complete(model, request)
            except UpstreamError as exc:
                self._record_attempt(ctx, model, "failure", started, None, Usage(), exc)
                errors.append((model_name, exc))
                if not exc.retryable:
                    break
                continue
            ctx.served_by = model_name
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
                )
                return Streaming(handle, chunks, ctx.headers(runtime))
            self._record_attempt(ctx, model, "success", started, None, usage, None)
            return Completed(body, ctx.headers(runtime))
        self._recorder.record(ctx.record("failure"))
        raise _all_failed(errors, ctx.headers(runtime))

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
        text = request.last_user_text()
        language = detect_language(text)
        # A named model is only labelled for the record: the cheap layers suffice, no transformer on its path.
        classification = await self._classify(runtime, text) if request.is_auto else runtime.classifier.classify(text)
        routed = None
        if request.is_auto:
            routed = self._route(runtime, request, classification, serving(runtime.available, language))
            decision = routed.decision
        else:
            model = runtime.registry.model(request.requested_model)
            if model is None or not model.enabled:
                raise model_not_found(request.requested_model)
            if model.name not in runtime.available_names:
                raise ApiError(
                    503,
                    f"The model '{model.name}' is not usable: the gateway has no credentials for it "
                    f"({model.litellm_params.api_key_env} is not set).",
                    type="server_error",
                    param="model",
                    code="model_unavailable",
                )
            decision = RouteDecision(
                model.name,
                "requested by name",
                PASSTHROUGH_ROUTER,
                runtime.registry.version,
                (ScoredCandidate(model.name, 1.0, model.prior_quality(classification.task), model.cost_per_1k(),
                                 model.latency_ms, "requested"),),
            )  # fmt: skip
        storage = runtime.registry.storage
        stored: str | None = None
        if storage.prompt_text != "none":
            stored = text if storage.prompt_text == "full" else text[: storage.truncate_chars]
        ctx = CallContext(request, created_at, started, classification, decision, stored, language=language)
        if routed is not None and routed.arm is not None:
            ctx.ab_arm = routed.arm
            ctx.counterfactual = routed.counterfactual
        return ctx

    @staticmethod
    def _route(
        runtime: Runtime, request: ChatRequest, classification: Classification, candidates: Candidates
    ) -> Routed:
        """The chain's choice, explored within the budget; under an A/B test, the arm's choice and the other's."""
        ab = runtime.registry.learning.ab
        if ab.mode == "off":
            return Routed(_explored(runtime, request, classification, candidates)[0])
        control = _decide_with(runtime, (runtime.control,), request, classification, candidates)
        treatment, probabilities = _explored(runtime, request, classification, candidates)
        if ab.mode == "shadow":
            return Routed(control, "shadow", treatment)
        share = ab.treatment_share
        in_treatment = _unit_hash(request.request_id) < share
        served, other = (treatment, control) if in_treatment else (control, treatment)
        # The logging policy is the mixture of both arms: what off-policy evaluation needs as the propensity.
        propensity = share * probabilities.get(served.model, 0.0) + (1 - share) * (served.model == control.model)
        return Routed(replace(served, propensity=propensity), "treatment" if in_treatment else "control", other)

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
        self._record_attempt(ctx, model, outcome, started, ttft_ms, usage, error)
        if outcome != "success":
            self._recorder.record(ctx.record(outcome))


@dataclass(frozen=True)
class Routed:
    decision: RouteDecision
    arm: str | None = None
    counterfactual: RouteDecision | None = None


def _decide_with(
    runtime: Runtime,
    routers: Sequence[Router],
    request: ChatRequest,
    classification: Classification,
    candidates: Candidates,
) -> RouteDecision:
    """The first decision of `routers`, noting the routers that could not decide (and why the chain is short)."""
    undecided: list[str] = []
    for router in routers:
        if isinstance(router, WinRateRouter):
            decision = router.greedy_route(request, classification, candidates.models)
        else:
            decision = router.route(request, classification, candidates.models)
        if decision is not None:
            notes = [note for note in (runtime.routing_note, candidates.note) if note]
            notes += [f"{name} could not decide" for name in undecided]
            if notes:
                decision = replace(decision, reason=f"{decision.reason}; {'; '.join(notes)}")
            return decision
        undecided.append(router.name)
    if candidates.fallback is not None:
        return _decide_with(runtime, routers, request, classification, candidates.fallback)
    if request.max_cost_per_1k is not None or request.min_quality is not None:
        raise ApiError(
            400,
            f"No available model meets this request's constraints for task '{classification.task}' "
            f"(max_cost_per_1k={request.max_cost_per_1k}, min_quality={request.min_quality}).",
            param="autoroute",
            code="no_model_satisfies_constraints",
        )
    raise ApiError(
        503,
        "No backend is available for this request: every model in the registry is disabled, lacks "
        "credentials, or cannot serve it (tools, context window).",
        type="server_error",
        code="no_backend_available",
    )


def _explored(
    runtime: Runtime, request: ChatRequest, classification: Classification, candidates: Candidates
) -> tuple[RouteDecision, dict[str, float]]:
    """The chain's greedy decision, then the win-rate router's exploration around it (when the chain has one)."""
    decision = _decide_with(runtime, runtime.routers, request, classification, candidates)
    if runtime.explorer is None:
        return decision, {decision.model: 1.0}
    if decision.router != runtime.explorer.name:
        decision = runtime.explorer.guard(decision, request, classification, candidates.models)
    return runtime.explorer.explore(decision, request, classification)


def _unit_hash(request_id: str) -> float:
    """A request id's fixed place in [0, 1): assigns A/B arms without shared state."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big") / 2**64


def _all_failed(errors: list[tuple[str, UpstreamError]], headers: dict[str, str]) -> ApiError:
    last_model, last = errors[-1]
    if not last.retryable:
        return ApiError(last.status, last.message, code="upstream_rejected", headers=headers)
    summary = "; ".join(f"{name}: {exc.message}" for name, exc in errors)
    status = 429 if all(e.status == 429 for _, e in errors) else (504 if last.status == 504 else 502)
    kind = "rate_limit_error" if status == 429 else "server_error"
    return ApiError(
        status,
        f"Every backend tried failed ({summary}).",
        type=kind,
        code="upstream_unavailable",
        headers={**headers, "x-autoroute-model": last_model},
    )


__all__ = ["Completed", "Pipeline", "Streaming"]
