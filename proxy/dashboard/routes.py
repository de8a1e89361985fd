"""The dashboard's HTTP endpoints: the page, its two static files and its data.

- `GET /dashboard` and `GET /dashboard/{file}` (its CSS and JavaScript modules): static files shipped in the package
  (`proxy/dashboard/static/`), the same for everyone, holding no data; nothing is loaded from another origin (the
  content security policy forbids it).
- `GET /v1/dashboard/data?window=1h`: every analysis of the window as JSON (`proxy.dashboard.feed`). Auth as for chat.
- The receipts the page opens are `GET /v1/decisions/{request_id}` (`proxy/observe.py`), auth as for chat too.

**Auth.** A browser cannot put a bearer token on a page load, so the page itself is public and its data is not: when
the gateway asks clients for a key, the page asks the user for one, keeps it in the tab's `sessionStorage` (gone when
the tab closes, never in a URL, a cookie or a log) and sends it as `Authorization: Bearer` on its own JSON calls to this
origin. Without keys the calls are open, like chat.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from importlib import resources

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import ApiError
from proxy.routes import _authorize, _services

from .feed import DEFAULT_WINDOW, DashboardFeed, FeedUnavailable, analytics_store

log = logging.getLogger(__name__)

router = APIRouter()

FLUSH_WAIT_S = 1.0
"""The longest a data call waits for the recorder's queue to be written before it reads the store."""
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "panels.js": "text/javascript; charset=utf-8",
    "receipt.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@functools.cache
def _static(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


def _file(name: str) -> Response:
    return Response(_static(name), media_type=_FILES[name], headers=_PAGE_HEADERS)


@router.get("/dashboard", include_in_schema=False)
async def page() -> Response:
    return _file("index.html")


@router.get("/dashboard/{name}", include_in_schema=False)
async def static_file(name: str) -> Response:
    if name not in _FILES or name == "index.html":
        raise ApiError(404, f"GET /dashboard/{name[:100]}: Not Found", code="not_found")
    return _file(name)


@router.get("/v1/dashboard/data", include_in_schema=False)
async def dashboard_data(request: Request) -> Response:
    """The analyses of the last `window` (`15m`, `1h`, `24h`, `7d`, ...; default 1h) as one JSON document."""
    services = _services(request)
    _authorize(request, services.holder.current)
    feed = _feed(request)
    window = request.query_params.get("window", DEFAULT_WINDOW)
    try:
        await asyncio.wait_for(services.recorder.flush(), FLUSH_WAIT_S)
    except TimeoutError:
        log.warning("the dashboard read the store before the recorder's queue was written (over %s s)", FLUSH_WAIT_S)
    try:
        body = await feed.data(window)
    except ValueError as exc:
        raise ApiError(400, str(exc), param="window", code="invalid_window") from exc
    except FeedUnavailable as exc:
        raise ApiError(503, f"The dashboard's data cannot be read right now: {exc}.", type="server_error",
                       code="store_unavailable") from exc  # fmt: skip
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


def _feed(request: Request) -> DashboardFeed:
    """The app's feed over its services' store (made at the first call; made again if the store is another)."""
    store = _services(request).store
    feed: DashboardFeed | None = getattr(request.app.state, "dashboard_feed", None)
    if feed is None or feed.store is not store:
        readable = analytics_store(store)
        if readable is None:
            raise ApiError(501, "This gateway's store cannot serve analyses.", type="server_error",
                           code="not_supported")  # fmt: skip
        feed = request.app.state.dashboard_feed = DashboardFeed(readable)
    return feed


__all__ = ["router"]
