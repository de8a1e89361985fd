"""Recording never blocks the event loop: a store that hangs on every write leaves chats, record() and the loop as
fast as they are with a store that never waits.

Times are compared with the store's own hang (seconds), not with absolute thresholds, so a loaded machine does not
make these flaky: a loop blocked by the store would be slower than the hang itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from proxy.events import DecisionRecord, PerformanceRecord, Record
from proxy.forward import StreamHandle, Usage
from proxy.pipeline import Completed, Pipeline
from proxy.recorder import Recorder
from proxy.runtime import build_runtime
from router_plugins.registry import ModelEntry, parse_registry
from router_plugins.types import ChatRequest

HANG_S = 4.0
"""How long the slow store's first write_batch blocks its thread (unless released first)."""
CHATS = 200
CONCURRENCY = 20

REGISTRY = """
models:
  - {name: a, litellm_params: {model: openai/a}, input_cost_per_mtok: 1, output_cost_per_mtok: 1, quality: {default: 0.9}}
  - {name: b, litellm_params: {model: openai/b}, input_cost_per_mtok: 1, output_cost_per_mtok: 1, quality: {default: 0.8}}
router:
  classifier: {static_embedding: {enabled: false}}
"""


class HangingStore:
    """The first write_batch blocks (like a slow disk or a locked database) until released or HANG_S has passed."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.release = threading.Event()
        self.writing = threading.Event()
        self.rows: list[Record] = []

    def write_batch(self, records: Sequence[Record]) -> None:
        first = not self.writing.is_set()
        self.writing.set()
        if self.hang and first:
            self.release.wait(HANG_S)
        self.rows.extend(records)

    def decision_exists(self, request_id: str) -> bool:
        return False


class InstantForwarder:
    """An upstream that answers after one loop turn."""

    def cost(self, model: ModelEntry, usage: Usage) -> tuple[float | None, str | None]:
        return 0.001, "litellm"

    async def complete(self, model: ModelEntry, request: ChatRequest) -> tuple[dict[str, Any], Usage]:
        await asyncio.sleep(0)
        return {"model": model.name, "choices": []}, Usage(3, 4)

    async def open_stream(self, model: ModelEntry, request: ChatRequest) -> StreamHandle:
        raise AssertionError("not used")


def _request(i: int) -> ChatRequest:
    text = "Write a Python function that merges two sorted lists." if i % 2 else "hello there"
    return ChatRequest(f"req-{i}", "auto", ({"role": "user", "content": text},), preference="balanced")


async def _chats(store: HangingStore) -> tuple[float, float, Recorder]:
    """CHATS requests through the pipeline, CONCURRENCY at a time; returns (seconds, longest loop stall, recorder)."""
    runtime = build_runtime(parse_registry(REGISTRY))
    recorder = Recorder(store, batch_size=10, flush_interval_ms=1)  # type: ignore[arg-type]
    await recorder.start()
    pipeline = Pipeline(lambda: runtime, InstantForwarder(), recorder)  # type: ignore[arg-type]
    stall = 0.0
    done = False

    async def heartbeat() -> None:
        nonlocal stall
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            stall, last = max(stall, now - last), now

    beat = asyncio.create_task(heartbeat())
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with limit:
            assert isinstance(await pipeline.handle(_request(i)), Completed)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(CHATS)))
    elapsed = time.perf_counter() - started
    done = True
    await beat
    return elapsed, stall, recorder


def test_a_hanging_store_slows_neither_chats_nor_the_loop() -> None:
    async def scenario() -> None:
        fast_store = HangingStore(hang=False)
        fast, _, recorder = await _chats(fast_store)
        await recorder.stop()

        slow_store = HangingStore(hang=True)
        slow, stall, recorder = await _chats(slow_store)
        # The writer really was stuck in the store while the chats ran, and nothing had been stored yet.
        assert slow_store.writing.is_set() and not slow_store.rows
        slow_store.release.set()
        await recorder.stop()

        assert slow < HANG_S / 4, f"{CHATS} chats took {slow:.2f} s with a store hanging {HANG_S} s per write"
        assert slow < fast * 5 + 0.5, f"chats took {slow:.3f} s with a hanging store, {fast:.3f} s without"
        assert stall < HANG_S / 4, f"the event loop stalled {stall:.2f} s"
        # Everything accepted was written once the store came back: hanging delays records, never loses them.
        assert recorder.stats.lost == 0 and recorder.stats.dropped == 0
        assert len(slow_store.rows) == len(fast_store.rows) == recorder.stats.written
        assert sum(isinstance(r, DecisionRecord) for r in slow_store.rows) == CHATS
        assert sum(isinstance(r, PerformanceRecord) for r in slow_store.rows) == CHATS

    asyncio.run(scenario())


def test_record_stays_cheap_and_drops_when_a_hanging_store_fills_the_queue() -> None:
    async def scenario() -> None:
        store = HangingStore(hang=True)
        recorder = Recorder(store, queue_size=1000, batch_size=100, flush_interval_ms=1)  # type: ignore[arg-type]
        await recorder.start()
        template = _perf("warm")
        recorder.record(template)
        await asyncio.sleep(0.05)  # the writer has taken the first batch and is stuck in the store
        assert store.writing.is_set()

        records = [_perf(f"r{i}") for i in range(5000)]
        started = time.perf_counter()
        accepted = [recorder.record(r) for r in records]
        elapsed = time.perf_counter() - started

        # 5,000 calls against a stuck store return at once (a blocking call would wait out the hang)...
        assert elapsed < HANG_S / 20, f"5000 record() calls took {elapsed:.3f} s"
        # ...by refusing what does not fit rather than waiting for room.
        assert sum(accepted) == 1000 and recorder.stats.dropped == 4000
        assert accepted[:1000] == [True] * 1000
        store.release.set()
        await recorder.stop()
        assert recorder.stats.written == 1001 and recorder.stats.lost == 0

    asyncio.run(scenario())


def _perf(request_id: str) -> PerformanceRecord:
    return PerformanceRecord(
        request_id=request_id, created_at=time.time(), attempt=1, model="a", task="chat", outcome="success",
        latency_ms=1.0, ttft_ms=1.0, prompt_tokens=3, completion_tokens=4, cost_usd=0.001, cost_source="litellm",
    )  # fmt: skip
