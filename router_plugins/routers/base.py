"""The router contract and the name -> factory table that built-in and third-party routers share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..outcomes import OutcomeSet
from ..registry import ModelEntry, Registry
from ..types import ChatRequest, Classification, RouteDecision

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "autoroute.routers"


class Router(Protocol):
    """Picks one backend for one request. Returns None when it cannot decide (the next router answers).

    Built-in routers predict quality, cost and latency per candidate (`estimate`) and leave the decision to the one
    shared ranking (`ranking.decide`); a plugin may do the same or decide itself. A router that cannot decide at all
    (e.g. no trained artifact yet) may say why in an optional `status` attribute.
    """

    name: str
    version: str

    def route(
        self, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> RouteDecision | None: ...


@dataclass(frozen=True)
class PromptBatch:
    """What a trainable router reads about prompts: text, task label, and (when computed) embeddings."""

    texts: Sequence[str]
    tasks: Sequence[str | None]
    embeddings: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Prediction:
    """Per prompt and model: expected quality in [0, 1] and expected cost in USD (NaN: unknown)."""

    models: tuple[str, ...]
    quality: np.ndarray
    cost: np.ndarray


@runtime_checkable
class TrainableRouter(Router, Protocol):
    """A router that learns from routing outcomes and predicts quality and cost for every model."""

    def fit(self, data: OutcomeSet) -> None: ...

    def predict(self, prompts: PromptBatch) -> Prediction: ...


@dataclass(frozen=True)
class RouterContext:
    """Shared services a router may use; none of them are required."""

    embed: Callable[[Sequence[str]], np.ndarray] | None = None
    """Unit-length sentence embeddings for texts (the transformer embedder, usually cached or batched)."""
    static_embed: Callable[[Sequence[str]], np.ndarray] | None = None
    """Unit-length vectors from the distilled static table: cheap enough for the request path."""
    seed: int = 0
    winrate: Callable[[], object] | None = None
    """The current win-rate state (a `WinRateState`), published by the gateway's background aggregator."""
    artifacts: Path | None = None
    """The data directory's artifacts: trainable routers load their current version from here."""


RouterFactory = Callable[[Registry, RouterContext], Router]


class DuplicateRouterError(ValueError):
    pass


class RouterTable:
    """Router factories by name. Built-ins register exactly as plugins do; a name can be taken only once."""

    def __init__(self) -> None:
        self._factories: dict[str, RouterFactory] = {}

    def register(self, name: str, factory: RouterFactory) -> None:
        if name in self._factories:
            raise DuplicateRouterError(f"a router named {name!r} is already registered")
        self._factories[name] = factory

    def unregister(self, name: str) -> None:
        self._factories.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._factories))

    def create(self, name: str, registry: Registry, context: RouterContext | None = None) -> Router:
        try:
            factory = self._factories[name]
        except KeyError:
            raise KeyError(f"no router named {name!r}; known: {', '.join(self.names())}") from None
        return factory(registry, context or RouterContext())

    def load_entry_points(self) -> None:
        """Register routers that installed packages declare (entry point group `autoroute.routers`).

        Only installed packages can add routers: a dotted path from a config file or a request is never imported.
        """
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            self.register(entry_point.name, entry_point.load())
            log.info("registered router plugin %s from %s", entry_point.name, entry_point.value)
