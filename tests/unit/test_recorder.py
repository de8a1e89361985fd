from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from proxy.events import DecisionRecord, PerformanceRecord, Record
from proxy.recorder import Recorder
from proxy.store import Store, open_store

from ..stores import count


def decision(request_id: str) -> DecisionRecord:
    return DecisionRecord(
        request_id=request_id,
        created_at=time.time(),
        requested_model="auto",
        preference="balanced",
        task="chat",
        task_confidence=0.5,
        classification_layer="rules",
        needs_clarification=False,
        layer_attempts=[],
        selected_model="m",
        routed_model="m",
        selection_reason="only one",
        alternatives=[],
        router_name="default",
        router_version="1",
        propensity=1.0,
        stream=False,
        status="success",
        attempts=1,
        prompt_chars=3,
    )


def perf(request_id: str, attempt: int = 1) -> PerformanceRecord:
    return PerformanceRecord(
        request_id=request_id,
        created_at=time.time(),
        attempt=attempt,
        model="m",
        task="chat",
        outcome="success",
        latency_ms=1.0,
        ttft_ms=None,
        prompt_tokens=1,
        completion_tokens=1,
        cost_usd=None,
        cost_source=None,
    )


class FakeStore:
    """In-memory store that records batches; can fail or be slow on purpose."""

    def __init__(self, *, fail_times: int = 0, write_delay_s: float = 0.0) -> None:
        self.batches: list[list[Record]] = []
        self.fail_times = fail_times
        self.write_delay_s = write_delay_s
        self.calls = 0
        self.exists_calls = 0
        self.in_write = False
        self.write_threads: set[int] = set()

    def write_batch(self, records: Sequence[Record]) -> None:
        self.calls += 1
        self.write_threads.add(threading.get_ident())
        self.in_write = True
        try:
            if self.write_delay_s:
                time.sleep(self.write_delay_s)  # blocking on purpose, like SQLite
            if self.fail_times:
                self.fail_times -= 1
                raise sqlite3.OperationalError("disk I/O error")
            self.batches.append(list(records))
        finally:
            self.in_write = False

    @property
    def records(self) -> list[Record]:
        return [r for b in self.batches for r in b]

    def decision_exists(self, request_id: str) -> bool:
        self.exists_calls += 1
        return any(isinstance(r, DecisionRecord) and r.request_id == request_id for r in self.records)

    def decision(self, request_id: str) -> dict[str, Any] | None:
        return None

    def performance(self, request_id: str) -> list[dict[str, Any]]:
        return []

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        return []

    def check_writable(self) -> None:
        return None

    def close(self) -> None:
        return None


