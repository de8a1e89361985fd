"""One consistent snapshot of everything built from the config, swapped whole when the config changes."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from router_plugins.assembly import Parts, RoutingEngine, assemble
from router_plugins.classify import TaskClassifier
from router_plugins.registry import ModelEntry, Registry, load_registry
from router_plugins.routers import RouterTable
from router_plugins.schema import ConfigError

log = logging.getLogger(__name__)

RELOAD_INTERVAL_S = 2.0


@dataclass(frozen=True)
class Runtime:
    """The routing engine for the current config and learned state, and the client keys it accepts."""

    source: Registry
    """The registry as loaded (prices resolved); the engine's has the tuned thresholds overlaid."""
    engine: RoutingEngine
    api_keys: tuple[bytes, ...] = ()
    """Accepted client keys; empty means the gateway asks for none."""
    loaded_at: float = field(default_factory=time.time)

    @property
    def registry(self) -> Registry:
        return self.engine.registry

    @property
    def classifier(self) -> TaskClassifier:
        return self.engine.classifier

    @property
    def available(self) -> tuple[ModelEntry, ...]:
        return self.engine.available

    @property
    def available_names(self) -> frozenset[str]:
        return self.engine.available_names


def build_runtime(
    registry: Registry,
    has_credentials: Callable[[ModelEntry], bool] = lambda model: True,
    artifacts: Path | None = None,
    parts: Parts = Parts(),
    table: RouterTable | None = None,
) -> Runtime:
    """The engine (`router_plugins.assembly`) and the client keys; raises ConfigError for an unset key variable."""
    return Runtime(registry, assemble(registry, artifacts, parts, has_credentials, table), client_keys(registry))


def client_keys(registry: Registry) -> tuple[bytes, ...]:
    keys = []
    for name in registry.auth.api_key_envs:
        value = os.environ.get(name, "")
        if not value:
            # Fail closed: a listed but unset key must not silently open the gateway to everyone.
            raise ConfigError(f"auth.api_key_envs names {name}, but that environment variable is not set")
        keys.append(value.encode())
    return tuple(keys)


class RuntimeHolder:
    """Holds the current Runtime and reloads the config file, or the learned state, when it changes.

    A bad edit keeps the last good runtime serving and records why (`last_error`), so one typo in the
    YAML never takes the gateway down. Rebuilds run one at a time (`lock`); from the event loop they go through
    `refresh()` and `watch()`, which run them in a worker thread.
    """

    def __init__(
        self,
        config_path: Path,
        runtime: Runtime,
        rebuild: Callable[[Registry], Runtime],
    ) -> None:
        self.config_path = config_path
        self._runtime = runtime
        self._rebuild = rebuild
        self._mtime = _mtime(config_path)
        self.artifact_pointers: tuple[Path, ...] = ()
        """Pointer files of learned state (router artifact, tuned thresholds): a change is swapped in while serving."""
        self._artifact_mtime: tuple[float | None, ...] | None = None
        self.last_error: str | None = None
        self.auth_error: str | None = None
        """Set when an edit that changes the client keys could not be applied: the API refuses every call (503) until
        a reload succeeds, rather than serve with the keys the operator meant to replace (or with none)."""
        self.reloads = 0
        self.lock = threading.RLock()

    @property
    def current(self) -> Runtime:
        return self._runtime

    def watch_artifacts(self, pointers: tuple[Path, ...]) -> None:
        """Swap in a new runtime when one of these files changes (the current runtime was built from them)."""
        self.artifact_pointers = pointers
        self._artifact_mtime = tuple(_mtime(p) for p in pointers)

    def check_artifact(self) -> bool:
        if not self.artifact_pointers:
            return False
        with self.lock:
            mtime = tuple(_mtime(p) for p in self.artifact_pointers)
            if mtime == self._artifact_mtime:
                return False
            self._artifact_mtime = mtime
            try:
                self.rebuild_current()
            except Exception as exc:  # noqa: BLE001 - a bad artifact must not stop the serving runtime
                self.last_error = f"learned state not loaded: {exc}"
                log.error("%s", self.last_error)
                return False
        log.info("learned state swapped in (%s)", ", ".join(str(p) for p in self.artifact_pointers))
        return True

    def check_reload(self) -> bool:
        """Reload when the file changed; returns True when a new runtime was swapped in."""
        with self.lock:
            mtime = _mtime(self.config_path)
            if mtime == self._mtime:
                return False
            self._mtime = mtime
            try:
                registry = load_registry(self.config_path)
                runtime = self._rebuild(registry)
            except Exception as exc:  # noqa: BLE001 - whatever a bad edit breaks, the last good config keeps serving
                self.last_error = str(exc)
                wanted = _wanted_key_variables(self.config_path)
                if wanted and wanted != self._runtime.source.auth.api_key_envs:
                    self.auth_error = (
                        f"the config's new auth.api_key_envs ({', '.join(wanted)}) could not be applied: {exc}"
                    )
                    log.error("%s; every API call is refused until the config loads", self.auth_error)
                else:
                    log.error("config %s not reloaded, still serving the last good one: %s", self.config_path, exc)
                return False
            self._runtime = runtime
            self.last_error = self.auth_error = None
            self.reloads += 1
        log.info("config %s reloaded (registry %s)", self.config_path, registry.version)
        return True

    def rebuild_current(self) -> None:
        """Rebuild from the current registry, e.g. when a shared part (the embedding table) became available."""
        with self.lock:
            self._runtime = self._rebuild(self._runtime.source)

    async def refresh(self) -> None:
        """`rebuild_current` in a worker thread: the event loop never waits for a rebuild."""
        await asyncio.to_thread(self.rebuild_current)

    async def watch(self, interval_s: float = RELOAD_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.check_reload)
                await asyncio.to_thread(self.check_artifact)
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("config reload failed")


def _wanted_key_variables(path: Path) -> tuple[str, ...]:
    """The client-key variables a config file asks for, read leniently: the file may fail full validation. An empty
    tuple when it asks for none or cannot be read at all (then nothing says the edit meant to change auth)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        names = data["auth"]["api_key_envs"]
    except Exception:  # noqa: BLE001 - any shape that does not say which keys it wants asks for none
        return ()
    if not isinstance(names, list) or not names:
        return ()
    return tuple(str(name) for name in names)


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
