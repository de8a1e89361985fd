"""The gateway's parts and their lifecycle: what `create_app`'s lifespan starts and stops.

`Gateway.start()` loads the config, opens the data directory's store, builds the first runtime (the routing engine of
`router_plugins.assembly`, as the LiteLLM plugin builds it) and starts the background jobs:

| job              | what it does                                                                                    |
|------------------|-------------------------------------------------------------------------------------------------|
| config-reload    | every 2 s: a changed config or learned artifact is rebuilt in a thread and swapped in whole     |
| warm-up          | once: the static embedding table (distilled at the first start), then the transformer if inline |
| classifier-refit | with the transformer inline: refits layers 3-4 when none exists, the tasks changed, or feedback |
| corrections      | every 5 s: tasks named by feedback become the classifier's corrections                          |
| win-rates        | every `learning.aggregate_interval_s`: win rates recomputed from the store                      |
| trainer          | every `learning.train_interval_s`: a challenger learned router trained and judged off-policy    |
| shared-versions  | on a shared store (Postgres), every 2 s: router versions kept in step with the other replicas   |
| election         | with several workers: every 2 s, a follower tries to take the leadership (`proxy/leadership.py`) |
| metrics          | with several workers: every second, this worker's live metrics published to the others         |

Every rebuild runs in a worker thread, one at a time (the holder's lock): the event loop never waits for one.

**Several workers** (`autoroute serve --workers N`): every job runs in every worker; each step of the work that
writes shared state (win rates, trainer, refit, table, rules) runs only where `Election.leading`
(`proxy/leadership.py`), and followers read what the leader publishes. `proxy/workers.py` says what runs where.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from router_plugins.assembly import Parts
from router_plugins.classify import StaticEmbedder
from router_plugins.classify.assembly import ClassifierSources, transformer_inline
from router_plugins.classify.model import TaskModel
from router_plugins.classify.static_embedding import TABLE_FILE
from router_plugins.datadir import DataDir, file_stamp
from router_plugins.health import CircuitBreaker
from router_plugins.registry import Registry, load_registry
from router_plugins.routers import RouterContext
from router_plugins.routers.learned import POINTER_FILE
from router_plugins.serving import EmbeddingServer
from router_plugins.thresholds import POINTER_FILE as THRESHOLDS_POINTER

from .drain import Drain
from .durable import DurableWriter
from .forward import Forwarder
from .jobs import Job, periodic
from .leadership import Election, FileLeadership, Leadership, Solo
from .learning import LearningLoop
from .metrics import GatewayMetrics
from .pipeline import Pipeline
from .recorder import Recorder
from .runtime import Runtime, RuntimeHolder, build_runtime
from .settings import AppSettings
from .shared_versions import SYNC_INTERVAL_S, ArtifactSync
from .store import Store, open_store, redacted, routing_rule_rows, store_location

log = logging.getLogger(__name__)

REFIT_CHECK_S = 5.0
LABEL_COUNT_S = 30.0
REFIT_RETRY_S = 300.0
REFIT_AFTER_LABELS = 20
"""Feedback that names this many new request tasks refits the classifier's layers 3-4 while serving."""
FOLLOW_S = 2.0
"""How often a follower looks for what the leader published (the win-rate snapshot, the static table)."""
PUBLISH_METRICS_S = 1.0


@dataclass
class Services:
    """What the routes use; lives on `app.state.services` for the app's lifetime."""

    holder: RuntimeHolder
    pipeline: Pipeline
    recorder: Recorder
    feedback_writer: DurableWriter
    """Feedback is acknowledged only once committed and synced; decisions and attempts go through the recorder."""
    store: Store
    data_dir: Path
    drain: Drain
    embeddings: str = "ok"
    """`building` while the static embedding table is being distilled in the background."""
    task_model: str = "off"
    """The classifier's layers 3-4: `fitting` at first start, `ok`; `off` when disabled or off the request path
    (a CPU without `transformer_budget_ms`)."""
    learning: LearningLoop | None = None
    jobs: dict[str, Job] = field(default_factory=dict)
    store_error: str | None = None
    """Why the data directory's store could not be opened (an in-memory one stands in): readiness is not_ready."""
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    """Each model's circuit breaker (closed, open, half_open), shown by readiness."""
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    """Counted from the recorder's records (its listener); `/metrics` renders them."""
    election: Election = field(default_factory=lambda: Election(Solo()))
    """Whether this worker leads the once-only jobs (readiness and `/metrics` say)."""


class StoreUnavailable(RuntimeError):
    """The store cannot be opened and `storage.required` is true."""


def data_dir_for(registry: Registry, settings: AppSettings) -> DataDir:
    return DataDir.resolve(registry, settings.data_dir)