class CountingStore:
    """Wraps a real store and counts write_batch calls."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.batch_sizes: list[int] = []

    def write_batch(self, records: Sequence[Record]) -> None:
        self.batch_sizes.append(len(records))
        self.inner.write_batch(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_records_are_written_in_batches() -> None:
    store = FakeStore()

    async def main() -> None:
        rec = Recorder(store, batch_size=100, flush_interval_ms=10_000)
        await rec.start()
        for i in range(1000):
            assert rec.record(perf(f"r{i}"))
        await rec.flush()
        assert [len(b) for b in store.batches] == [100] * 10
        assert rec.stats.batches == 10 and rec.stats.written == 1000
        assert rec.stats.queue_depth == 0
        await rec.stop()

    asyncio.run(main())
    assert [r.request_id for r in store.records] == [f"r{i}" for i in range(1000)]  # FIFO
    assert store.write_threads and threading.get_ident() not in store.write_threads


def test_small_batches_flush_after_interval_without_flush_call() -> None:
    store = FakeStore()

    async def main() -> None:
        rec = Recorder(store, batch_size=500, flush_interval_ms=50)
        await rec.start()
        for i in range(3):
            rec.record(perf(f"r{i}"))
            await asyncio.sleep(0)
        deadline = time.monotonic() + 5
        while not store.batches and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # Records trickling in within the interval share one batch.
        assert [len(b) for b in store.batches] == [3]
        await rec.stop()

    asyncio.run(main())


def test_stop_writes_everything_to_real_store(store_location: str) -> None:
    counting = CountingStore(open_store(store_location))

    async def main() -> None:
        rec = Recorder(counting, queue_size=10_000, batch_size=500)  # type: ignore[arg-type]
        await rec.start()
        for i in range(5000):
            assert rec.record(perf(f"r{i}") if i % 2 else decision(f"r{i}"))
        await rec.stop()
        assert rec.stats.written == 5000 and rec.stats.lost == 0 and rec.stats.dropped == 0
        assert not rec.record(perf("late"))  # after stop nothing is accepted silently
        assert rec.stats.dropped == 1

    asyncio.run(main())
    counting.inner.close()
    n_dec, n_perf = count(store_location, "routing_decisions"), count(store_location, "model_performance")
    assert n_dec + n_perf == 5000 and n_dec == 2500
    assert sum(counting.batch_sizes) == 5000 and max(counting.batch_sizes) <= 500
    assert len(counting.batch_sizes) == 10


def test_stop_without_start_drains() -> None:
    store = FakeStore()

    async def main() -> None:
        rec = Recorder(store)
        rec.record(perf("a"))
        await rec.stop()
        await rec.stop()  # idempotent

    asyncio.run(main())
    assert len(store.records) == 1


def test_failing_store_is_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore(fail_times=10**9)

    async def main() -> None:
        rec = Recorder(store, batch_size=10, retry_delay_ms=1)
        await rec.start()
        for i in range(25):
            assert rec.record(perf(f"r{i}")) is True
        await rec.flush()  # returns even though everything failed
        assert rec.stats.write_errors == 3 and rec.stats.lost == 25
        assert rec.stats.written == 0 and rec.stats.batches == 0
        # The writer survived: a recovered store gets the next records.
        store.fail_times = 0
        rec.record(perf("after"))
        await rec.stop()
        assert rec.stats.written == 1

    with caplog.at_level(logging.ERROR, logger="proxy.recorder"):
        asyncio.run(main())
    assert store.calls == 3 * 2 + 1  # each failed batch retried exactly once
    assert any("OperationalError" in r.getMessage() for r in caplog.records)
    assert not any("disk I/O error" in r.getMessage() for r in caplog.records)


def test_single_failure_is_retried() -> None:
    store = FakeStore(fail_times=1)

    async def main() -> None:
        rec = Recorder(store, retry_delay_ms=1)
        await rec.start()
        rec.record(perf("a"))
        await rec.flush()
        assert rec.stats.write_errors == 0 and rec.stats.lost == 0 and rec.stats.written == 1
        await rec.stop()

    asyncio.run(main())


def test_full_queue_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()

    async def main() -> None:
        rec = Recorder(store, queue_size=10)
        # Not started, so nothing drains the queue.
        results = [rec.record(perf(f"r{i}")) for i in range(15)]
        assert results == [True] * 10 + [False] * 5
        assert rec.stats.dropped == 5 and rec.stats.enqueued == 10 and rec.stats.queue_depth == 10
        assert not rec.record(decision("dropped"))
        assert not await rec.knows("dropped")  # a dropped decision is not "known"
        await rec.stop()
        assert rec.stats.written == 10

    with caplog.at_level(logging.WARNING, logger="proxy.recorder"):
        asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # rate limited
    assert len(store.records) == 10


def test_knows_before_flush_and_falls_back_to_store() -> None:
    store = FakeStore()

    async def main() -> None:
        rec = Recorder(store, flush_interval_ms=10_000, recent_ids=2)
        await rec.start()
        rec.record(decision("d1"))
        assert await rec.knows("d1")
        assert store.exists_calls == 0 and store.batches == []  # answered from memory
        rec.record(perf("p1"))
        assert not await rec.knows("p1")  # only decisions count
        assert not await rec.knows("unknown")
        rec.record(decision("d2"))
        rec.record(decision("d3"))  # evicts d1 from the recent set
        await rec.flush()
        calls = store.exists_calls
        assert await rec.knows("d1")  # found via the store
        assert store.exists_calls == calls + 1
        await rec.stop()

    asyncio.run(main())


def test_slow_store_does_not_block_event_loop() -> None:
    store = FakeStore(write_delay_s=0.5)
    ticks_during_write = 0
    gaps: list[float] = []

    async def ticker() -> None:
        nonlocal ticks_during_write
        last = time.perf_counter()
        for _ in range(60):
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            if store.in_write:
                ticks_during_write += 1

    async def main() -> None:
        rec = Recorder(store, flush_interval_ms=1)
        await rec.start()
        rec.record(perf("a"))
        t0 = time.perf_counter()
        await asyncio.gather(ticker(), rec.flush())
        assert time.perf_counter() - t0 >= 0.5  # the write really took its time
        await rec.stop()

    asyncio.run(main())
    # If the write ran on the loop, one gap would be >= 0.5 s and no tick would
    # land inside it. Generous bounds: a blocked loop fails both by a wide margin.
    assert max(gaps) < 0.25
    assert ticks_during_write >= 10


def test_flush_with_nothing_pending_returns() -> None:
    async def main() -> None:
        rec = Recorder(FakeStore())
        await asyncio.wait_for(rec.flush(), 1)
        await rec.start()
        await asyncio.wait_for(rec.flush(), 1)
        await rec.stop()

    asyncio.run(main())
