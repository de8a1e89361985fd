"""The app factory: everything is built in the lifespan, nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from router_plugins.classify import StaticEmbedder
from router_plugins.classify.assembly import ClassifierSources, transformer_inline
from router_plugins.classify.model import MODEL_FILE, TaskModel
from router_plugins.classify.static_embedding import TABLE_FILE
from router_plugins.registry import Registry, load_registry
from router_plugins.routers import RouterContext
from router_plugins.routers.learned import POINTER_FILE
from router_plugins.serving import EmbeddingServer

from .errors import ApiError, internal_error
from .forward import Forwarder
from .learning import LearningLoop
from .pipeline import Pipeline
from .recorder import Recorder
from .routes import router as api_router
from .runtime import RuntimeHolder, build_runtime
from .store import Store, open_store
from .tuning import POINTER_FILE as THRESHOLDS_POINTER

log = logging.getLogger(__name__)

DB_FILE = "autoroute.db"
ARTIFACTS = "artifacts"
REFIT_CHECK_S = 5.0
LABEL_COUNT_S = 30.0
REFIT_RETRY_S = 300.0
REFIT_AFTER_LABELS = 20
"""Feedback that names this many new request tasks refits the classifier's layers 3-4 while serving."""


@dataclass(frozen=True)
class AppSettings:
    config_path: Path
    data_dir: Path | None = None
    """Overrides `storage.data_dir` of the config."""
    watch_config: bool = True


@dataclass
class Services:
    """What the routes use; lives on `app.state.services` for the app's lifetime."""

    holder: RuntimeHolder
    pipeline: Pipeline
    recorder: Recorder
    store: Store
    data_dir: Path
    embeddings: str = "ok"
    """`building` while the static embedding table is being distilled in the background."""
    task_model: str = "off"
    """The classifier's layers 3-4: `fitting` at first start, `ok`; `off` when disabled or off the request path
    (a CPU without `transformer_budget_ms`)."""
    learning: LearningLoop | None = None


async def _fit_task_model(
    registry: Registry, server: EmbeddingServer, path: Path, data_dir: Path, store: Store
) -> tuple[TaskModel, int]:
    """Fit the classifier's layers 3-4 on the registry's examples, the kept labelled prompts and the tasks feedback
    named, embedding through the serving model; returns the model and how many feedback labels it used."""
    from router_plugins.classify.model import fit_task_model

    from .training import classifier_prompts

    prompts = await asyncio.to_thread(classifier_prompts, data_dir, store)
    loop = asyncio.get_running_loop()

    def embed(texts: Sequence[str]) -> np.ndarray:
        return asyncio.run_coroutine_threadsafe(server.embed(list(texts)), loop).result()

    def fit() -> TaskModel:
        model = fit_task_model(registry.tasks, prompts, embed)
        model.save(path)
        return model

    model = await asyncio.to_thread(fit)
    feedback = sum(p.origin == "feedback" for p in prompts)
    log.info("task model fitted (%s prompts, %d named by feedback) and saved to %s", model.meta.get("prompts"),
             feedback, path)  # fmt: skip
    return model, feedback


def data_dir_for(registry: Registry, settings: AppSettings) -> Path:
    return Path(settings.data_dir or registry.storage.data_dir).expanduser().resolve()


