"""Durable writes: a caller returns only after its synced commit, concurrent callers share one, failures reach
every caller; the SQLite store commits them with synchronous=FULL and goes back to NORMAL; the Postgres store's
survive a crash of the database server even where its default is synchronous_commit=off."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from proxy.durable import DurableWriter, NotDurable
from proxy.events import FeedbackRecord, Record
from proxy.store import SQLiteStore, open_store

from ..postgres import Cluster


def feedback(n: int) -> FeedbackRecord:
    return FeedbackRecord(f"r{n}", time.time(), 0.5, comment=f"c{n}")


class SlowStore:
    def __init__(self, *, delay_s: float = 0.02, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.commits: list[list[Record]] = []
        self.lock = threading.Lock()

    def write_durable(self, records: Sequence[Record]) -> None:
        time.sleep(self.delay_s)
        if self.fail:
            raise OSError("disk full")
        with self.lock:
            self.commits.append(list(records))

    def stored(self) -> set[str]:
        with self.lock:
            return {r.comment for batch in self.commits for r in batch if isinstance(r, FeedbackRecord) and r.comment}


def test_a_write_returns_after_its_commit_and_concurrent_writes_share_commits() -> None:
    store = SlowStore()
    seen_stored: list[bool] = []

    async def one(writer: DurableWriter, n: int) -> None:
        await writer.write(feedback(n))
        seen_stored.append(f"c{n}" in store.stored())

    async def go() -> DurableWriter:
        writer = DurableWriter(store)
        await asyncio.gather(*(one(writer, n) for n in range(50)))
        await writer.stop()
        return writer

    writer = asyncio.run(go())
    assert seen_stored == [True] * 50, "no caller returned before its row was committed"
    assert writer.stats.written == 50 and len(store.commits) == writer.stats.commits
    assert writer.stats.commits < 10, "concurrent callers are grouped into few commits"


def test_a_failed_commit_reaches_every_caller_and_is_counted() -> None:
    store = SlowStore(fail=True)

    async def go() -> tuple[list[BaseException | None], DurableWriter]:
        writer = DurableWriter(store)
        results = await asyncio.gather(*(writer.write(feedback(n)) for n in range(5)), return_exceptions=True)
        store.fail = False
        await writer.write(feedback(99))  # the writer goes on after a failure
        await writer.stop()
        return list(results), writer

    results, writer = asyncio.run(go())
    assert all(isinstance(r, NotDurable) for r in results)
    assert writer.stats.failed == 5 and writer.stats.written == 1 and store.stored() == {"c99"}


def test_stop_writes_what_is_pending_and_later_writes_are_refused() -> None:
    store = SlowStore(delay_s=0.05)

    async def go() -> None:
        writer = DurableWriter(store)
        pending = [asyncio.create_task(writer.write(feedback(n))) for n in range(3)]
        await asyncio.sleep(0)
        await writer.stop()
        await asyncio.gather(*pending)
        with pytest.raises(NotDurable):
            await writer.write(feedback(4))

    asyncio.run(go())
    assert store.stored() == {"c0", "c1", "c2"}


def test_the_sqlite_store_commits_durable_writes_with_full_sync(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    statements: list[str] = []
    store._db.conn.set_trace_callback(statements.append)
    store.write_durable([feedback(1), feedback(2)])
    store.write_batch([feedback(3)])
    store._db.conn.set_trace_callback(None)
    full, commits = statements.index("PRAGMA synchronous=FULL"), [i for i, s in enumerate(statements) if s == "COMMIT"]
    assert full < commits[0] < statements.index("PRAGMA synchronous=NORMAL") < commits[1]
    assert statements.count("PRAGMA synchronous=FULL") == 1, "telemetry batches stay on NORMAL"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert [r["comment"] for n in (1, 2, 3) for r in store.feedback(f"r{n}")] == ["c1", "c2", "c3"]
    store.close()


def test_the_postgres_store_commits_durable_writes_synchronously_whatever_the_server_default(postgres: Cluster) -> None:
    url = postgres.new_database()
    database = url.rsplit("/", 1)[1]
    postgres.sql(f"ALTER DATABASE {database} SET synchronous_commit TO off", "postgres")
    store = open_store(url)
    store.write_durable([feedback(n) for n in range(20)])
    postgres.crash_and_restart()  # at once: an asynchronous commit's WAL would still be in the server's buffers
    store.close()
    store = open_store(url)
    try:
        assert [r["comment"] for n in range(20) for r in store.feedback(f"r{n}")] == [f"c{n}" for n in range(20)]
    finally:
        store.close()
