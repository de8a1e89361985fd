"""Background jobs: named, started and stopped by their owner (the gateway), each reporting its state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Job:
    """One background job: `start()` runs `run` as a task; `stop()` cancels it and waits for it to end.

    `state` is `idle` before the start, `running`, `done` when `run` returned, `failed: <error>` when it raised (the
    error is logged; the gateway goes on without the job), `stopped` after `stop()`."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None
        self.state = "idle"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._main(), name=f"autoroute-{self.name}")

    async def _main(self) -> None:
        self.state = "running"
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a job that dies is reported; the gateway keeps serving
            log.exception("background job %s failed", self.name)
            self.state = f"failed: {type(exc).__name__}"
            return
        self.state = "done"

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.state in ("idle", "running"):
            self.state = "stopped"


def periodic(
    step: Callable[[], Awaitable[object]], interval_s: Callable[[], float], what: str, *, at_once: bool = False
) -> Callable[[], Awaitable[None]]:
    """A job body that runs `step` every `interval_s()` seconds (the first time at once, or after one interval); a
    failed step is logged and the next one runs on time."""

    async def run() -> None:
        if not at_once:
            await asyncio.sleep(interval_s())
        while True:
            try:
                await step()
            except Exception:  # noqa: BLE001 - the loop outlives any one failure
                log.exception("%s failed", what)
            await asyncio.sleep(interval_s())

    return run


__all__ = ["Job", "periodic"]