def create_app(settings: AppSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = load_registry(settings.config_path)
        forwarder = await asyncio.to_thread(Forwarder)
        await forwarder.warm_up()
        registry = forwarder.resolve_prices(registry)
        data_dir = data_dir_for(registry, settings)
        data_dir.mkdir(parents=True, exist_ok=True)
        embedder: list[StaticEmbedder | None] = [None]
        table = data_dir / "artifacts" / TABLE_FILE
        wants_table = registry.router.classifier.static_embedding.enabled
        if wants_table and table.exists():
            embedder[0] = await asyncio.to_thread(StaticEmbedder.load, table)

        model_path = data_dir / ARTIFACTS / MODEL_FILE
        sources = ClassifierSources(data_dir / ARTIFACTS)
        classifier_settings = registry.router.classifier
        inline = transformer_inline(classifier_settings)
        task_model: list[TaskModel | None] = [await asyncio.to_thread(sources.task_model) if inline else None]
        await asyncio.to_thread(sources.text_model)

        store = open_store(str(data_dir / DB_FILE))
        feedback_labels: list[list[tuple[str, str]]] = [await asyncio.to_thread(store.task_labels)]
        await asyncio.to_thread(sources.corrections, feedback_labels[0], registry)  # built off the loop, kept
        holder_ref: list[RuntimeHolder] = []
        learning = LearningLoop(
            lambda: holder_ref[0].current.registry, store, data_dir / ARTIFACTS,
            lambda: RouterContext(static_embed=embedder[0].embed) if embedder[0] is not None else None,
        )  # fmt: skip

        def rebuild(new: Registry):  # noqa: ANN202 - a closure over this app's shared parts
            if inline and task_model[0] is not None:
                task_model[0] = sources.task_model() or task_model[0]  # `autoroute train-classifier` output
            return build_runtime(
                forwarder.resolve_prices(new), embedder[0], forwarder.has_credentials, artifacts=data_dir / ARTIFACTS,
                task_model=task_model[0], winrate=learning.current, text_model=sources.text_model(),
                corrections=sources.corrections(feedback_labels[0], new),
            )  # fmt: skip

        holder = RuntimeHolder(settings.config_path, rebuild(registry), rebuild)
        holder_ref.append(holder)
        holder.artifact_pointers = (data_dir / ARTIFACTS / POINTER_FILE, data_dir / ARTIFACTS / THRESHOLDS_POINTER,
                                    *sources.pointers())  # fmt: skip
        holder.check_artifact()
        storage = registry.storage
        recorder = Recorder(
            store,
            queue_size=storage.queue_size,
            batch_size=storage.batch_size,
            flush_interval_ms=storage.flush_interval_ms,
        )
        await recorder.start()
        # MiniLM serves layers 3-4 only where they may run inline (a GPU, or a CPU with a budget); elsewhere it
        # would cost a core at first start and memory for nothing the request path uses.
        server = EmbeddingServer() if inline else None
        pipeline = Pipeline(lambda: holder.current, forwarder, recorder,
                            embed_budget_ms=classifier_settings.transformer_budget_ms)  # fmt: skip
        services = Services(holder, pipeline, recorder, store, data_dir, learning=learning)
        app.state.services = services
        services.embeddings = "ok" if embedder[0] is not None or not wants_table else "building"
        services.task_model = "off" if server is None else ("loading" if task_model[0] else "fitting")
        watcher = asyncio.create_task(holder.watch()) if settings.watch_config else None
        background = [asyncio.create_task(learning.run_aggregator()), asyncio.create_task(learning.run_trainer())]

        async def follow_corrections() -> None:
            # Tasks named by feedback become corrections for that prompt and its near duplicates within seconds.
            while True:
                await asyncio.sleep(REFIT_CHECK_S)
                try:
                    fresh = await asyncio.to_thread(store.task_labels)
                    # Loaded and featurised in a thread, so the rebuild on the loop finds both ready.
                    await asyncio.to_thread(sources.text_model)
                    if fresh != feedback_labels[0]:
                        await asyncio.to_thread(sources.corrections, fresh, holder.current.registry)
                        feedback_labels[0] = fresh
                        holder.rebuild_current()
                        log.info("classifier corrections refreshed: %d prompts labelled by feedback", len(fresh))
                except Exception:  # noqa: BLE001 - the last corrections keep serving
                    log.exception("classifier corrections not refreshed")

        background.append(asyncio.create_task(follow_corrections()))

        async def warm_up_models() -> None:
            # One step after another: transformers' lazy imports are not safe from two threads at once.
            if services.embeddings == "building":
                try:
                    embedder[0] = await asyncio.to_thread(StaticEmbedder.load_or_build, data_dir)
                    holder.rebuild_current()
                    services.embeddings = "ok"
                except Exception as exc:  # noqa: BLE001 - the gateway keeps serving on its keyword layer
                    log.exception("the static embedding table could not be built")
                    services.embeddings = f"failed: {type(exc).__name__}"
            if server is None:
                return
            try:
                await server.start()
            except Exception as exc:  # noqa: BLE001 - the cheap layers keep serving
                log.exception("the classifier's transformer model could not be loaded")
                services.task_model = f"failed: {type(exc).__name__}"
                return
            pipeline.use_embeddings(server)
            fitted_labels, labels, counted_at = -1, 0, -LABEL_COUNT_S
            while True:
                # Refit layers 3-4 when there is none yet (first start, ~15 s), when the registry's tasks changed,
                # or when feedback has named enough new tasks; then swap it in. Checked every REFIT_CHECK_S.
                current = task_model[0]
                registry = holder.current.registry
                if time.monotonic() - counted_at >= LABEL_COUNT_S:  # a scan of the feedback table: not too often
                    labels, counted_at = len(await asyncio.to_thread(store.task_labels)), time.monotonic()
                reason = ("none yet" if current is None else "the registry's tasks changed"
                          if current.is_stale(registry.tasks) else "new task labels from feedback"
                          if fitted_labels >= 0 and labels - fitted_labels >= REFIT_AFTER_LABELS else None)  # fmt: skip
                if reason is not None:
                    services.task_model = "fitting"
                    log.info("fitting the task model: %s", reason)
                    try:
                        task_model[0], fitted_labels = await _fit_task_model(registry, server, model_path, data_dir,
                                                                             store)  # fmt: skip
                        holder.rebuild_current()
                    except Exception as exc:  # noqa: BLE001 - the last model (or the cheap layers) keeps serving
                        log.exception("the task model could not be fitted")
                        services.task_model = f"failed: {type(exc).__name__}"
                        await asyncio.sleep(REFIT_RETRY_S)
                        continue
                elif fitted_labels < 0:
                    fitted_labels = labels
                services.task_model = "ok"
                await asyncio.sleep(REFIT_CHECK_S)

        # Serve at once: the cheap layers answer until the models are ready.
        warmer = asyncio.create_task(warm_up_models())
        log.info("autoroute ready: %d models (%d usable), data in %s", len(registry.models),
                 len(holder.current.available), data_dir)  # fmt: skip
        try:
            yield
        finally:
            for task in (watcher, warmer, *background):
                if task is not None:
                    task.cancel()
            if server is not None:
                await server.close()
            await recorder.stop()
            store.close()
            stats = recorder.stats
            log.info("recorder stopped: %d written, %d dropped, %d lost", stats.written, stats.dropped, stats.lost)

    app = FastAPI(title="autoroute", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(api_router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.to_response(_request_id_header(request))


async def _validation_error(request: Request, exc: Exception) -> Response:
    # FastAPI's default 422 body breaks OpenAI clients; every error uses OpenAI's shape.
    return ApiError(400, f"Invalid request: {exc}").to_response(_request_id_header(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return ApiError(exc.status_code, message, code=code).to_response(_request_id_header(request))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return internal_error().to_response(_request_id_header(request))


def _request_id_header(request: Request) -> dict[str, str]:
    request_id = getattr(request.state, "request_id", None)
    return {"x-autoroute-request-id": request_id} if request_id else {}
