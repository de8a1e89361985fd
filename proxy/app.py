"""The app factory: everything is built in the lifespan (`proxy/gateway.py`), nothing at import.

The one thing built before it is the app's `Drain` (`app.state.drain`), which `proxy/server.py` starts when SIGTERM
arrives, before uvicorn stops anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from router_plugins.errors import RoutingError

from .dashboard import router as dashboard_router
from .drain import SHUTTING_DOWN, Drain, DrainMiddleware, ShuttingDown
from .durable import NotDurable
from .errors import ApiError, backends_failed, internal_error, routing_error
from .gateway import AppSettings, Gateway, Services, data_dir_for
from .observe import router as observe_router
from .openapi import OPENAPI_URL, serve_openapi
from .pipeline import BackendsFailed
from .routes import router as api_router
from .workers import WorkerHeader

log = logging.getLogger(__name__)


def create_app(settings: AppSettings) -> FastAPI:
    drain = Drain(settings.shutdown_grace_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = Gateway(settings, drain)
        app.state.services = None
        if not settings.answer_while_starting:
            app.state.services = await gateway.start()
            starting = None
        else:
            starting = asyncio.ensure_future(_start(app, gateway, drain))
        try:
            yield
        finally:
            if starting is not None and not starting.done():
                starting.cancel()
                with contextlib.suppress(BaseException):
                    await starting
            if app.state.services is not None:
                await gateway.stop()

    # No slash redirects: Starlette builds their Location from the client's Host header, before auth.
    app = FastAPI(title="autoroute", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=OPENAPI_URL,
                  redirect_slashes=False)  # fmt: skip
    serve_openapi(app)
    app.state.drain = drain
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(StartingMiddleware, state=app.state)
    if settings.workers > 1:
        app.add_middleware(WorkerHeader)
    app.include_router(api_router)
    app.include_router(observe_router)
    app.include_router(dashboard_router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ShuttingDown, _shutting_down)
    app.add_exception_handler(NotDurable, _not_durable)
    app.add_exception_handler(RoutingError, _routing_error)
    app.add_exception_handler(BackendsFailed, _backends_failed)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return app


async def _start(app: FastAPI, gateway: Gateway, drain: Drain) -> None:
    try:
        app.state.services = await gateway.start()
    except Exception:
        log.critical("the gateway could not start", exc_info=True)
        if drain.stop_server is not None:
            drain.stop_server()


class StartingMiddleware:
    """While the gateway starts (`AppSettings.answer_while_starting`): liveness 200, readiness 503 `starting`, every
    other call a retryable 503 in OpenAI's shape."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.state.services is not None or scope["path"] == "/health/liveness":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/health/readiness":
            body = {"status": "starting", "checks": {"startup": "loading the config, the store and the router"}}
            response: Response = JSONResponse(body, status_code=503)
        else:
            message = "The gateway is starting and takes no requests yet; retry the request."
            response = ApiError(503, message, type="server_error", code="starting").to_response()
        await response(scope, receive, send)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.to_response(_request_id_header(request))


async def _routing_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RoutingError)
    return routing_error(exc).to_response(_request_id_header(request))


async def _backends_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackendsFailed)
    return backends_failed(exc.errors, exc.headers).to_response(_request_id_header(request))


async def _shutting_down(request: Request, exc: Exception) -> Response:
    # `connection: close` sends the client's retry to a new connection, which a load balancer gives another instance.
    error = ApiError(503, str(exc), type="server_error", code=SHUTTING_DOWN, headers={"connection": "close"})
    return error.to_response(_request_id_header(request))


async def _not_durable(request: Request, exc: Exception) -> Response:
    message = f"The feedback was not recorded: {exc}. Retry it."
    error = ApiError(503, message, type="server_error", code="feedback_not_recorded")
    return error.to_response(_request_id_header(request))


async def _validation_error(request: Request, exc: Exception) -> Response:
    # FastAPI's default 422 body breaks OpenAI clients; every error uses OpenAI's shape.
    return ApiError(400, f"Invalid request: {exc}").to_response(_request_id_header(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    # Starlette's headers carry the 405's `Allow`, which RFC 9110 requires.
    error = ApiError(exc.status_code, message, code=code, headers=dict(exc.headers or {}))
    return error.to_response(_request_id_header(request))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return internal_error().to_response(_request_id_header(request))


def _request_id_header(request: Request) -> dict[str, str]:
    request_id = getattr(request.state, "request_id", None)
    return {"x-autoroute-request-id": request_id} if request_id else {}


__all__ = ["AppSettings", "Services", "create_app", "data_dir_for"]
