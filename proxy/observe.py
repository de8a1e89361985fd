"""The HTTP endpoints that show what the gateway did: `GET /metrics` and `GET /v1/decisions/{request_id}`.

**Auth.** Both follow the client API keys (`auth` in the registry): when the gateway asks chat clients for a key, a
scrape and a receipt need one too (Prometheus sends it as a bearer token: `authorization.credentials_file`), since
metrics name models, tasks and spend, and a receipt quotes the routing of someone's prompt. Without keys both are open,
like the chat endpoint.

**Receipt freshness.** Decisions and attempts reach the store through the recorder's batched queue (up to
`storage.flush_interval_ms` later). A receipt first flushes that queue (waits for the records accepted so far to be
written: one batch write, milliseconds) and then reads the store, so it is complete as soon as the response was sent,
and the store stays the one source (no second cache to keep consistent; with several workers, a request served by
another worker is found once that worker's batch is written). A stream's decision is recorded at its first byte and
its attempt at its end: a receipt read meanwhile shows no attempt for the stream yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ApiError
from .metrics import LiveState
from .receipts import build_receipt
from .routes import _authorize, _services

if TYPE_CHECKING:
    from .gateway import Services
    from .store_api import Store

log = logging.getLogger(__name__)

router = APIRouter()

FLUSH_WAIT_S = 2.0
"""The longest a receipt waits for the recorder's queue to be written; then it answers from what the store has."""
STORE_READ_S = 1.0
"""The longest a scrape waits for the store's learning-event counts; then it leaves them out."""
MAX_REQUEST_ID_CHARS = 200
_NO_STORE = {"cache-control": "no-store"}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    services = _services(request)
    _authorize(request, services.holder.current)
    body, content_type = services.metrics.render(await live_state(services), request.headers.get("accept"))
    return Response(body, media_type=content_type, headers=_NO_STORE)


async def live_state(services: Services) -> LiveState:
    """What a scrape reads from the gateway's parts: on the event loop, except the store (in a thread, bounded)."""
    runtime = services.holder.current
    learning: dict[str, int] | None = None
    try:
        learning = await asyncio.wait_for(asyncio.to_thread(services.store.learning_event_counts), STORE_READ_S)
    except Exception as exc:  # noqa: BLE001 - a slow or broken store leaves one metric out, not the scrape
        log.warning("/metrics: the learning events could not be counted: %s", type(exc).__name__)
    return LiveState(
        recorder=dataclasses.asdict(services.recorder.stats),
        feedback=dataclasses.asdict(services.feedback_writer.stats),
        breaker=services.breaker.snapshot(time.monotonic(), (m.name for m in runtime.registry.models)),
        models_available=len(runtime.available),
        leader=services.election.leading,
        learning_events=learning,
        registry_version=runtime.registry.version,
        routers={r.name: str(r.version) for r in runtime.engine.chain},
    )


@router.get("/v1/decisions/{request_id}")
async def decision_receipt(request_id: str, request: Request) -> Response:
    """The routing receipt of one request (`proxy.receipts`): 404 in OpenAI's error shape for an unknown id."""
    services = _services(request)
    _authorize(request, services.holder.current)
    try:
        await asyncio.wait_for(services.recorder.flush(), FLUSH_WAIT_S)
    except TimeoutError:
        log.warning("a receipt answered before the recorder's queue was written (over %s s)", FLUSH_WAIT_S)
    rows = None
    if len(request_id) <= MAX_REQUEST_ID_CHARS:
        try:
            rows = await asyncio.to_thread(_read, services.store, request_id)
        except Exception as exc:  # noqa: BLE001 - a store that cannot answer must not turn into a wrong 404
            raise ApiError(503, "The store cannot be read right now; retry later.", type="server_error") from exc
    if rows is None:
        raise ApiError(404, f"No request with id '{request_id[:MAX_REQUEST_ID_CHARS]}' was routed here.",
                       param="request_id", code="request_not_found")  # fmt: skip
    return JSONResponse(build_receipt(*rows), headers=_NO_STORE)


def _read(store: Store, request_id: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]] | None:
    decision = store.decision(request_id)
    if decision is None:
        return None
    return decision, store.performance(request_id), store.feedback(request_id)


__all__ = ["router"]
