"""One consistent snapshot of everything built from the config, swapped whole when the config changes."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from router_plugins.classify import CorrectionsLayer, StaticEmbedder, TaskClassifier, TextModel, build_classifier
from router_plugins.classify.model import TaskModel
from router_plugins.registry import ModelEntry, Registry, load_registry
from router_plugins.routers import (
    LearnedRouter,
    Router,
    RouterContext,
    RouterTable,
    WinRateRouter,
    WinRateState,
    default_table,
)
from router_plugins.routers.learned import current_artifact
from router_plugins.schema import ConfigError

from .tuning import apply_thresholds, load_tuned_thresholds

log = logging.getLogger(__name__)

RELOAD_INTERVAL_S = 2.0


@dataclass(frozen=True)
class Runtime:
    registry: Registry
    classifier: TaskClassifier
    routers: tuple[Router, ...]
    """The configured chain (`learning.chain`), asked in order for `auto` requests; the first that decides wins."""
    control: Router
    """Static rules: the A/B test's control arm, and the last router of every chain."""
    explorer: WinRateRouter | None
    """The win-rate router when the chain has one: it explores around whichever router decided."""
    available: tuple[ModelEntry, ...]
    """Enabled models whose credentials are present: the candidates for `auto`."""
    available_names: frozenset[str]
    api_keys: tuple[bytes, ...] = ()
    """Accepted client keys; empty means the gateway asks for none."""
    routing_note: str = ""
    """Why the preferred (learned) router is not in the chain, added to every decision's reason."""
    loaded_at: float = field(default_factory=time.time)


def build_runtime(
    registry: Registry,
    embedder: StaticEmbedder | None,
    has_credentials: Callable[[ModelEntry], bool],
    table: RouterTable | None = None,
    artifacts: Path | None = None,
    task_model: TaskModel | None = None,
    winrate: Callable[[], WinRateState] | None = None,
    text_model: TextModel | None = None,
    corrections: CorrectionsLayer | None = None,
) -> Runtime:
    table = table or default_table()
    if artifacts is not None:
        # Thresholds written by `autoroute tune` (versioned learned state) override the YAML's.
        registry = apply_thresholds(registry, load_tuned_thresholds(artifacts) or {})
    available = tuple(m for m in registry.models if m.enabled and has_credentials(m))
    for model in registry.models:
        if model.enabled and model not in available:
            log.warning(
                "model %s is left out of routing: set %s to use it", model.name, model.litellm_params.api_key_env
            )
    context = RouterContext(static_embed=embedder.embed if embedder else None, winrate=winrate)
    control = table.create("static-rules", registry, context)
    routers: list[Router] = []
    note = ""
    for name in registry.learning.chain:
        if name == "static-rules":
            routers.append(control)
        elif name == "learned":
            artifact = current_artifact(artifacts) if artifacts else None
            if artifact is None:
                note = "no learned-router artifact yet"
            elif embedder is None:
                note = "the learned router waits for the static embedding table"
            else:
                learned = LearnedRouter(registry, context)
                learned.load(artifact)
                routers.append(learned)
        else:
            routers.append(table.create(name, registry, context))
    explorer = next((r for r in routers if isinstance(r, WinRateRouter)), None)
    return Runtime(
        registry,
        build_classifier(registry, embedder, task_model, text_model, corrections),
        tuple(routers),
        control,
        explorer,
        available,
        frozenset(m.name for m in available),
        _client_keys(registry),
        note,
    )


def _client_keys(registry: Registry) -> tuple[bytes, ...]:
    keys = []
    for name in registry.auth.api_key_envs:
        value = os.environ.get(name, "")
        if not value:
            # Fail closed: a listed but unset key must not silently open the gateway to everyone.
            raise ConfigError(f"auth.api_key_envs names {name}, but that environment variable is not set")
        keys.append(value.encode())
    return tuple(keys)


class RuntimeHolder:
    """Holds the current Runtime and reloads the config file when it changes.

    A bad edit keeps the last good runtime serving and records why (`last_error`), so one typo in the
    YAML never takes the gateway down.
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
        self.reloads = 0

    @property
    def current(self) -> Runtime:
        return self._runtime

    def check_artifact(self) -> bool:
        if not self.artifact_pointers:
            return False
        mtime = tuple(_mtime(p) for p in self.artifact_pointers)
        if mtime == self._artifact_mtime:
            return False
        self._artifact_mtime = mtime
        try:
            self.rebuild_current()
        except Exception as exc:  # noqa: BLE001 - a bad artifact must not stop the serving runtime
            self.last_error = f"learned-router artifact not loaded: {exc}"
            log.error("%s", self.last_error)
            return False
        log.info("learned state swapped in (%s)", ", ".join(str(p) for p in self.artifact_pointers))
        return True

    def check_reload(self) -> bool:
        """Reload when the file changed; returns True when a new runtime was swapped in."""
        mtime = _mtime(self.config_path)
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            registry = load_registry(self.config_path)
            runtime = self._rebuild(registry)
        except Exception as exc:  # noqa: BLE001 - whatever a bad edit breaks, the last good config keeps serving
            self.last_error = str(exc)
            log.error("config %s not reloaded, still serving the last good one: %s", self.config_path, exc)
            return False
        self._runtime = runtime
        self.last_error = None
        self.reloads += 1
        log.info("config %s reloaded (registry %s)", self.config_path, registry.version)
        return True

    def rebuild_current(self) -> None:
        """Rebuild from the current registry, e.g. when a shared part (the embedding table) became available."""
        self._runtime = self._rebuild(self._runtime.registry)

    async def watch(self, interval_s: float = RELOAD_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.check_reload()
                self.check_artifact()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("config reload failed")


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
