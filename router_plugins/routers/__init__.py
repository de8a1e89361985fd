"""Routers: one small class per strategy, all behind the same `Router` protocol."""

from __future__ import annotations

from .base import (
    DuplicateRouterError,
    Prediction,
    PromptBatch,
    Router,
    RouterContext,
    RouterFactory,
    RouterTable,
    TrainableRouter,
)
from .learned import LearnedRouter
from .predictive import BASELINES, PredictiveRouter
from .static_rules import StaticRulesRouter
from .winrate import WinRateRouter, WinRateState

__all__ = [
    "DuplicateRouterError",
    "LearnedRouter",
    "Prediction",
    "PredictiveRouter",
    "PromptBatch",
    "Router",
    "RouterContext",
    "RouterFactory",
    "RouterTable",
    "StaticRulesRouter",
    "TrainableRouter",
    "WinRateRouter",
    "WinRateState",
    "default_table",
]


def default_table(with_plugins: bool = True) -> RouterTable:
    """A table holding the built-in routers and, unless told otherwise, the installed plugins."""
    table = RouterTable()
    table.register(StaticRulesRouter.name, StaticRulesRouter)
    for router in BASELINES:
        table.register(router.name, router)
    table.register(LearnedRouter.name, LearnedRouter.from_artifacts)
    table.register(WinRateRouter.name, WinRateRouter)
    if with_plugins:
        table.load_entry_points()
    return table
