"""The web dashboard at `/dashboard`: a static page served by the gateway (`static/`: plain HTML, CSS and JavaScript
drawing inline SVG, no third-party code, nothing from the network) over the JSON of `GET /v1/dashboard/data`
(`feed.py`: the analyses of `proxy.analytics` over a window) and the routing receipts of `GET /v1/decisions/{id}`."""

from .routes import router

__all__ = ["router"]
