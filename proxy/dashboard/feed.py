"""What the dashboard's JSON endpoint serves: every analysis of `proxy.analytics` over the last N seconds, computed in a
worker thread, one computation at a time, each window's answer reused for `CACHE_S`.

Why this shape: the page polls every few seconds and several may be open, while the store is one connection behind a
lock that the recorder's writes share. So a poll never reads the store twice within `CACHE_S`, never starts a second
read while one runs (a caller that gave up leaves its read running; the next one waits for it instead of piling up
another thread), and a window reads at most `MAX_REQUESTS` decisions (the newest; the analysis says `truncated`).
Analysing and JSON-encoding happen in the thread too: the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from proxy.analytics import AnalyticsStore, Window, analyze, load_window
from proxy.evaluation.ab import parse_since

DEFAULT_WINDOW = "1h"
MAX_WINDOW_S = 31 * 86_400.0
MIN_WINDOW_S = 60.0
MAX_REQUESTS = 50_000
"""Decisions one dashboard window reads at most: about 1 s of store time on this machine's CPU."""
MAX_LEARNING_EVENTS = 1000
CACHE_S = 2.0
TIMEOUT_S = 15.0
REFRESH_S = 5.0
"""How often the page asks again (it reads this from the answer)."""
_QUERIES = ("window_decisions", "window_attempts", "ab_outcomes", "learning_events")


class FeedUnavailable(Exception):
    """The store cannot answer (it raised, lacks the analysis queries, or took longer than `TIMEOUT_S`)."""


def parse_window(text: str, now: float) -> Window:
    """`30m`, `1h`, `24h`, `7d` (or a Unix time / ISO date to start from): the window ending now. ValueError names the
    accepted forms."""
    try:
        since = parse_since(text[:40], now)
    except ValueError:
        since = None
    if since is None or not MIN_WINDOW_S <= now - since <= MAX_WINDOW_S:
        raise ValueError(f"'window' must be a duration from {MIN_WINDOW_S / 60:g}m to {MAX_WINDOW_S / 86_400:g}d, "
                         "such as 15m, 1h, 24h or 7d.")  # fmt: skip
    return Window(since, now)


def analytics_store(store: object) -> AnalyticsStore | None:
    """`store` as the analyses read it, or None when it lacks their queries (a back end without them)."""
    return cast(AnalyticsStore, store) if all(callable(getattr(store, q, None)) for q in _QUERIES) else None


@dataclass(frozen=True)
class _Answer:
    at: float
    """`time.monotonic()` when computed."""
    body: bytes


class DashboardFeed:
    """The analyses of one store for the dashboard (see the module docstring)."""

    def __init__(self, store: AnalyticsStore, *, cache_s: float = CACHE_S, timeout_s: float = TIMEOUT_S,
                 max_requests: int = MAX_REQUESTS, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store = store
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self.max_requests = max_requests
        self._clock = clock
        self._answers: dict[str, _Answer] = {}
        self._lock = asyncio.Lock()
        self._running: asyncio.Future[bytes] | None = None

    async def data(self, window: str = DEFAULT_WINDOW) -> bytes:
        """The JSON document for `window` (validated by `parse_window` first: ValueError)."""
        parse_window(window, self._clock())
        fresh = self._fresh(window)
        if fresh is not None:
            return fresh
        try:
            async with asyncio.timeout(self.timeout_s), self._lock:
                fresh = self._fresh(window)  # another caller may have computed it while this one waited
                if fresh is not None:
                    return fresh
                if self._running is not None and not self._running.done():
                    with contextlib.suppress(Exception):  # its own caller already heard of its failure
                        await asyncio.shield(self._running)
                self._running = running = asyncio.ensure_future(self._compute(window))
                running.add_done_callback(_retrieve)
                return await asyncio.shield(running)
        except TimeoutError as exc:
            raise FeedUnavailable(f"the store did not answer within {self.timeout_s:g} s") from exc

    def _fresh(self, window: str) -> bytes | None:
        answer = self._answers.get(window)
        return answer.body if answer is not None and time.monotonic() - answer.at < self.cache_s else None

    async def _compute(self, window: str) -> bytes:
        try:
            body = await asyncio.to_thread(self._read, window)
        except Exception as exc:
            raise FeedUnavailable(f"the store could not be read: {type(exc).__name__}") from exc
        now = time.monotonic()
        self._answers = {w: a for w, a in self._answers.items() if now - a.at < self.cache_s}
        self._answers[window] = _Answer(now, body)
        return body

    def _read(self, window_text: str) -> bytes:
        window = parse_window(window_text, self._clock())
        data = load_window(self.store, window, self.max_requests)
        analysis = analyze(data, self.store.ab_outcomes(window.since), self.store.learning_events(MAX_LEARNING_EVENTS))
        document: dict[str, Any] = {
            "object": "dashboard.data",
            "window": window_text,
            "generated_at": window.until,
            "refresh_s": REFRESH_S,
            "max_requests": self.max_requests,
            "analysis": analysis.to_dict(),
        }
        return json.dumps(document, allow_nan=False, separators=(",", ":")).encode()


def _retrieve(future: asyncio.Future[bytes]) -> None:
    # A read whose caller gave up still ends; its failure is that caller's, not a "never retrieved" warning.
    if not future.cancelled():
        future.exception()


__all__ = ["DEFAULT_WINDOW", "DashboardFeed", "FeedUnavailable", "analytics_store", "parse_window"]
