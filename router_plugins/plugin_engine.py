"""The routing engine of a host without a gateway (the LiteLLM plugin): built by the one assembly from a config and
its data directory, and rebuilt off the request path when either changes.

It does for the plugin what `proxy/runtime.py`'s `RuntimeHolder` does for `autoroute serve`: a changed config, a
new learned-router version (its pointer `learned-current.json`), tuned thresholds or a refitted text model are swapped
in within RELOAD_INTERVAL_S; a config edit that does not load keeps the last good engine and `last_error` says why.
The win rates are the snapshot the aggregator publishes (`winrate-current.json`), read again when it changes. The
data directory is fixed at the start: a config edit that moves it takes a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .assembly import Parts, RoutingEngine, assemble
from .classify import StaticEmbedder
from .classify.assembly import ClassifierSources
from .datadir import DataDir
from .registry import Registry, load_registry
from .routers.learned import POINTER_FILE as LEARNED_POINTER
from .routers.winrate import WinRateState, load_state
from .thresholds import POINTER_FILE as THRESHOLDS_POINTER

log = logging.getLogger(__name__)

CONFIG_ENV = "AUTOROUTE_CONFIG"
"""The environment variable naming the registry YAML (default `config.yaml`)."""
RELOAD_INTERVAL_S = 2.0
WINRATE_SNAPSHOT = "winrate-current.json"
"""Written by the aggregator (`proxy/learning.py`) into the data directory's artifacts."""

Labels = Callable[[], Sequence[tuple[str, str]]]
"""(prompt text, task) pairs named by feedback, newest first: the classifier's corrections."""


class EngineHolder:
    """The current `RoutingEngine` for a config and its data directory; `check()` swaps in a rebuilt one."""

    def __init__(
        self,
        config: str | Path | None = None,
        data_dir: str | Path | None = None,
        *,
        labels: Labels | None = None,
        prepare: Callable[[Registry], Registry] | None = None,
    ) -> None:
        """`labels`: the corrections' source (a host with a store); `prepare`: the registry as served (e.g. prices
        resolved from LiteLLM's map)."""
        self.config_path = Path(config or os.environ.get(CONFIG_ENV, "config.yaml"))
        self._labels = labels or tuple
        self._prepare = prepare or (lambda registry: registry)
        self.source = load_registry(self.config_path)
        self.data = DataDir.resolve(self.source, data_dir)
        self.sources = ClassifierSources(self.data.artifacts)
        self.embedder: StaticEmbedder | None = None
        if self.source.router.classifier.static_embedding.enabled:
            # Distilled at the first start (~30 s); `autoroute build-embeddings` does it beforehand.
            self.embedder = StaticEmbedder.load_or_build(self.data)
        self._winrate_file = self.data.path(WINRATE_SNAPSHOT)
        self._winrate_state: tuple[object, WinRateState] = (None, WinRateState())
        self._lock = threading.Lock()
        self._stamps = self._read_stamps()
        self.engine: RoutingEngine = self._build(self.source)
        self.last_error: str | None = None
        self.swaps = 0

    @property
    def registry(self) -> Registry:
        """As served: the engine's (tuned thresholds overlaid)."""
        return self.engine.registry

    def watched(self) -> tuple[Path, ...]:
        """The files whose change rebuilds the engine: the config, and the pointers of learned state."""
        return (self.config_path, self.data.path(LEARNED_POINTER), self.data.path(THRESHOLDS_POINTER),
                *self.sources.pointers())  # fmt: skip

    def check(self) -> bool:
        """Rebuild when a watched file changed; True when a new engine was swapped in. Blocking: run it in a thread."""
        with self._lock:
            stamps = self._read_stamps()
            if stamps == self._stamps:
                return False
            config_changed = stamps[0] != self._stamps[0]
            self._stamps = stamps
            try:
                source = load_registry(self.config_path) if config_changed else self.source
                engine = self._build(source)
            except Exception as exc:  # noqa: BLE001 - whatever a bad edit breaks, the last good engine keeps serving
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("autoroute kept its last good routing: %s", self.last_error)
                return False
            self.source, self.engine, self.last_error = source, engine, None
            self.swaps += 1
        log.info("autoroute routing rebuilt (registry %s)", source.version)
        return True

    def rebuild(self) -> None:
        """Rebuild from the current config, e.g. when the feedback labels changed. Blocking: run it in a thread."""
        with self._lock:
            self.engine = self._build(self.source)

    async def watch(self, interval_s: float = RELOAD_INTERVAL_S) -> None:
        """`check()` every `interval_s` in a worker thread, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("autoroute could not check its config and learned state")

    def _build(self, source: Registry) -> RoutingEngine:
        registry = self._prepare(source)
        corrections = self.sources.corrections(self._labels(), registry)
        parts = Parts(self.embedder, self.sources.text_model(), corrections=corrections, winrate=self._winrate)
        return assemble(registry, self.data.artifacts, parts)

    def _winrate(self) -> WinRateState:
        stamp = _stamp(self._winrate_file)
        if stamp != self._winrate_state[0]:
            self._winrate_state = (stamp, load_state(self._winrate_file) or WinRateState())
        return self._winrate_state[1]

    def _read_stamps(self) -> tuple[object, ...]:
        return tuple(_stamp(path) for path in self.watched())


def _stamp(path: Path) -> object:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


__all__ = ["CONFIG_ENV", "RELOAD_INTERVAL_S", "WINRATE_SNAPSHOT", "EngineHolder"]
