"""Static rules: rank the registry's candidates for a task by prior quality, price, latency and priority."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..outcomes import OutcomeSet
from ..registry import ModelEntry, Registry, RuleCandidate
from ..types import ChatRequest, Classification, RouteDecision
from .base import Prediction, PromptBatch, RouterContext
from .ranking import Estimate, Estimates, decide

CHARS_PER_TOKEN = 4
DEFAULT_TASK = "default"
DEFAULT_COMPLETION_TOKENS = 512
"""Room left for the answer when the request sets no max_tokens, for the context-window check."""


@dataclass(frozen=True)
class _Option:
    model: ModelEntry
    rule: RuleCandidate | None


class StaticRulesRouter:
    """Utility = w_q·quality − w_c·(cost / dearest) − w_l·(latency / slowest) + specialist and priority bonuses.

    Candidates are those of the task's routing rule (or every model when the task has none), less those
    that cannot serve the request (tools, context window) or break a constraint. Rule constraints are
    relaxed when nothing would be left (a rule must never make a request fail); the caller's own
    `max_cost_per_1k` / `min_quality` are never relaxed: no decision is returned instead.
    """

    name = "static-rules"

    def __init__(self, registry: Registry, context: RouterContext | None = None) -> None:
        self._registry = registry
        self.version = registry.version
        self._learned: dict[tuple[str, str], tuple[float, float]] = {}
        """(task, model) -> (mean quality, mean cost) learned by `fit`; replaces the registry's priors."""

    def fit(self, data: OutcomeSet) -> None:
        """Learn each task's mean quality and cost per model from outcomes (the best model per task wins)."""
        learned: dict[tuple[str, str], tuple[float, float]] = {}
        groups: dict[str, np.ndarray] = {DEFAULT_TASK: np.arange(len(data))}
        for label in data.task_labels():
            groups[label] = np.array([i for i, t in enumerate(data.tasks) if t == label])
        for task, rows in groups.items():
            for j, model in enumerate(data.models):
                quality = _nanmean(data.quality[rows, j])
                if quality is not None:
                    learned[(task, model)] = (quality, _nanmean(data.cost[rows, j]) or 0.0)
        self._learned = learned
        self.version = f"{self._registry.version}-fit{len(data)}"

    def predict(self, prompts: PromptBatch) -> Prediction:
        models = tuple(m.name for m in self._registry.models)
        quality = np.zeros((len(prompts), len(models)))
        cost = np.full((len(prompts), len(models)), np.nan)
        for i, task in enumerate(prompts.tasks):
            for j, name in enumerate(models):
                learned = self._learned.get((task or DEFAULT_TASK, name)) or self._learned.get((DEFAULT_TASK, name))
                if learned is not None:
                    quality[i, j], cost[i, j] = learned
                else:
                    model = self._registry.models[j]
                    quality[i, j], cost[i, j] = model.prior_quality(task or DEFAULT_TASK), np.nan
        return Prediction(models, quality, cost)

    def _quality(self, model: ModelEntry, task: str) -> float:
        learned = self._learned.get((task, model.name)) or self._learned.get((DEFAULT_TASK, model.name))
        return learned[0] if learned is not None else model.prior_quality(task)

    def _latency(self, model: ModelEntry, task: str) -> float:
        return model.latency_ms

    def route(
        self, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> RouteDecision | None:
        weights = self._registry.preferences[request.preference]
        return decide(self.name, self.version, self.label, self.estimate(request, task, candidates), request, task,
                      weights)  # fmt: skip

    label = "static rules"

    def estimate(
        self, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> Estimates | None:
        """The candidates the task's rule allows (every model without a rule) that can serve the request, with their
        quality, price, latency and the rule's bonuses; None when none can."""
        needed_tokens = self._needed_tokens(request)

        def usable(options: list[_Option]) -> list[_Option]:
            return [
                o for o in options
                if self._can_serve(o.model, request, needed_tokens) and self._meets_request(o.model, request, task.task)
            ]  # fmt: skip

        available = {m.name: m for m in candidates}
        rule = self._registry.rule_for(task.task)
        options: list[_Option] = []
        if rule is not None:
            options = usable(
                [_Option(available[c.model], c) for c in rule.candidates if c.enabled and c.model in available]
            )
            source = f"rule for {task.task}"
        if not options:
            options = usable([_Option(m, None) for m in candidates])
            source = (
                "all models (no rule for this task)"
                if rule is None
                else "all models (the rule's models are unavailable or cannot serve this request)"
            )
        if not options:
            return None
        within_rule = [o for o in options if self._meets_rule(o, task.task)]
        notes = [] if within_rule else ["rule constraints relaxed, no candidate met them"]
        if task.needs_clarification:
            notes.append("task uncertain")
        return Estimates(tuple(self._estimates(within_rule or options, task.task)), source, tuple(notes))

    @staticmethod
    def _needed_tokens(request: ChatRequest) -> int:
        max_tokens = request.params.get("max_tokens") or request.params.get("max_completion_tokens")
        return request.prompt_chars() // CHARS_PER_TOKEN + (max_tokens or DEFAULT_COMPLETION_TOKENS)

    @staticmethod
    def _can_serve(model: ModelEntry, request: ChatRequest, needed_tokens: int) -> bool:
        if request.uses_tools and not model.supports_tools:
            return False
        return needed_tokens <= model.context_window

    def _meets_rule(self, option: _Option, task: str) -> bool:
        rule = option.rule
        if rule is None:
            return True
        if rule.min_quality_score is not None and self._quality(option.model, task) < rule.min_quality_score:
            return False
        cost = option.model.cost_per_1k()
        return rule.max_cost_per_1k is None or (cost is not None and cost <= rule.max_cost_per_1k)

    def _meets_request(self, model: ModelEntry, request: ChatRequest, task: str) -> bool:
        if request.min_quality is not None and self._quality(model, task) < request.min_quality:
            return False
        if request.max_cost_per_1k is not None:
            cost = model.cost_per_1k()
            return cost is not None and cost <= request.max_cost_per_1k
        return True

    def _estimates(self, options: list[_Option], task: str) -> list[Estimate]:
        settings = self._registry.router
        lowest_priority = max((o.rule.priority for o in options if o.rule), default=1)
        out = []
        for option in options:
            model, bonus, notes = option.model, 0.0, []
            if (option.rule and option.rule.is_specialized) or model.is_specialist_for(task):
                bonus += settings.specialization_bonus
                notes.append("specialist")
            if option.rule:
                bonus += settings.priority_bonus * (lowest_priority - option.rule.priority)
                notes.append(f"priority {option.rule.priority}")
            priority = option.rule.priority if option.rule else lowest_priority
            out.append(Estimate(model.name, self._quality(model, task), model.cost_per_1k(), self._latency(model, task),
                                bonus, ", ".join(notes), priority))  # fmt: skip
        return out


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None
