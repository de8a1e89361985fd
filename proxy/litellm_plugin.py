"""autoroute at parity inside a LiteLLM proxy: the routing callback (`router_plugins.litellm_plugin`) with a sink that
records into the config's store, as the gateway does.

In the LiteLLM proxy's config (README, "Inside an existing LiteLLM proxy"; examples/litellm-proxy.yaml):

    litellm_settings:
      callbacks: proxy.litellm_plugin.proxy_handler

What the store sink adds to routing:

- every decision and every backend attempt is written to the store of the config's data directory through the
  gateway's non-blocking `Recorder`: a `DecisionRecord` made by the pipeline's own `CallContext`, one
  `PerformanceRecord` per attempt (a fallback: the failure, then the success). The request id is LiteLLM's call id.
- feedback for those requests: `autoroute feedback REQUEST_ID --score 1` (`proxy/feedback_command.py`), or
  `POST /v1/feedback` to a gateway on the same store; both find the decision row.
- the learning loop (`proxy.learning`): win rates aggregated from the store and published to the routing, the learned
  router trained and judged on its schedule (a promotion is swapped in), the classifier's corrections from feedback
  labels. `AUTOROUTE_LEARNING=off` leaves the first two to a gateway (or `autoroute train`) on the same store: set
  it when one runs, or in all but one of several LiteLLM workers.

LiteLLM tells a callback nothing when it stops: records not yet written then (at most the last
`storage.flush_interval_ms`) are lost, as in a gateway that crashes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from router_plugins.errors import RoutingError
from router_plugins.litellm_plugin import AutorouteCallback
from router_plugins.plugin_calls import Attempt, PluginCall
from router_plugins.plugin_engine import EngineHolder
from router_plugins.routers import RouterContext
from router_plugins.types import ChatRequest, Classification

from .errors import UPSTREAM_REJECTED, UPSTREAM_UNAVAILABLE
from .events import Outcome, PerformanceRecord, Record
from .jobs import Job, periodic
from .learning import LearningLoop
from .pipeline import CallContext, kept_prompt, refused_at_routing
from .recorder import Recorder
from .redact import configured_secrets, redact
from .store import Store, open_store, routing_rule_rows

log = logging.getLogger(__name__)

LEARNING_ENV = "AUTOROUTE_LEARNING"
"""`off`: this process records only; the win rates and the learned router come from a gateway on the same store."""
LABELS_REFRESH_S = 5.0
ERROR_MESSAGE_CHARS = 500
RETRYABLE_STATUS = frozenset({408, 429})


class StoreSink:
    """Records the callback's calls into the config's store and runs the learning loop on LiteLLM's event loop."""

    def __init__(self, learning: bool | None = None) -> None:
        self.learning_on = learning if learning is not None else os.environ.get(LEARNING_ENV, "on") != "off"
        self._labels: Sequence[tuple[str, str]] = ()
        self.jobs: dict[str, Job] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def labels(self) -> Sequence[tuple[str, str]]:
        return self._labels

    def attach(self, engines: EngineHolder) -> None:
        """Open the data directory's store (before LiteLLM serves: a store that cannot be opened stops the proxy)."""
        self.engines = engines
        registry = engines.registry
        engines.data.ensure()
        self.store: Store = open_store(str(engines.data.db))
        storage = registry.storage
        self.recorder = Recorder(self.store, queue_size=storage.queue_size, batch_size=storage.batch_size,
                                 flush_interval_ms=storage.flush_interval_ms)  # fmt: skip
        self.learning = LearningLoop(lambda: engines.registry, self.store, engines.data.artifacts, self._context)
        master_key = os.environ.get("LITELLM_MASTER_KEY")
        self._secrets = configured_secrets(registry, os.environ) | frozenset([master_key] if master_key else [])
        try:
            self.store.save_routing_rules(registry.version, routing_rule_rows(registry))
        except Exception:  # noqa: BLE001 - a record for people: never a reason not to serve
            log.exception("the routing rules of registry %s were not recorded", registry.version)
        self._labels = self.store.task_labels()
        if self._labels:
            engines.rebuild()

    async def start(self) -> None:
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        await self.recorder.start()
        learning = self.learning
        jobs = [Job("corrections", periodic(self._refresh_labels, lambda: LABELS_REFRESH_S, "refreshing corrections"))]
        if self.learning_on:
            aggregate = periodic(learning.aggregate_once, learning.aggregate_interval_s, "win-rate aggregation",
                                 at_once=True)  # fmt: skip
            train = periodic(learning.train_when_due, learning.train_interval_s, "training the learned router")
            jobs += [Job("win-rates", aggregate), Job("trainer", train)]
        for job in jobs:
            self.jobs[job.name] = job
            job.start()

    async def stop(self) -> None:
        """Stop the jobs, write what is queued and close the store (tests; LiteLLM never calls it)."""
        for job in reversed(list(self.jobs.values())):
            await job.stop()
        await self.recorder.stop()
        self.store.close()

    # -- records ----------------------------------------------------------------------------------------------

    def attempt(self, attempt: Attempt) -> None:
        message = attempt.error_message
        self._record(
            PerformanceRecord(
                request_id=attempt.request_id,
                created_at=time.time(),
                attempt=attempt.attempt,
                model=attempt.model,
                task=attempt.task,
                outcome=_outcome(attempt.outcome),
                latency_ms=attempt.latency_ms or 0.0,
                ttft_ms=attempt.ttft_ms,
                prompt_tokens=attempt.prompt_tokens,
                completion_tokens=attempt.completion_tokens,
                cost_usd=attempt.cost_usd,
                cost_source=attempt.cost_source,
                error_class=attempt.error_class,
                error_message=redact(message, self._secrets)[:ERROR_MESSAGE_CHARS] if message else None,
                stream=attempt.stream,
            )
        )

    def finished(
        self, call: PluginCall, status: str, served_by: str | None, attempts: int, error: BaseException | None
    ) -> None:
        prompt = kept_prompt(self.engines.registry.storage, call.request.last_user_text())
        ctx = CallContext(call.request, call.created_at, 0.0, call.classification, call.decision, prompt, attempts,
                          served_by, call.arm, call.counterfactual, call.language)  # fmt: skip
        code = message = None
        if status == "failure":
            code = _error_code(error)
            message = redact(str(error), self._secrets)[:ERROR_MESSAGE_CHARS] if error is not None else None
        self._record(ctx.record(_outcome(status), code, message))

    def refused(
        self,
        request: ChatRequest,
        created_at: float,
        classification: Classification,
        language: str,
        error: RoutingError,
    ) -> None:
        prompt = kept_prompt(self.engines.registry.storage, request.last_user_text())
        self._record(refused_at_routing(request, created_at, classification, language, prompt, error))

    def _record(self, record: Record) -> None:
        """The recorder's queue is the event loop's: a record from another thread is handed over to it."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.recorder.record, record)
        else:
            self.recorder.record(record)

    # -- learning ---------------------------------------------------------------------------------------------

    def _context(self) -> RouterContext | None:
        embedder = self.engines.embedder
        return RouterContext(static_embed=embedder.embed) if embedder is not None else None

    async def _refresh_labels(self) -> None:
        """Tasks named by feedback become the classifier's corrections within seconds, as in the gateway."""
        fresh = await asyncio.to_thread(self.store.task_labels)
        if fresh != self._labels:
            self._labels = fresh
            await asyncio.to_thread(self.engines.rebuild)
            log.info("classifier corrections refreshed: %d prompts labelled by feedback", len(fresh))


def _outcome(status: str) -> Outcome:
    if status not in ("success", "failure", "partial"):
        raise ValueError(f"not an outcome of a LiteLLM call: {status!r}")
    return status  # type: ignore[return-value]  # narrowed by the check above


def _error_code(error: BaseException | None) -> str:
    """The gateway's code for a call every backend failed: refused for good (a 4xx), or unavailable."""
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in RETRYABLE_STATUS:
        return UPSTREAM_REJECTED
    return UPSTREAM_UNAVAILABLE


_handler: AutorouteCallback | None = None


def __getattr__(name: str) -> Any:
    """`proxy_handler`, built on first access (LiteLLM's `getattr(module, "proxy_handler")`): importing this module
    reads no config and opens no store."""
    global _handler
    if name != "proxy_handler":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _handler is None:
        _handler = AutorouteCallback(sink=StoreSink())
    return _handler


__all__ = ["LEARNING_ENV", "StoreSink"]
