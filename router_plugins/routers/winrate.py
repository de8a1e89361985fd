"""The win-rate router: per (task, model) Beta posteriors over success, learned from outcomes while serving.

Evidence: every explicit feedback score (a fractional success) and every failed call (a failure) of a model on a
task. Recent evidence counts more: an observation's weight halves with every `half_life_events` newer observations
of the same task and model, and anything older than `window_s` is dropped, so a backend that gets worse loses its
traffic within a few hundred events. The prior is the registry's prior quality pooled with the model's record on
all tasks, worth `prior_strength` observations. Latency and cost are tracked beside success.

Choice: the static rules' utility (rules, constraints, specialist and priority bonuses, preference weights) with a
cautious quality (posterior mean less `caution` standard deviations: a model proves itself before it takes traffic).
With probability `exploration` the choice is instead one Thompson sample (posterior
draws in place of the means); the probability of the chosen model under this mixture is the decision's propensity,
which off-policy evaluation needs. State comes from `aggregate()`, run in the background by the gateway.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from ..registry import ModelEntry, Registry, WinRateSettings
from ..types import ChatRequest, Classification, RouteDecision
from .base import RouterContext
from .static_rules import StaticRulesRouter

ANY_TASK = "*"
TASK_SHIFT_CAP = 0.2
"""The most a task's evidence moves the registry's priors of the models (up or down)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One model's outcome on one task: `quality` in [0, 1] (None: no verdict, only latency and cost)."""

    created_at: float
    task: str
    model: str
    quality: float | None
    latency_ms: float | None = None
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Cell:
    """Recency-weighted evidence for one (task, model)."""

    successes: float = 0.0
    failures: float = 0.0
    observations: int = 0
    latency_ms: float | None = None
    cost_usd: float | None = None

    @property
    def weight(self) -> float:
        return self.successes + self.failures


@dataclass(frozen=True)
class WinRateState:
    """A snapshot of the evidence, keyed by (task, model); (ANY_TASK, model) pools a model's tasks."""

    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    version: str = "priors"
    computed_at: float = 0.0

    def cell(self, task: str, model: str) -> Cell:
        return self.cells.get((task, model)) or Cell()

    def posterior(self, task: str, model: ModelEntry, strength: float, shift: float = 0.0) -> tuple[float, float]:
        """Beta(α, β): the prior (registry prior, moved by `shift`, pooled with the model's other tasks) plus this
        task's evidence."""
        pooled = self.cell(ANY_TASK, model.name)
        base = min(max(model.prior_quality(task) + shift, 0.01), 0.99)
        prior = (strength * base + pooled.successes) / (strength + pooled.weight)
        own = self.cell(task, model.name)
        return strength * prior + own.successes, strength * (1 - prior) + own.failures

    def task_shift(self, task: str, models: Sequence[ModelEntry], strength: float) -> float:
        """How far the registry's priors are off on this task, judged by every model's evidence on it (empirical
        Bayes): a model not tried yet starts from its prior moved by this, not from an optimistic registry default."""
        excess, weight = 0.0, 0.0
        for model in models:
            cell = self.cells.get((task, model.name))
            if cell is not None and cell.weight:
                excess += cell.successes - model.prior_quality(task) * cell.weight
                weight += cell.weight
        shift = excess / (strength + weight)
        # One model failing alone must not drag every other model down with it: the shift is bounded.
        return max(-TASK_SHIFT_CAP, min(TASK_SHIFT_CAP, shift))

    def to_json(self) -> str:
        return json.dumps({
            "version": self.version, "computed_at": self.computed_at,
            "cells": [{"task": t, "model": m, "successes": round(c.successes, 4), "failures": round(c.failures, 4),
                       "observations": c.observations, "latency_ms": c.latency_ms, "cost_usd": c.cost_usd}
                      for (t, m), c in sorted(self.cells.items())],
        }, indent=1)  # fmt: skip


