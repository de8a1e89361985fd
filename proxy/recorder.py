"""Non-blocking write queue between the request path and the store.

Requests call `record()` and move on; a background task groups records into
batches and hands them to the store in a worker thread, so neither a slow disk
nor a failing database can stall or break a request.

The price is what a crash loses: the records accepted and not yet committed
(`stats.pending`), at most `queue_size` plus the batch being written, in
practice the last `flush_interval_ms` of traffic. A clean shutdown writes them
all. What must not be lost (feedback) goes through `proxy.durable` instead.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.events import DecisionRecord, Record
from proxy.store_api import RequestStore

logger = logging.getLogger(__name__)

_DROP_LOG_INTERVAL_S = 10.0
_NEVER = sys.maxsize


@dataclass
class RecorderStats:
    enqueued: int = 0
    """Records accepted by `record()`."""
    written: int = 0
    dropped: int = 0
    """Records refused because the queue was full or the recorder had stopped."""
    write_errors: int = 0
    """Batches that failed twice and were given up."""
    lost: int = 0
    """Records in those batches."""
    batches: int = 0
    """Batches written successfully."""
    queue_depth: int = 0
    pending: int = 0
    """Records accepted and not yet written or given up: what a crash at this moment would lose."""


class Recorder:
    """Bounded queue plus one writer task.

    `record()` must be called from the event loop thread (asyncio.Queue is not
    thread-safe). Records are written in the order they were accepted.
    """

    def __init__(
        self,
        store: RequestStore,
        *,
        queue_size: int = 10000,
        batch_size: int = 500,
        flush_interval_ms: int = 200,
        recent_ids: int = 100_000,
        retry_delay_ms: int = 100,
        listeners: Sequence[Callable[[Record], None]] = (),
    ) -> None:
        if batch_size < 1 or queue_size < 1:
            raise ValueError("batch_size and queue_size must be positive")
        self._store = store
        self._batch_size = batch_size
        self._interval_s = flush_interval_ms / 1000
        self._retry_delay_s = retry_delay_ms / 1000
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=queue_size)
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_max = recent_ids
        self._listeners = tuple(listeners)
        """Told of every record as it is offered, kept or dropped (e.g. `proxy.metrics`): cheap and non-blocking."""
        self.stats = RecorderStats()

        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = False
        # Progress is counted, not marked in the queue: a flush must not need a
        # free queue slot, and the writer is FIFO so "done >= n" means the first
        # n accepted records are settled (written or lost).
        self._accepted = 0
        self._settled = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # The writer sleeps on _wake; record() only sets it once the queue holds
        # _wake_at records, so a busy request path does not wake it per record.
        self._wake = asyncio.Event()
        self._wake_at = _NEVER
        self._oldest_at = 0.0
        self._last_drop_log = -_DROP_LOG_INTERVAL_S
        self._drops_since_log = 0

    # --- request path -------------------------------------------------------

    def record(self, rec: Record) -> bool:
        """Enqueue without blocking; False if the record was dropped."""
        for listener in self._listeners:
            try:
                listener(rec)
            except Exception:  # noqa: BLE001 - an observer's bug must not fail the request it observes
                logger.exception("a recorder listener failed")
        if self._stopping:
            self._drop("recorder is stopped")
            return False
        try:
            self._queue.put_nowait(rec)
        except asyncio.QueueFull:
            self._drop("queue is full")
            return False
        depth = self._queue.qsize()
        if depth == 1:
            self._oldest_at = time.monotonic()
        self.stats.enqueued += 1
        self.stats.queue_depth = depth
        self._accepted += 1
        self.stats.pending = self._accepted - self._settled
        if isinstance(rec, DecisionRecord):
            self._remember(rec.request_id)
        if depth >= self._wake_at:
            self._wake.set()
        return True

    async def knows(self, request_id: str) -> bool:
        """Whether a decision with this id was recorded, even if not yet flushed.

        Store errors propagate, so a caller can answer 503 rather than a wrong 404.
        """
        if request_id in self._recent:
            return True
        return await asyncio.to_thread(self._store.decision_exists, request_id)

    async def session_pin(self, session_id: str) -> dict[str, Any] | None:
        """The store's view of a session (`Store.session_pin`); None when the store cannot say."""
        try:
            return await asyncio.to_thread(self._store.session_pin, session_id)
        except Exception:  # noqa: BLE001 - a session the store cannot recall is routed afresh, never refused
            logger.warning("the store could not recall session %s", session_id, exc_info=True)
            return None

    def _remember(self, request_id: str) -> None:
        self._recent[request_id] = None
        self._recent.move_to_end(request_id)
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def _drop(self, why: str) -> None:
        self.stats.dropped += 1
        self._drops_since_log += 1
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            logger.warning(
                "recorder dropped %d record(s): %s (total dropped %d)",
                self._drops_since_log,
                why,
                self.stats.dropped,
            )
            self._last_drop_log = now
            self._drops_since_log = 0

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="autoroute-recorder")

    async def flush(self) -> None:
        """Wait until every record accepted so far is written (or given up as lost)."""
        target = self._accepted
        if self._settled >= target:
            return
        await self.start()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, fut))
        self._wake.set()
        await fut

    async def stop(self) -> None:
        """Write everything accepted, then end the writer; later records are dropped."""
        if self._stopped:
            return
        await self.start()
        self._stopping = True
        self._wake.set()
        assert self._task is not None
        await self._task
        self._stopped = True

    # --- writer -------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                return
            try:
                await self._write(batch)
            except Exception:  # a bug here must not kill the writer; records are lost
                logger.exception("recorder writer failed unexpectedly")
                self.stats.lost += len(batch)
            self._settled += len(batch)
            self.stats.pending = self._accepted - self._settled
            self._release_flush_waiters()

    def _hurry(self) -> bool:
        return self._stopping or bool(self._flush_waiters)

    async def _next_batch(self) -> list[Record]:
        while self._queue.empty():
            if self._stopping:
                return []
            await self._sleep(wake_at=1, timeout=None)
        if self._queue.qsize() < self._batch_size and not self._hurry():
            remaining = self._oldest_at + self._interval_s - time.monotonic()
            if remaining > 0:
                await self._sleep(wake_at=self._batch_size, timeout=remaining)
        n = min(self._batch_size, self._queue.qsize())
        batch = [self._queue.get_nowait() for _ in range(n)]
        if not self._queue.empty():
            # The leftovers arrived before now; timing them from here may wait up
            # to one extra interval, which is fine for telemetry.
            self._oldest_at = time.monotonic()
        self.stats.queue_depth = self._queue.qsize()
        return batch

    async def _sleep(self, *, wake_at: int, timeout: float | None) -> None:
        # No await between the caller's checks and wait(), so a set() cannot slip
        # in between and be lost by this clear().
        self._wake.clear()
        self._wake_at = wake_at
        try:
            if timeout is None:
                await self._wake.wait()
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            self._wake_at = _NEVER

    async def _write(self, batch: list[Record]) -> None:
        for attempt in (1, 2):
            try:
                await asyncio.to_thread(self._store.write_batch, batch)
            except Exception as exc:
                if attempt == 1:
                    await asyncio.sleep(self._retry_delay_s)
                    continue
                self.stats.write_errors += 1
                self.stats.lost += len(batch)
                # Class only: messages can quote row data, and rows carry prompts.
                logger.error(
                    "recorder lost %d record(s) after retry: %s",
                    len(batch),
                    type(exc).__name__,
                )
                return
            self.stats.written += len(batch)
            self.stats.batches += 1
            return

    def _release_flush_waiters(self) -> None:
        if not self._flush_waiters:
            return
        pending = []
        for target, fut in self._flush_waiters:
            if target <= self._settled:
                if not fut.done():
                    fut.set_result(None)
            else:
                pending.append((target, fut))
        self._flush_waiters = pending
