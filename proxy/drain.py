"""What the gateway does between SIGTERM and its exit: the drain.

`proxy/server.py` calls `Drain.run()` when the signal arrives. From that instant readiness answers 503
`shutting_down` (so a load balancer takes the instance out) and new chat requests are refused with a retryable 503,
while the listener stays open and the requests in flight get `grace_s` to finish. When the grace runs out, every
backend call still awaited through `bound()` is cut: a stream ends with one `shutting_down` error frame, a request
still waiting for its first byte answers 503, and its decision is recorded `cancelled`. Then the server stops: it
closes the listener, runs the lifespan shutdown (the recorder writes everything it holds) and exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 10.0
CUT_WAIT_S = 1.0
"""After the grace, how long the cut requests get to send their error frames before the server stops anyway (a client
that does not read is then left to uvicorn's own shutdown timeout)."""
SHUTTING_DOWN = "shutting_down"
"""The error code of everything the drain refuses or cuts."""
_UNCOUNTED_PREFIX = "/health/"


class ShuttingDown(Exception):
    """The gateway is shutting down: a new request is refused, or one in flight outlived the grace period. The HTTP
    layer answers 503 `shutting_down` (retryable); a stream past its first byte ends with that error frame."""


class Drain:
    """The shutdown state every part of the gateway reads: whether it is draining, what is in flight, the deadline.

    Used from the event loop thread only, except `draining`, which the signal handler sets directly so readiness
    says so at once.
    """

    def __init__(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        if grace_s < 0:
            raise ValueError("the grace period cannot be negative")
        self.grace_s = grace_s
        self.draining = False
        self.in_flight = 0
        """HTTP requests being served, streams included, health probes not."""
        self._deadline: float | None = None
        """Loop time at which bounded awaits are cut; None until the drain begins."""
        self._active: set[asyncio.Timeout] = set()
        self._idle = asyncio.Event()
        self.stop_server: Callable[[], None] | None = None
        """Ends the server with a failure status (set by `proxy/server.py`): for a start that failed while the
        server already listened."""

    @property
    def expired(self) -> bool:
        """Whether the grace period has run out."""
        return self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline

    def bound(self) -> _Bound:
        """`async with drain.bound(): await backend` raises ShuttingDown when the grace runs out during the await.

        Cheap enough for every chunk of a stream: until the drain begins it arms no timer.
        """
        return _Bound(self)

    # --- lifecycle ----------------------------------------------------------

    def begin(self) -> None:
        """Start draining: refuse new work from now on, and cut what is still running `grace_s` from now."""
        self.draining = True
        if self._deadline is None:
            self._reschedule(asyncio.get_running_loop().time() + self.grace_s)

    def expire(self) -> None:
        """Cut the requests in flight now (a second signal), not at the end of the grace."""
        self.draining = True
        self._reschedule(asyncio.get_running_loop().time())
        self._idle.set()  # wakes `run()` to re-read the deadline

    async def run(self, stop: Callable[[], None]) -> None:
        """Drain, then call `stop` (which ends the server): at once when nothing is in flight, else when the last
        request has ended or the grace is over (plus CUT_WAIT_S for the cut ones to say so)."""
        self.begin()
        log.info("shutting down: %d request(s) in flight get up to %.1f s", self.in_flight, self.grace_s)
        if not await self._wait_idle(extra_s=0.0):
            log.warning("shutdown grace over: %d request(s) still in flight are ended", self.in_flight)
            if not await self._wait_idle(extra_s=CUT_WAIT_S):
                log.warning("%d request(s) did not end after the grace; the server stops anyway", self.in_flight)
        stop()

    async def _wait_idle(self, *, extra_s: float) -> bool:
        loop = asyncio.get_running_loop()
        while self.in_flight:
            assert self._deadline is not None
            remaining = self._deadline + extra_s - loop.time()
            if remaining <= 0:
                return False
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except TimeoutError:
                pass
        return True

    def _reschedule(self, deadline: float) -> None:
        if self._deadline is not None and self._deadline <= deadline:
            return
        self._deadline = deadline
        for timeout in self._active:
            if not timeout.expired():
                timeout.reschedule(deadline)

    # --- in-flight accounting (DrainMiddleware) -----------------------------

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()


class _Bound:
    """One bounded await: an `asyncio.timeout_at` the drain moves to its deadline while the await is under way."""

    __slots__ = ("_drain", "_timeout")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._timeout = asyncio.timeout_at(drain._deadline)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()
        self._drain._active.add(self._timeout)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._drain._active.discard(self._timeout)
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as cut:  # only raised when this timeout fired: the grace is over
            raise ShuttingDown("The gateway is shutting down and its grace period for this request ran out.") from cut


class DrainMiddleware:
    """Counts the HTTP requests in flight (whole responses, streams included) so the drain knows when it is done.
    Health probes are not counted: a load balancer polling readiness must not hold the shutdown up."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_UNCOUNTED_PREFIX):
            await self.app(scope, receive, send)
            return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()


__all__ = ["DEFAULT_GRACE_S", "SHUTTING_DOWN", "Drain", "DrainMiddleware", "ShuttingDown"]