def load_state(path: Path) -> WinRateState | None:
    """A state written by `WinRateState.to_json` (the gateway's `winrate-current.json`); None when the file is missing
    or cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cells = {
            (c["task"], c["model"]): Cell(float(c["successes"]), float(c["failures"]), int(c["observations"]),
                                          c.get("latency_ms"), c.get("cost_usd"))
            for c in data["cells"]
        }  # fmt: skip
        return WinRateState(cells, str(data["version"]), float(data["computed_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def aggregate(observations: Iterable[Observation], settings: WinRateSettings, now: float | None = None) -> WinRateState:
    """Recency-weighted evidence per (task, model) and per model over all tasks, from any order of observations."""
    now = time.time() if now is None else now
    rows = sorted((o for o in observations if now - o.created_at <= settings.window_s), key=lambda o: -o.created_at)
    decay = math.log(2) / settings.half_life_events
    sums: dict[tuple[str, str], list[float]] = {}
    for obs in rows:
        for key in ((obs.task, obs.model), (ANY_TASK, obs.model)):
            # [successes, failures, verdicts, count, latency·w, latency w, cost·w, cost w]
            acc = sums.setdefault(key, [0.0] * 8)
            w = math.exp(-decay * acc[3])  # acc[3]: newer observations of this key seen so far
            acc[3] += 1
            if obs.quality is not None:
                q = min(max(obs.quality, 0.0), 1.0)
                acc[0] += w * q
                acc[1] += w * (1 - q)
                acc[2] += 1
            if obs.latency_ms is not None:
                acc[4] += w * obs.latency_ms
                acc[5] += w
            if obs.cost_usd is not None:
                acc[6] += w * obs.cost_usd
                acc[7] += w
    cells = {
        key: Cell(a[0], a[1], int(a[2]), a[4] / a[5] if a[5] else None, a[6] / a[7] if a[7] else None)
        for key, a in sums.items()
    }
    version = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + f"-n{len(rows)}"
    return WinRateState(cells, version, now)


def confidence(observations: float, midpoint: float) -> float:
    """How sure the evidence makes us, 0..1: a sigmoid of the observation count, 0.5 at `midpoint`."""
    return 1.0 / (1.0 + math.exp(-(observations - midpoint) / max(midpoint / 3.0, 1e-9)))


class WinRateRouter(StaticRulesRouter):
    """Static rules' candidates and utility, with learned win rates as quality, explored by Thompson sampling."""

    name = "winrate"

    def __init__(
        self,
        registry: Registry,
        context: RouterContext | None = None,
        state: Callable[[], WinRateState] | None = None,
    ) -> None:
        super().__init__(registry, context)
        context = context or RouterContext()
        self._state = cast(Callable[[], WinRateState], state or context.winrate or WinRateState)
        self._settings = registry.learning.winrate
        self._shifts: dict[tuple[str, str], float] = {}
        """(state version, task) -> task_shift: computed once per aggregation."""

    @property
    def version(self) -> str:
        return self._state().version

    @version.setter
    def version(self, value: str) -> None:
        pass  # the state's version names this router's decisions

    def _posterior(self, task: str, model: ModelEntry) -> tuple[float, float]:
        state = self._state()
        key = (state.version, task)
        if key not in self._shifts:
            if len(self._shifts) > 1000:
                self._shifts.clear()
            self._shifts[key] = state.task_shift(task, self._registry.models, self._settings.prior_strength)
        return state.posterior(task, model, self._settings.prior_strength, self._shifts[key])

    def _quality(self, model: ModelEntry, task: str) -> float:
        """A cautious estimate: the posterior mean less `caution` standard deviations."""
        alpha, beta = self._posterior(task, model)
        n = alpha + beta
        mean = alpha / n
        return mean - self._settings.caution * math.sqrt(mean * (1 - mean) / (n + 1))

    def _latency(self, model: ModelEntry, task: str) -> float:
        measured = self._state().cell(task, model.name).latency_ms
        return measured if measured is not None else model.latency_ms

    label = "win rates"

    def route(
        self, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> RouteDecision | None:
        """The best cautious-quality utility; exploration is a policy around the chain (`policies.Exploration`)."""
        greedy = super().route(request, task, candidates)
        if greedy is None:
            return None
        cell = self._state().cell(task.task, greedy.model)
        reason = greedy.reason + (
            f"; {greedy.model} won {cell.successes:.1f} of {cell.weight:.1f} recent weighted verdicts on {task.task} "
            f"(confidence {confidence(cell.observations, self._settings.confidence_midpoint):.2f})"
        )
        return replace(greedy, reason=reason)

    def observations(self, task: str, model: str) -> int:
        """Verdicts on `model` for `task` in the current state."""
        return self._state().cell(task, model).observations

    def cautious_quality(self, model: ModelEntry, task: str) -> float:
        return self._quality(model, task)

    def posterior(self, task: str, model: ModelEntry) -> tuple[float, float]:
        return self._posterior(task, model)

    def quality_weight(self, preference: str) -> float:
        return self._registry.preferences[preference].quality_weight
