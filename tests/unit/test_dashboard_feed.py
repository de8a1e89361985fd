"""The dashboard's feed: its window parameter, its JSON, and how it spares the store (one read at a time, reused)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.dashboard.feed import DashboardFeed, FeedUnavailable, analytics_store, parse_window
from proxy.store import SQLiteStore

from .analytics_rows import NOW, populated_store


class CountingStore:
    """A store that counts its window reads, and can hold them until released or make them fail."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.reads = 0
        self.running = 0
        self.most_running = 0
        self.release = threading.Event()
        self.release.set()
        self.fail = False
        self._lock = threading.Lock()

    def window_decisions(self, since: float, until: float, limit: int = 200_000) -> list[dict[str, Any]]:
        with self._lock:
            self.reads += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            assert self.release.wait(10)
            if self.fail:
                raise OSError("disk I/O error")
            return self.store.window_decisions(since, until, limit)
        finally:
            with self._lock:
                self.running -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    s = populated_store(tmp_path / "autoroute.db")
    yield CountingStore(s)
    s.close()


def feed(store: CountingStore, **kwargs: Any) -> DashboardFeed:
    readable = analytics_store(store)
    assert readable is not None
    return DashboardFeed(readable, clock=lambda: NOW, **kwargs)


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("1h", 3600), ("24h", 86_400), ("7d", 604_800)])
def test_a_window_is_a_duration_back_from_now(text: str, seconds: float) -> None:
    window = parse_window(text, NOW)
    assert (window.since, window.until) == (NOW - seconds, NOW)


@pytest.mark.parametrize("text", ["nonsense", "30s", "0h", "90d", "", "1h; drop table", "9" * 100])
def test_a_bad_window_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="such as 15m, 1h, 24h or 7d"):
        parse_window(text, NOW)


def test_the_document_is_every_analysis_of_the_window(store: CountingStore) -> None:
    document = json.loads(asyncio.run(feed(store).data("1h")))
    assert (document["object"], document["window"], document["generated_at"]) == ("dashboard.data", "1h", NOW)
    analysis = document["analysis"]
    assert analysis["totals"]["requests"] == 5 and len(analysis["recent"]) == 5
    served = {m["model"]: m["requests"] for m in analysis["models"]}
    assert served == {"coder": 2, "frontier": 2, "mini": 1, "mathematician": 0}
    assert analysis["confusion"]["n"] == 3 and analysis["ab"] is None
    assert json.loads(asyncio.run(feed(store).data("24h")))["analysis"]["totals"]["requests"] == 6


def test_polls_within_the_cache_time_read_the_store_once(store: CountingStore) -> None:
    async def main() -> list[bytes]:
        f = feed(store, cache_s=60)
        together = await asyncio.gather(*(f.data("1h") for _ in range(5)))
        return [*together, await f.data("1h"), await f.data("15m")]

    bodies = asyncio.run(main())
    assert len(set(bodies[:6])) == 1 and bodies[6] != bodies[0]
    assert store.reads == 2 and store.most_running == 1


def test_a_slow_store_times_out_and_the_next_poll_waits_for_the_same_read(store: CountingStore) -> None:
    async def main() -> bytes:
        f = feed(store, cache_s=60, timeout_s=0.2)
        store.release.clear()
        with pytest.raises(FeedUnavailable, match="did not answer within 0.2 s"):
            await f.data("1h")
        with pytest.raises(FeedUnavailable):
            await f.data("1h")
        store.release.set()
        return await f.data("1h")

    body = asyncio.run(main())
    assert json.loads(body)["analysis"]["totals"]["requests"] == 5
    assert store.most_running == 1, "a caller that gave up never starts a second read beside the first"


def test_a_failing_store_is_unavailable_not_an_error(store: CountingStore) -> None:
    store.fail = True
    with pytest.raises(FeedUnavailable, match="OSError"):
        asyncio.run(feed(store).data("1h"))


def test_a_store_without_the_analysis_queries_is_not_read() -> None:
    assert analytics_store(object()) is None
