"""Prometheus metrics for `GET /metrics`: counted from the records the gateway already writes, read at scrape time
from the parts that hold state.

Two kinds, kept apart because they merge differently across processes:

- **Event metrics** (counters, histograms) are counted from the recorder's records as they are offered
  (`Recorder(listeners=...)`): one `DecisionRecord` per request, one `PerformanceRecord` per attempt. Nothing on the
  request path calls this module; a record the queue drops is still counted.
- **Live metrics** (the recorder's queue and counters, the feedback writer, each model's circuit breaker, the learning
  events in the store) are read when Prometheus scrapes (`LiveState`), never copied on the request path.

Each gateway app has its own `CollectorRegistry`, not prometheus_client's global one: tests run several apps in one
process, and a restart must not inherit counts.

**Several worker processes** (`autoroute serve --workers N`, `proxy/workers.py`) merge through prometheus_client's
multiprocess mode: the supervisor sets `PROMETHEUS_MULTIPROC_DIR` (a directory it empties at start) before it starts
the workers, so the event metrics below live in per-process mmap files, and `/metrics` on any worker renders a
`multiprocess.MultiProcessCollector` over that directory in place of `self._events`. A worker that exits is marked
with `mark_process_dead` (its live gauges go; its counts stay in the sums). Custom collectors see only their own
process there, so the live metrics split: those the same from any worker (the store's learning events, the registry,
the router chain, the models available) stay scrape-time; the per-process ones become metrics of the multiprocess
directory that each worker `publish`es every second (`Gateway`'s `metrics` job) and when it answers a scrape: the
recorder's and the feedback writer's counts as counters (incremented by what changed since the last publish), queue
depth and pending as `livesum` gauges, a breaker's state as a `livemax` gauge (1 when any live worker has it), and
`autoroute_worker_leader` as a `liveall` gauge, one sample per worker (`pid` label). Another worker's values are then
at most a second old.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from router_plugins.classify.cascade import SKIPPED_NO_EMBEDDING

from .events import DecisionRecord, PerformanceRecord, Record

log = logging.getLogger(__name__)

DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""An attempt's duration: LLM calls run from tens of milliseconds (a cached or tiny answer) to minutes."""
TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
OPEN_REQUESTS_MAX = 10_000
"""Streams whose end is awaited, and failed attempts whose fallback is awaited, kept at most: a stream that never
reports its end (a bug) is counted as it started once this many are newer."""
BREAKER_STATES = ("closed", "open", "half_open")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RECORDER_COUNTS = {
    "enqueued": "Records the recorder accepted.",
    "written": "Records the recorder wrote to the store.",
    "dropped": "Records refused because the queue was full or the recorder had stopped.",
    "lost": "Records in batches the store refused twice.",
}
FEEDBACK_COUNTS = {
    "written": "Feedback committed and synced (200 answered).",
    "failed": "Feedback that could not be made durable (503).",
}
QUEUE_HELP = "Records waiting in the recorder's queue."
PENDING_HELP = "Records accepted and not yet written or given up: what a crash now would lose."
BREAKER_HELP = "Each model's circuit breaker: 1 for its current state (closed, open, half_open), 0 for the others."
LEADER_HELP = "1 in the worker that runs the background jobs that run once (win rates, trainer, refits), else 0."


@dataclass(frozen=True)
class LiveState:
    """What `/metrics` reads from the gateway's parts at scrape time."""

    recorder: Mapping[str, int]
    """`RecorderStats` as a dict: enqueued, written, dropped, lost, queue_depth, pending."""
    feedback: Mapping[str, int]
    """`DurableStats` as a dict: written, failed."""
    breaker: Mapping[str, str]
    """Each model's circuit-breaker state: closed, open or half_open."""
    models_available: int
    leader: bool = True
    """Whether this worker runs the once-only background jobs (`proxy/leadership.py`)."""
    learning_events: Mapping[str, int] | None = None
    """The store's learning events by kind (promotion, rejection, rollback, ...); None when it could not be read."""
    registry_version: str = ""
    routers: Mapping[str, str] = field(default_factory=dict)
    """The routing chain's routers and their versions, in chain order."""