class Gateway:
    """Owns the gateway's parts: the shared models, the store, the runtime holder, the recorder, the pipeline and the
    background jobs. Built by `start()`, torn down by `stop()`."""

    def __init__(self, settings: AppSettings, drain: Drain | None = None) -> None:
        self.settings = settings
        self.drain = drain if drain is not None else Drain(settings.shutdown_grace_s)
        self.jobs: dict[str, Job] = {}
        self.embedder: StaticEmbedder | None = None
        self.task_model: TaskModel | None = None
        self.feedback_labels: list[tuple[str, str]] = []
        self.server: EmbeddingServer | None = None
        self._rules_version: str | None = None
        self._transformer_ready = asyncio.Event()
        self.breaker = CircuitBreaker()
        """Per-model health, kept across config reloads (`build` re-configures it)."""
        self.metrics = GatewayMetrics(multiprocess=settings.workers > 1)
        self.election = Election(Solo())

    def leads(self) -> bool:
        return self.election.leading

    def _leadership(self, data: DataDir) -> Leadership:
        """One worker leads alone; several elect one through a lock in their data directory. (A store shared by
        replicas on several machines would hand out its own lock here.)"""
        return FileLeadership(data.leader_lock) if self.settings.workers > 1 else Solo()

    async def start(self) -> Services:
        settings = self.settings
        registry = load_registry(settings.config_path)
        self.forwarder = forwarder = await asyncio.to_thread(Forwarder)
        await forwarder.warm_up()
        registry = forwarder.prepare(registry)
        self.data = data = data_dir_for(registry, settings)
        try:
            data.ensure()
        except OSError as exc:  # the store below says what this means for serving
            log.error("the data directory %s cannot be created: %s", data.root, exc)
        classifier_settings = registry.router.classifier
        wants_table = classifier_settings.static_embedding.enabled
        if wants_table and data.path(TABLE_FILE).exists():
            try:
                self.embedder = await asyncio.to_thread(StaticEmbedder.load, data.path(TABLE_FILE))
            except Exception as exc:  # noqa: BLE001 - a damaged table is built again by the warm-up job
                log.error("the static embedding table %s cannot be read (%s); it is built again", data.path(TABLE_FILE),
                          exc)  # fmt: skip
        self.sources = ClassifierSources(data.artifacts)
        self.inline = transformer_inline(classifier_settings)
        if self.inline:
            self.task_model = await asyncio.to_thread(self.sources.task_model)
        store, store_error = await asyncio.to_thread(self._open_store, registry, data)
        self.store = store
        self.election = Election(self._leadership(data), on_lead=self._on_lead)
        await self.election.attempt()  # before the runtime is built: only the leader records the routing rules
        self.versions_sync = ArtifactSync.of(store, data.artifacts)  # replicas sharing a store share router versions
        if self.versions_sync is not None:
            await self.versions_sync.step()  # before the first runtime: a joining replica serves the shared versions
        self.feedback_labels = await asyncio.to_thread(store.task_labels)
        self.learning = LearningLoop(lambda: self.holder.current.registry, store, data.artifacts, self._router_context)
        self.holder = holder = RuntimeHolder(settings.config_path, await asyncio.to_thread(self.build, registry),
                                             self.build)  # fmt: skip
        holder.watch_artifacts((data.path(POINTER_FILE), data.path(THRESHOLDS_POINTER), *self.sources.pointers()))
        storage = registry.storage
        self.recorder = Recorder(store, queue_size=storage.queue_size, batch_size=storage.batch_size,
                                 flush_interval_ms=storage.flush_interval_ms,
                                 listeners=(self.metrics.observe,))  # fmt: skip
        await self.recorder.start()
        self.feedback_writer = DurableWriter(store)
        await self.feedback_writer.start()
        # MiniLM serves layers 3-4 only where they may run inline (a GPU, or a CPU with a budget); elsewhere it
        # would cost a core at first start and memory for nothing the request path uses.
        self.server = EmbeddingServer() if self.inline else None
        self.pipeline = Pipeline(lambda: holder.current, forwarder, self.recorder, drain=self.drain,
                                 embed_budget_ms=classifier_settings.transformer_budget_ms,
                                 breaker=self.breaker)  # fmt: skip
        self.services = Services(holder, self.pipeline, self.recorder, self.feedback_writer, store, data.root,
                                 self.drain, learning=self.learning, jobs=self.jobs, breaker=self.breaker,
                                 metrics=self.metrics, election=self.election)  # fmt: skip
        self.services.store_error = store_error
        self.services.embeddings = "ok" if self.embedder is not None or not wants_table else "building"
        self.services.task_model = "off" if self.server is None else ("loading" if self.task_model else "fitting")
        self._start_jobs()
        log.info("autoroute ready: %d models (%d usable), data in %s", len(registry.models),
                 len(holder.current.available), data.root)  # fmt: skip
        return self.services

    def _start_jobs(self) -> None:
        learning = self.learning
        jobs = [
            Job("warm-up", self._warm_up),
            Job("corrections", periodic(self._refresh_corrections, lambda: REFIT_CHECK_S, "refreshing corrections")),
            Job("win-rates", periodic(self._win_rates, self._win_rates_interval, "win-rate aggregation", at_once=True)),
            Job("trainer", periodic(self._train, learning.train_interval_s, "training the learned router")),
        ]
        if self.settings.watch_config:
            jobs.append(Job("config-reload", self.holder.watch))
        if self.versions_sync is not None:
            sync = periodic(self.versions_sync.step, lambda: SYNC_INTERVAL_S, "syncing shared router versions")
            jobs.append(Job("shared-versions", sync))
        if self.server is not None:
            jobs.append(Job("classifier-refit", self._refit_classifier))
        if self.settings.workers > 1:
            jobs.append(Job("election", self.election.run))
            jobs.append(Job("metrics", periodic(self._publish_metrics, lambda: PUBLISH_METRICS_S, "metrics")))
        for job in jobs:
            self.jobs[job.name] = job
            job.start()

    async def stop(self) -> None:
        for job in reversed(list(self.jobs.values())):
            await job.stop()
        if self.server is not None:
            await self.server.close()
        await self.feedback_writer.stop()
        await self.recorder.stop()
        self.store.close()
        self.election.release()
        stats = self.recorder.stats
        log.info("recorder stopped: %d written, %d dropped, %d lost; feedback: %d written durably, %d refused",
                 stats.written, stats.dropped, stats.lost, self.feedback_writer.stats.written,
                 self.feedback_writer.stats.failed)  # fmt: skip

    # -- the runtime ------------------------------------------------------------------------------------------

    def build(self, registry: Registry) -> Runtime:
        """The runtime for `registry` from the current parts. Runs in a worker thread (the holder serialises it)."""
        if self.inline:  # `autoroute train-classifier` output, or the leader's refit
            self.task_model = self.sources.task_model() or self.task_model
        parts = Parts(self.embedder, self.sources.text_model(), self.task_model,
                      self.sources.corrections(self.feedback_labels, registry), self.learning.current)  # fmt: skip
        self.breaker.configure(registry.router.circuit_breaker, (m.name for m in registry.models))
        runtime = build_runtime(self.forwarder.prepare(registry), self.forwarder.has_credentials,
                                self.data.artifacts, parts)  # fmt: skip
        self._record_rules(runtime.source)
        return runtime

    @staticmethod
    def _open_store(registry: Registry, data: DataDir) -> tuple[Store, str | None]:
        """The config's store (`storage.url`, else the data directory's file); when it cannot be opened, an in-memory
        one and the reason (chats are served, nothing is recorded, feedback is refused, readiness says not_ready), or
        a refusal to start with `storage.required: true`."""
        storage = registry.storage
        where = f"${storage.url_env}" if storage.url_env else redacted(storage.url or str(data.db))
        try:
            return open_store(store_location(storage, data), pool_size=storage.pool_size), None
        except Exception as exc:  # noqa: BLE001 - whatever stops the store from opening
            reason = f"the store {where} cannot be opened: {type(exc).__name__}: {exc}"
            if registry.storage.required:
                log.error("%s; storage.required is true, so the gateway does not start", reason)
                raise StoreUnavailable(f"{reason} (storage.required is true)") from exc
            log.error("%s; serving chats without recording them (storage.required is false)", reason)
            return open_store(":memory:"), reason

    def _record_rules(self, registry: Registry) -> None:
        """The routing rules in force, written to `model_routing_rules` once per registry version (by the leader)."""
        if registry.version == self._rules_version or not self.leads():
            return
        try:
            self.store.save_routing_rules(registry.version, routing_rule_rows(registry))
            self._rules_version = registry.version
        except Exception:  # noqa: BLE001 - a record for people: never a reason not to serve
            log.exception("the routing rules of registry %s were not recorded", registry.version)

    def _router_context(self) -> RouterContext | None:
        embedder = self.embedder
        return RouterContext(static_embed=embedder.embed) if embedder is not None else None

    # -- jobs -------------------------------------------------------------------------------------------------

    async def _on_lead(self) -> None:
        """A worker that takes the leadership over records the rules in force (a no-op when they are)."""
        holder: RuntimeHolder | None = getattr(self, "holder", None)  # None at the first attempt, in `start`
        if holder is not None:
            await asyncio.to_thread(self._record_rules, holder.current.source)

    async def _win_rates(self) -> None:
        """The leader aggregates and publishes; a follower reads what it published."""
        if self.leads():
            await self.learning.aggregate_once()
        else:
            await self.learning.follow_snapshot()

    def _win_rates_interval(self) -> float:
        return self.learning.aggregate_interval_s() if self.leads() else FOLLOW_S

    async def _train(self) -> None:
        if self.leads():
            await self.learning.train_when_due()

    async def _publish_metrics(self) -> None:
        """This worker's live state (recorder, feedback, breakers, leadership) where the others' scrapes read it."""
        names = (m.name for m in self.holder.current.registry.models)
        self.metrics.publish(dataclasses.asdict(self.recorder.stats), dataclasses.asdict(self.feedback_writer.stats),
                             self.breaker.snapshot(time.monotonic(), names), self.leads())  # fmt: skip

    async def _refresh_corrections(self) -> None:
        """Tasks named by feedback become corrections for that prompt and its near duplicates within seconds."""
        fresh = await asyncio.to_thread(self.store.task_labels)
        if fresh != self.feedback_labels:
            self.feedback_labels = fresh
            await self.holder.refresh()
            log.info("classifier corrections refreshed: %d prompts labelled by feedback", len(fresh))

    async def _warm_up(self) -> None:
        """The static embedding table (when it is wanted and missing or damaged), then the transformer (when inline).
        The cheap layers serve meanwhile. One step after another: transformers' lazy imports are not thread safe."""
        services = self.services
        if services.embeddings == "building":
            try:
                self.embedder = await self._static_table()
                await self.holder.refresh()
                services.embeddings = "ok"
            except Exception as exc:  # noqa: BLE001 - the gateway keeps serving on its other layers
                log.exception("the static embedding table could not be built")
                services.embeddings = f"failed: {type(exc).__name__}"
        if self.server is None:
            return
        try:
            await self.server.start()
        except Exception as exc:  # noqa: BLE001 - the cheap layers keep serving
            log.exception("the classifier's transformer model could not be loaded")
            services.task_model = f"failed: {type(exc).__name__}"
            return
        self.pipeline.use_embeddings(self.server)
        self._transformer_ready.set()

    async def _static_table(self) -> StaticEmbedder:
        """The leader distils the table (or loads it); a follower waits for the leader's file, or takes over."""
        path, seen = self.data.path(TABLE_FILE), None
        while not self.leads():
            if (stamp := file_stamp(path)) is not None and stamp != seen:  # written since this worker looked
                seen = stamp
                try:
                    return await asyncio.to_thread(StaticEmbedder.load, path)
                except Exception as exc:  # noqa: BLE001 - the leader quarantines and rebuilds a damaged table
                    log.warning("the static embedding table %s cannot be read yet: %s", path, exc)
            await asyncio.sleep(FOLLOW_S)
        return await asyncio.to_thread(StaticEmbedder.load_or_build, self.data)

    async def _refit_classifier(self) -> None:
        """Refit layers 3-4 when there is none yet (first start, ~15 s), when the registry's tasks changed, or when
        feedback has named enough new tasks; then swap it in. Checked every REFIT_CHECK_S."""
        from .training import refit_task_model

        await self._transformer_ready.wait()
        assert self.server is not None
        services = self.services
        fitted_labels, labels, counted_at = -1, 0, -LABEL_COUNT_S
        while True:
            if not self.leads():  # the leader's fit, swapped in when its file changes (also with --no-reload)
                if await asyncio.to_thread(self.sources.task_model) is not self.task_model:
                    await self.holder.refresh()
                services.task_model = "ok" if self.task_model is not None else "fitting (by the leader)"
                fitted_labels = -1
                await asyncio.sleep(REFIT_CHECK_S)
                continue
            current = self.task_model
            registry = self.holder.current.registry
            if time.monotonic() - counted_at >= LABEL_COUNT_S:  # a scan of the feedback table: not too often
                labels, counted_at = len(await asyncio.to_thread(self.store.task_labels)), time.monotonic()
            reason = ("none yet" if current is None else "the registry's tasks changed"
                      if current.is_stale(registry.tasks) else "new task labels from feedback"
                      if fitted_labels >= 0 and labels - fitted_labels >= REFIT_AFTER_LABELS else None)  # fmt: skip
            if reason is not None:
                services.task_model = "fitting"
                log.info("fitting the task model: %s", reason)
                try:
                    fitted = await refit_task_model(registry, self.data, self.store, self.server)
                    self.task_model, fitted_labels = fitted
                    await self.holder.refresh()
                except Exception as exc:  # noqa: BLE001 - the last model (or the cheap layers) keeps serving
                    log.exception("the task model could not be fitted")
                    services.task_model = f"failed: {type(exc).__name__}"
                    await asyncio.sleep(REFIT_RETRY_S)
                    continue
            elif fitted_labels < 0:
                fitted_labels = labels
            services.task_model = "ok"
            await asyncio.sleep(REFIT_CHECK_S)


__all__ = ["AppSettings", "Gateway", "Services", "data_dir_for"]
