"""Running the app under uvicorn, with the drain (`proxy/drain.py`) between SIGTERM and uvicorn's own shutdown.

Left alone, uvicorn on SIGTERM closes its listener at once (readiness can no longer say anything), waits for the
requests in flight, cancels those still running when `timeout_graceful_shutdown` is up (a stream is cut with no error
frame, its row written after the recorder stopped), then re-raises the signal, so the process ends with status -15.
Here the first SIGTERM or SIGINT starts the drain instead and the listener stays open; the drain ends the server
when it is done, and the process exits 0. A second signal ends the requests in flight at once; a third is uvicorn's
(SIGINT: quit without waiting).
"""

from __future__ import annotations

import asyncio
import socket
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from .drain import Drain

BACKSTOP_S = 3
"""uvicorn's own shutdown timeout, after the drain: for connections that outlive it (a client that stops reading)."""


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0
        self._draining: asyncio.Task[None] | None = None
        self.failed = False
        drain.stop_server = self._fail

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def _fail(self) -> None:
        self.failed = True
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it runs between two bytecodes of the event loop's own thread, so it only sets a flag
        # and hands the rest to the loop.
        self._signals += 1
        if self._loop is None or self._signals > 2:
            super().handle_exit(sig, frame)
            return
        self._drain.draining = True  # readiness answers 503 from this instant
        self._loop.call_soon_threadsafe(self._start_drain if self._signals == 1 else self._drain.expire)

    def _start_drain(self) -> None:
        self._draining = asyncio.ensure_future(self._drain.run(stop=self._stop))

    def _stop(self) -> None:
        self.should_exit = True


def serve(app: Starlette, sockets: list[socket.socket] | None = None, **uvicorn_options: Any) -> int:
    """Run an app from `create_app` (its drain is `app.state.drain`) until a signal and the drain are over, on
    `sockets` when given (a worker's, bound by its supervisor: `proxy/workers.py`), else on uvicorn's `host`/`port`.
    The exit status: 1 when the gateway failed to start, else 0."""
    config = uvicorn.Config(app, timeout_graceful_shutdown=BACKSTOP_S, **uvicorn_options)
    server = DrainingServer(config, app.state.drain)
    server.run(sockets)
    return 1 if server.failed or not server.started else 0


__all__ = ["BACKSTOP_S", "DrainingServer", "serve"]