class GatewayMetrics:
    """The event metrics of one gateway, fed by `observe` (a recorder listener), rendered with the live ones.

    `multiprocess`: this is one of several workers, and `PROMETHEUS_MULTIPROC_DIR` was set before prometheus_client
    was first imported (the supervisor sees to it; without it, this process counts alone)."""

    def __init__(self, multiprocess: bool = False) -> None:
        self._events = registry = CollectorRegistry()
        self._shared: _SharedProcessMetrics | None = None
        if multiprocess and os.environ.get(MULTIPROC_ENV):
            self._shared = _SharedProcessMetrics()
        elif multiprocess:
            log.warning("%s is not set: /metrics counts this worker alone", MULTIPROC_ENV)
        self.requests = Counter(
            "autoroute_requests", "Requests by the model that served them (the router's choice when none did), "
            "task, router, preference and final status.", ("model", "task", "router", "preference", "status"),
            registry=registry,
        )  # fmt: skip
        self.attempt_duration = Histogram(
            "autoroute_attempt_duration_seconds", "Duration of each attempt at a backend, to its last byte.",
            ("model", "outcome"), buckets=DURATION_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "autoroute_time_to_first_token_seconds", "Time to the first byte of a streamed answer.", ("model",),
            buckets=TTFT_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.tokens = Counter("autoroute_tokens", "Tokens the backends reported, by model and kind (prompt, "
                              "completion).", ("model", "kind"), registry=registry)  # fmt: skip
        self.cost = Counter("autoroute_cost_usd", "Spend in USD by model and task (attempts with a known cost).",
                            ("model", "task"), registry=registry)  # fmt: skip
        self.failures = Counter("autoroute_attempt_failures", "Failed attempts by model and error class.",
                                ("model", "error_class"), registry=registry)  # fmt: skip
        self.fallbacks = Counter(
            "autoroute_fallbacks", "Moves to the next candidate after a failed attempt: from which model, to which, "
            "and why (the failed attempt's error class).", ("from_model", "to_model", "reason"), registry=registry,
        )  # fmt: skip
        self.classified = Counter(
            "autoroute_classifier_decisions", "Requests by the classifier layer that decided their task (`fallback` "
            "when none was sure).", ("layer",), registry=registry,
        )  # fmt: skip
        self.layer_attempts = Counter(
            "autoroute_classifier_layer_attempts", "Classifier layer attempts by result: accepted (it decided), "
            "rejected (below its threshold) or skipped (no embedding).", ("layer", "result"), registry=registry,
        )  # fmt: skip
        self.ab = Counter("autoroute_ab_decisions", "Requests by A/B arm (control, treatment, shadow).", ("arm",),
                          registry=registry)  # fmt: skip
        self._children: dict[tuple[Any, tuple[str | None, ...]], Any] = {}
        self._open_streams: OrderedDict[str, DecisionRecord] = OrderedDict()
        self._last_failure: OrderedDict[str, tuple[str, str]] = OrderedDict()

    # --- events ----------------------------------------------------------------------------------------------

    def observe(self, record: Record) -> None:
        """Count one record (a `Recorder` listener). Feedback and learning events are read at scrape time."""
        if isinstance(record, DecisionRecord):
            self._decision(record)
        elif isinstance(record, PerformanceRecord):
            self._attempt(record)

    def _decision(self, rec: DecisionRecord) -> None:
        if rec.status == "failure":
            self._last_failure.pop(rec.request_id, None)  # the last attempt failed: no fallback follows
        if rec.stream and rec.status == "success":
            # Recorded at the first byte; the stream's end either confirms it (its attempt's record) or records
            # the decision again with the final status. The request is counted once, then.
            self._open_streams[rec.request_id] = rec
            while len(self._open_streams) > OPEN_REQUESTS_MAX:
                self._count_request(self._open_streams.popitem(last=False)[1])
            return
        self._open_streams.pop(rec.request_id, None)
        self._count_request(rec)

    def _count_request(self, rec: DecisionRecord) -> None:
        self._child(self.requests, rec.selected_model, rec.task, rec.router_name, rec.preference, rec.status).inc()
        self._child(self.classified, rec.classification_layer).inc()
        for attempt in rec.layer_attempts:
            layer = str(attempt.get("layer"))
            result = ("skipped" if attempt.get("detail") == SKIPPED_NO_EMBEDDING else
                      "accepted" if attempt.get("accepted") else "rejected")  # fmt: skip
            self._child(self.layer_attempts, layer, result).inc()
        if rec.ab_arm:
            self._child(self.ab, rec.ab_arm).inc()

    def _attempt(self, rec: PerformanceRecord) -> None:
        self._child(self.attempt_duration, rec.model, rec.outcome).observe(rec.latency_ms / 1000)
        if rec.stream and rec.outcome != "failure" and rec.ttft_ms is not None:
            self._child(self.ttft, rec.model).observe(rec.ttft_ms / 1000)
        if rec.prompt_tokens:
            self._child(self.tokens, rec.model, "prompt").inc(rec.prompt_tokens)
        if rec.completion_tokens:
            self._child(self.tokens, rec.model, "completion").inc(rec.completion_tokens)
        if rec.cost_usd:
            self._child(self.cost, rec.model, rec.task).inc(rec.cost_usd)
        if rec.attempt > 1:
            previous = self._last_failure.pop(rec.request_id, None)
            if previous is not None:
                self._child(self.fallbacks, previous[0], rec.model, previous[1]).inc()
        if rec.outcome == "failure":
            reason = rec.error_class or "unknown"
            self._child(self.failures, rec.model, reason).inc()
            self._last_failure[rec.request_id] = (rec.model, reason)
            while len(self._last_failure) > OPEN_REQUESTS_MAX:
                self._last_failure.popitem(last=False)
        if rec.stream and rec.outcome == "success":
            opened = self._open_streams.pop(rec.request_id, None)
            if opened is not None:
                self._count_request(opened)

    def _child(self, metric: Any, *labels: str | None) -> Any:
        """`metric.labels(*labels)`, looked up once per label set: prometheus-client's lookup validates the labels
        and takes a lock each time, half of what counting a request cost. None (what a request refused before
        routing never got: a model, a task) is the empty label."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*("" if label is None else str(label) for label in labels))
        return child

    # --- exposition ------------------------------------------------------------------------------------------

    def publish(self, recorder: Mapping[str, int], feedback: Mapping[str, int], breaker: Mapping[str, str],
                leader: bool) -> None:  # fmt: skip
        """This worker's live state, where the other workers' scrapes read it (with several workers; else a no-op)."""
        if self._shared is not None:
            self._shared.publish(recorder, feedback, breaker, leader)

    def render(self, live: LiveState, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics when `accept` asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        shared = self._shared
        if shared is None:
            return encoder(_Scrape((self._events, _LiveCollector(live)))), content_type
        shared.publish(live.recorder, live.feedback, live.breaker, live.leader)
        return encoder(_Scrape((shared.collector, _LiveCollector(live, per_process=False)))), content_type


class _SharedProcessMetrics:
    """The per-process live metrics of one worker, in the multiprocess directory, and the collector over it."""

    def __init__(self) -> None:
        from prometheus_client import multiprocess

        self.collector = multiprocess.MultiProcessCollector(None)
        unregistered = CollectorRegistry()  # the values live in the directory's files; nothing reads this registry
        self._recorder = {name: Counter(f"autoroute_recorder_{name}", help_text, registry=unregistered)
                          for name, help_text in RECORDER_COUNTS.items()}  # fmt: skip
        self._feedback = {name: Counter(f"autoroute_feedback_{name}", help_text, registry=unregistered)
                          for name, help_text in FEEDBACK_COUNTS.items()}  # fmt: skip
        self._queue = Gauge("autoroute_recorder_queue_depth", QUEUE_HELP, registry=unregistered,
                            multiprocess_mode="livesum")  # fmt: skip
        self._pending = Gauge("autoroute_recorder_pending", PENDING_HELP, registry=unregistered,
                              multiprocess_mode="livesum")  # fmt: skip
        self._breaker = Gauge("autoroute_circuit_breaker_state", BREAKER_HELP, ("model", "state"),
                              registry=unregistered, multiprocess_mode="livemax")  # fmt: skip
        self._leader = Gauge("autoroute_worker_leader", LEADER_HELP, registry=unregistered, multiprocess_mode="liveall")
        self._counted: dict[str, int] = {}

    def publish(self, recorder: Mapping[str, int], feedback: Mapping[str, int], breaker: Mapping[str, str],
                leader: bool) -> None:  # fmt: skip
        for prefix, counters, values in (("recorder", self._recorder, recorder),
                                         ("feedback", self._feedback, feedback)):  # fmt: skip
            for name, counter in counters.items():
                key, value = f"{prefix}_{name}", values.get(name, 0)
                if value > self._counted.get(key, 0):
                    counter.inc(value - self._counted.get(key, 0))
                    self._counted[key] = value
        self._queue.set(recorder.get("queue_depth", 0))
        self._pending.set(recorder.get("pending", 0))
        for model, state in breaker.items():
            for candidate in BREAKER_STATES:
                self._breaker.labels(model, candidate).set(1.0 if state == candidate else 0.0)
        self._leader.set(1.0 if leader else 0.0)


class _Scrape:
    """The collectors of one scrape (what `generate_latest` reads), without a registry to register them in."""

    def __init__(self, collectors: Iterable[Any]) -> None:
        self._collectors = tuple(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


class _LiveCollector:
    """The live metrics read at scrape time; `per_process=False` leaves out those the multiprocess directory merges."""

    def __init__(self, live: LiveState, per_process: bool = True) -> None:
        self._live = live
        self._per_process = per_process

    def collect(self) -> Iterator[Metric]:
        live = self._live
        if self._per_process:
            yield from self._process_metrics()
        yield GaugeMetricFamily("autoroute_models_available", "Enabled models whose credentials are present.",
                                value=live.models_available)  # fmt: skip
        if live.learning_events is not None:
            learning = CounterMetricFamily("autoroute_learning_events", "The store's learning events by kind: "
                                           "promotion, forced-promotion, rejection, pin, rollback, auto-rollback.",
                                           labels=("kind",))  # fmt: skip
            for kind, count in sorted(live.learning_events.items()):
                learning.add_metric((kind,), count)
            yield learning
        if live.registry_version:
            registry = GaugeMetricFamily("autoroute_registry_info", "Always 1: the registry version serving.",
                                         labels=("version",))  # fmt: skip
            registry.add_metric((live.registry_version,), 1.0)
            yield registry
        routers = GaugeMetricFamily("autoroute_router_info", "Always 1: each router of the routing chain, in order, "
                                    "and the version it serves.", labels=("router", "version", "position"))  # fmt: skip
        for position, (name, version) in enumerate(live.routers.items(), 1):
            routers.add_metric((name, version, str(position)), 1.0)
        yield routers

    def _process_metrics(self) -> Iterator[Metric]:
        live = self._live
        recorder = live.recorder
        yield GaugeMetricFamily("autoroute_recorder_queue_depth", QUEUE_HELP, value=recorder.get("queue_depth", 0))
        yield GaugeMetricFamily("autoroute_recorder_pending", PENDING_HELP, value=recorder.get("pending", 0))
        for name, help_text in RECORDER_COUNTS.items():
            yield CounterMetricFamily(f"autoroute_recorder_{name}", help_text, value=recorder.get(name, 0))
        for name, help_text in FEEDBACK_COUNTS.items():
            yield CounterMetricFamily(f"autoroute_feedback_{name}", help_text, value=live.feedback.get(name, 0))
        breaker = GaugeMetricFamily("autoroute_circuit_breaker_state", BREAKER_HELP, labels=("model", "state"))
        for model, state in sorted(live.breaker.items()):
            for candidate in BREAKER_STATES:
                breaker.add_metric((model, candidate), 1.0 if state == candidate else 0.0)
        yield breaker
        leader = GaugeMetricFamily("autoroute_worker_leader", LEADER_HELP, labels=("pid",))
        leader.add_metric((str(os.getpid()),), 1.0 if live.leader else 0.0)
        yield leader


__all__ = ["GatewayMetrics", "LiveState"]
