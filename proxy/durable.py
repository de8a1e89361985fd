"""Writes the caller waits for: `write()` returns once its record is committed and synced to disk.

Feedback goes this way (`POST /v1/feedback` answers 200 only after it), decisions and attempts through the
`Recorder`'s queue. Callers that arrive while a commit is under way share the next one (group commit), so many
concurrent posts cost one fsync, and the telemetry queue never waits for one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.events import Record

logger = logging.getLogger(__name__)

MAX_BATCH = 500


class DurableStore(Protocol):
    def write_durable(self, records: Sequence[Record]) -> None: ...


class NotDurable(Exception):
    """The record was not committed: the caller must not acknowledge it (the HTTP layer answers a retryable 503)."""


@dataclass
class DurableStats:
    written: int = 0
    """Records committed and synced."""
    failed: int = 0
    """Records whose commit failed; each caller was told so."""
    commits: int = 0
    """Commits made (one per batch of concurrent callers)."""


class DurableWriter:
    """One writer task; a record's caller waits for the synced commit that holds it. Event loop thread only."""

    def __init__(self, store: DurableStore, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        self._store = store
        self._max_batch = max_batch
        self._pending: list[tuple[Record, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.stats = DurableStats()

    async def write(self, record: Record) -> None:
        """Return once `record` is committed and synced; raise NotDurable if it was not (and will not be) written.

        A caller cancelled while waiting leaves its record to be written anyway.
        """
        if self._stopping:
            raise NotDurable("the gateway is shutting down")
        await self.start()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, fut))
        self._wake.set()
        await fut

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="autoroute-durable-writer")

    async def stop(self) -> None:
        """Write what is pending, then end the writer; later writes raise NotDurable."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            while not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                await asyncio.to_thread(self._store.write_durable, [record for record, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets the failure instead
                self.stats.failed += len(batch)
                # Class only: messages can quote row data.
                logger.error("%d durable record(s) not written: %s", len(batch), type(exc).__name__)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(NotDurable(f"the store refused the write ({type(exc).__name__})"))
                continue
            self.stats.written += len(batch)
            self.stats.commits += 1
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)


__all__ = ["DurableStats", "DurableStore", "DurableWriter", "NotDurable"]
