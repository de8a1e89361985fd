from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np
import pytest

from router_plugins.embeddings import TransformerEmbedder, choose_device
from router_plugins.serving import EmbeddingServer, EmbeddingServerClosed, _prefer_sleeping_openmp_threads

T = TypeVar("T")
DIM = 8


@pytest.fixture(autouse=True)
def _keep_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """start() may set OMP_WAIT_POLICY; setenv here makes monkeypatch restore it after each test."""
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))


class FakeModelError(RuntimeError):
    pass


def vector(text: str) -> np.ndarray:
    """A unit vector that depends only on the text, so batched and lone calls must agree exactly."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeEmbedder:
    """Records every batch and the thread it ran on; can sleep (a costly model), block on a gate, or fail."""

    device = "fake"
    dimension = DIM

    def __init__(self, delay: float = 0.0, fail_on: str | None = None, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.gate = gate
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)  # blocks its thread, as a real model call does
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise FakeModelError(f"cannot embed {self.fail_on!r}")
        return np.stack([vector(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)


def serve(fake: FakeEmbedder, **options: float) -> EmbeddingServer:
    return EmbeddingServer(lambda: fake, **options)  # type: ignore[arg-type]


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(body(), 30)  # a bug must fail the test, not hang it

    return asyncio.run(main())


def caller_texts(i: int) -> list[str]:
    return [f"prompt {i}"] if i % 5 else [f"prompt {i}", f"prompt {i} again"]


def test_concurrent_results_equal_unbatched() -> None:
    fake = FakeEmbedder()
    server = serve(fake)

    async def body() -> list[np.ndarray]:
        try:
            return await asyncio.gather(*(server.embed(caller_texts(i)) for i in range(50)))
        finally:
            await server.close()

    results = run(body)
    alone = FakeEmbedder()
    for i, result in enumerate(results):
        expected = np.concatenate([alone.embed([t]) for t in caller_texts(i)])
        assert result.dtype == np.float32
        assert np.array_equal(result, expected)
        assert np.allclose(np.linalg.norm(result, axis=1), 1.0, atol=1e-6)


def test_concurrent_callers_are_batched_within_max_batch() -> None:
    fake = FakeEmbedder(delay=0.01)
    server = serve(fake, max_batch=8)

    async def body() -> None:
        try:
            await asyncio.gather(*(server.embed([f"prompt {i}"]) for i in range(50)))
            big = await server.embed([f"long request {i}" for i in range(20)])
            assert np.array_equal(big, np.stack([vector(f"long request {i}") for i in range(20)]))
        finally:
            await server.close()

    run(body)
    assert 1 <= max(len(call) for call in fake.calls) <= 8
    assert len(fake.calls) < 50 + 20
    stats = server.stats
    assert (stats.requests, stats.batches, stats.texts) == (51, len(fake.calls), 70)
    assert stats.mean_batch > 1
    assert stats.max_queue > 1


def test_lone_caller_is_not_held_back() -> None:
    server = serve(FakeEmbedder(), max_wait_ms=2)

    async def body() -> float:
        try:
            await server.start()
            started = time.perf_counter()
            await server.embed(["alone"])
            return time.perf_counter() - started
        finally:
            await server.close()

    assert run(body) < 0.5


def test_cache_answers_repeats_and_evicts_least_recently_used() -> None:
    fake = FakeEmbedder()
    server = serve(fake, cache_size=2)

    async def body() -> None:
        try:
            first = await server.embed(["a", "b", "a"])  # a duplicate within one request is embedded once
            assert fake.calls == [["a", "b"]]
            assert np.array_equal(first[0], first[2])
            again = await server.embed(["a"])
            assert len(fake.calls) == 1 and np.array_equal(again[0], first[0])
            again[0, 0] = 42.0  # a caller's array is its own: the cache is not changed through it
            assert np.array_equal(await server.embed(["a"]), first[:1])
            await server.embed(["c"])  # evicts b, the least recently used
            await server.embed(["a"])
            assert fake.calls == [["a", "b"], ["c"]]
            await server.embed(["b"])
            assert fake.calls == [["a", "b"], ["c"], ["b"]]
        finally:
            await server.close()

    run(body)
    assert server.stats.cache_hits == 3


def test_cache_size_zero_always_asks_the_model() -> None:
    fake = FakeEmbedder()
    server = serve(fake, cache_size=0)

    async def body() -> None:
        try:
            await server.embed(["a"])
            await server.embed(["a"])
        finally:
            await server.close()

    run(body)
    assert fake.calls == [["a"], ["a"]]


def test_model_error_reaches_the_batch_callers_and_serving_goes_on() -> None:
    fake = FakeEmbedder(fail_on="boom")
    server = serve(fake, max_wait_ms=50)

    async def body() -> None:
        try:
            await server.start()
            outcomes = await asyncio.gather(server.embed(["boom"]), server.embed(["fine"]), return_exceptions=True)
            assert fake.calls == [["boom", "fine"]]
            assert all(isinstance(o, FakeModelError) for o in outcomes)
            after = await server.embed(["fine", "next"])  # nothing from the failed batch was cached
            assert np.array_equal(after, np.stack([vector("fine"), vector("next")]))
            assert fake.calls[-1] == ["fine", "next"]
        finally:
            await server.close()

    run(body)


def test_wrong_shape_from_the_model_is_an_error_not_a_hang() -> None:
    class Short(FakeEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return super().embed(texts)[:-1]

    server = serve(Short())

    async def body() -> None:
        try:
            with pytest.raises(ValueError, match="shape"):
                await server.embed(["x", "y"])
        finally:
            await server.close()

    run(body)


def test_close_fails_pending_callers_instead_of_hanging() -> None:
    gate = threading.Event()
    fake = FakeEmbedder(gate=gate)
    server = serve(fake, max_batch=2, max_wait_ms=0)

    async def body() -> None:
        try:
            await server.start()
            callers = [asyncio.create_task(server.embed([f"t{i}"])) for i in range(5)]
            for _ in range(200):  # the first batch is now stuck in the model, the rest queue behind it
                if fake.calls:
                    break
                await asyncio.sleep(0.01)
            assert len(fake.calls) == 1
            await asyncio.wait_for(server.close(), 2)
            outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 2)
            assert all(isinstance(o, EmbeddingServerClosed) for o in outcomes)
            with pytest.raises(EmbeddingServerClosed):
                await server.embed(["later"])
            with pytest.raises(EmbeddingServerClosed):
                await server.start()
        finally:
            gate.set()

    run(body)


def test_cancelled_caller_does_not_disturb_the_others() -> None:
    gate = threading.Event()
    fake = FakeEmbedder(gate=gate)
    server = serve(fake, max_wait_ms=0)

    async def body() -> None:
        try:
            await server.start()
            blocker = asyncio.create_task(server.embed(["first"]))
            while not fake.calls:
                await asyncio.sleep(0.01)
            quitter = asyncio.create_task(server.embed(["quitter"]))
            stayer = asyncio.create_task(server.embed(["stayer"]))
            await asyncio.sleep(0.01)
            quitter.cancel()
            gate.set()
            assert np.array_equal((await stayer)[0], vector("stayer"))
            await blocker
            assert quitter.cancelled()
            assert ["quitter"] not in fake.calls and "quitter" not in fake.calls[-1]
        finally:
            gate.set()
            await server.close()

    run(body)


def test_start_loads_once_off_the_event_loop() -> None:
    fake = FakeEmbedder(delay=0.3)
    loads: list[str] = []

    def factory() -> FakeEmbedder:
        loads.append(threading.current_thread().name)
        time.sleep(0.2)  # a slow model load, blocking its thread
        return fake

    server = EmbeddingServer(factory)  # type: ignore[arg-type]

    async def body() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            assert server.device == "not loaded"
            await asyncio.gather(server.start(), server.start())
            await server.start()
            await server.embed(["slow"])
        finally:
            stop.set()
            await task
            await server.close()
        return ticks

    ticks = run(body)
    # 0.5 s of blocking work elsewhere: a blocked loop would tick about once; a free one about 50 times.
    assert ticks >= 10
    assert len(loads) == 1
    assert server.device == "fake"
    assert {*loads, *fake.threads} == {loads[0]} and loads[0].startswith("autoroute-embed")


def test_a_failed_load_is_retried_by_the_next_start() -> None:
    attempts: list[int] = []

    def factory() -> FakeEmbedder:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("model files missing")
        return FakeEmbedder()

    server = EmbeddingServer(factory)  # type: ignore[arg-type]

    async def body() -> None:
        try:
            with pytest.raises(OSError, match="missing"):
                await server.start()
            assert (await server.embed(["x"])).shape == (1, DIM)
        finally:
            await server.close()

    run(body)
    assert len(attempts) == 2


def test_empty_request_and_single_string() -> None:
    server = serve(FakeEmbedder())

    async def body() -> None:
        try:
            assert (await server.embed([])).shape == (0, DIM)
            with pytest.raises(TypeError):
                await server.embed("not a list")
        finally:
            await server.close()

    run(body)


def test_choose_device_prefers_cuda_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("AUTOROUTE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device() == "cuda"
    assert choose_device("cpu") == "cpu"
    monkeypatch.setenv("AUTOROUTE_DEVICE", "cpu")
    assert choose_device() == "cpu"
    monkeypatch.delenv("AUTOROUTE_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device() == "cpu"


def test_openmp_threads_sleep_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    _prefer_sleeping_openmp_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # an operator's choice stands
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    _prefer_sleeping_openmp_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_real_model_batched_equals_unbatched() -> None:
    embedder = TransformerEmbedder(device="cpu")
    texts = [
        "Write a Python function that reverses a string.",
        "What is the capital of Australia?",
        "Solve 3x + 5 = 20 for x.",
        "Translate 'good morning' into French.",
        "Summarize the plot of Hamlet in two sentences.",
        "Why does my for loop never end?",
        "hi",
        "Plan a three-day trip to Kyoto on a small budget, with one day for temples and one for food markets.",
    ]
    server = EmbeddingServer(lambda: embedder, max_wait_ms=20)

    async def body() -> list[np.ndarray]:
        try:
            return await asyncio.gather(*(server.embed([t]) for t in texts))
        finally:
            await server.close()

    batched = np.concatenate(run(body))
    unbatched = np.concatenate([embedder.embed([t]) for t in texts])
    assert server.stats.batches < len(texts)
    assert batched.shape == (len(texts), TransformerEmbedder.dimension)
    assert np.allclose(batched, unbatched, atol=1e-5)
    assert server.device == "cpu"
