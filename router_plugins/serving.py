"""The router model server: one embedding model per process, shared by concurrent callers through micro-batching.

Each caller's texts go on a queue; a batching task takes the first item, waits up to `max_wait_ms` for more (up to
`max_batch` texts), and runs one `embed` call for all of them on a single dedicated worker thread. One batched call
uses the CPU cores better than many small ones, and torch is not happy with concurrent calls into one model. An LRU
cache answers texts seen recently (retries, and the same prompt classified then routed) without the model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np

from .embeddings import TransformerEmbedder

log = logging.getLogger(__name__)


class Embedder(Protocol):
    device: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class EmbeddingServerClosed(RuntimeError):
    """The server was closed before (or while) it could answer."""


@dataclass(frozen=True, slots=True)
class ServerStats:
    requests: int
    """`embed` calls."""
    batches: int
    """Calls into the model."""
    texts: int
    """Texts the model embedded (cache hits and duplicates within a batch excluded)."""
    mean_batch: float
    cache_hits: int
    """Texts answered from the cache."""
    max_queue: int
    """The most requests ever waiting in the queue at once."""


@dataclass(slots=True)
class _Pending:
    texts: list[str]
    future: asyncio.Future[np.ndarray] = field(repr=False)


class EmbeddingServer:
    def __init__(
        self,
        embedder_factory: Callable[[], Embedder] = TransformerEmbedder,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        cache_size: int = 4096,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._factory = embedder_factory
        self._max_batch = max_batch
        self._max_wait = max(0.0, max_wait_ms) / 1000
        self._cache_size = max(0, cache_size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        # One thread for loading and for every call: the model is only ever touched from that thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autoroute-embed")
        self._embedder: Embedder | None = None
        self._loading: asyncio.Future[Embedder] | None = None
        # A deque, not an asyncio.Queue: the batcher must peek (an item too big for this batch starts the next one),
        # and taking items without awaiting means a cancelled wait can never lose one.
        self._waiting: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._inflight: list[_Pending] = []
        self._closed = False
        self._dimension = 0
        self._requests = self._batches = self._texts = self._cache_hits = self._max_queue = 0

    @property
    def device(self) -> str:
        return self._embedder.device if self._embedder is not None else "not loaded"

    @property
    def busy(self) -> bool:
        """True while other texts are waiting or being embedded: a caller with a tight budget should not queue."""
        return bool(self._inflight or self._waiting)

    @property
    def stats(self) -> ServerStats:
        mean = self._texts / self._batches if self._batches else 0.0
        return ServerStats(self._requests, self._batches, self._texts, mean, self._cache_hits, self._max_queue)

    async def start(self) -> None:
        """Load the model on the worker thread; concurrent and repeated calls share the one load."""
        if self._closed:
            raise EmbeddingServerClosed("the embedding server is closed")
        if self._batcher is not None:
            return
        if self._loading is None:
            _prefer_sleeping_openmp_threads()
            self._loading = asyncio.get_running_loop().run_in_executor(self._executor, self._factory)
        try:
            # Shielded: a caller that gives up waiting must not cancel the load others are waiting for.
            embedder = await asyncio.shield(self._loading)
        except Exception:
            self._loading = None  # the next start tries again
            raise
        if self._closed:
            raise EmbeddingServerClosed("the embedding server was closed while loading")
        if self._batcher is None:
            self._embedder = embedder
            self._dimension = int(getattr(embedder, "dimension", 0))
            self._arrived = asyncio.Event()
            self._batcher = asyncio.create_task(self._serve_forever(), name="autoroute-embedding-batcher")
            log.info("embedding server ready on %s (max batch %d, wait %.1f ms)", embedder.device,
                     self._max_batch, self._max_wait * 1000)  # fmt: skip

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit row per text, in order; starts the server if no one has."""
        if self._closed:
            raise EmbeddingServerClosed("the embedding server is closed")
        if self._batcher is None:
            await self.start()
        assert self._arrived is not None
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        self._requests += 1
        texts = list(texts)
        rows: list[np.ndarray | None] = [self._cached(t) for t in texts]
        missing = list(dict.fromkeys(t for t, row in zip(texts, rows) if row is None))
        if missing:
            # A request larger than a batch is split, so no model call ever exceeds max_batch texts.
            chunks = [missing[i : i + self._max_batch] for i in range(0, len(missing), self._max_batch)]
            futures = []
            for chunk in chunks:
                item = _Pending(chunk, asyncio.get_running_loop().create_future())
                self._waiting.append(item)
                futures.append(item.future)
            self._arrived.set()
            self._max_queue = max(self._max_queue, len(self._waiting))
            # return_exceptions: every chunk's outcome is retrieved, so a failure is not logged as unhandled twice.
            results = await asyncio.gather(*futures, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            embedded = cast(list[np.ndarray], results)  # no exception is left among them
            found = {t: row for chunk, vectors in zip(chunks, embedded) for t, row in zip(chunk, vectors)}
            rows = [row if row is not None else found[t] for t, row in zip(texts, rows)]
        if not rows:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return np.stack([row for row in rows if row is not None])

    async def close(self) -> None:
        """Stop batching and fail every caller still waiting; a model call already running finishes unobserved."""
        if self._closed:
            return
        self._closed = True
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
        pending = [*self._inflight, *self._waiting]
        self._inflight, self._waiting = [], deque()
        for item in pending:
            if not item.future.done():
                item.future.set_exception(EmbeddingServerClosed("the embedding server closed before answering"))
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("embedding server closed: %s", self.stats)

    def _cached(self, text: str) -> np.ndarray | None:
        row = self._cache.get(text)
        if row is not None:
            self._cache.move_to_end(text)
            self._cache_hits += 1
        return row

    def _remember(self, text: str, row: np.ndarray) -> None:
        if not self._cache_size:
            return
        # A copy, so the cache does not keep whole batch arrays alive; read-only, since every hit shares it.
        row = row.copy()
        row.flags.writeable = False
        self._cache[text] = row
        self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _serve_forever(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._run_batch(batch)
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its callers, never the batcher
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            # Not in a `finally`: when close() cancels this task, it still needs `_inflight` to fail those callers.
            self._inflight = []

    async def _collect(self) -> list[_Pending]:
        assert self._arrived is not None
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        # Items move from the deque to `_inflight` with no await in between, so close() always finds every caller.
        batch = self._inflight = [self._waiting.popleft()]
        size = len(batch[0].texts)
        while size < self._max_batch:
            if self._waiting:
                if size + len(self._waiting[0].texts) > self._max_batch:
                    break  # it starts the next batch
                item = self._waiting.popleft()
                batch.append(item)
                size += len(item.texts)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.done()]  # callers that gave up are skipped
        if not live:
            return
        texts = list(dict.fromkeys(t for item in live for t in item.texts))
        self._batches += 1
        self._texts += len(texts)
        vectors = await asyncio.get_running_loop().run_in_executor(self._executor, self._embed_batch, texts)
        self._dimension = vectors.shape[1]
        index = {t: i for i, t in enumerate(texts)}
        for text, row in zip(texts, vectors):
            self._remember(text, row)
        for item in live:
            if not item.future.done():
                item.future.set_result(vectors[[index[t] for t in item.texts]])

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """Runs on the worker thread."""
        assert self._embedder is not None
        vectors = np.asarray(self._embedder.embed(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"the embedder returned shape {vectors.shape} for {len(texts)} texts")
        return vectors


def _prefer_sleeping_openmp_threads() -> None:
    """Idle OpenMP threads should sleep, not spin: torch's spin in this process starves the event loop.

    With the default (active) policy and the cores also busy elsewhere, one MiniLM call took ~500 ms instead of ~13 ms
    (bench/bench_routing.py on 2 shared cores). OpenMP reads the setting once, when torch is first imported.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    if "torch" in sys.modules:
        log.warning("torch was imported before OMP_WAIT_POLICY=PASSIVE could be set; set it in the environment")
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


__all__ = ["Embedder", "EmbeddingServer", "EmbeddingServerClosed", "ServerStats"]
