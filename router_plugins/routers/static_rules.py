"""Static rules: rank the registry's candidates for a task by prior quality, price, latency and priority."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..outcomes import OutcomeSet
from ..registry import ModelEntry, Registry, RuleCandidate
from ..types import ChatRequest, Classification, RouteDecision, ScoredCandidate
from .base import Prediction, PromptBatch, RouterContext

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
        relaxed = not within_rule
        options = within_rule or options
        ranked = self._rank(options, request, task.task)
        best = ranked[0]
        reason = (
            f"static rules, {request.preference}: {best.model} has the best utility for {task.task} "
            f"among {len(ranked)} ({source})"
        )
        if relaxed:
            reason += "; rule constraints relaxed, no candidate met them"
        if task.needs_clarification:
            reason += "; task uncertain"
        return RouteDecision(best.model, reason, self.name, self.version, tuple(ranked), 1.0)

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

    def _rank(self, options: list[_Option], request: ChatRequest, task: str) -> list[ScoredCandidate]:
        weights = self._registry.preferences[request.preference]
        settings = self._registry.router
        known_costs = [c for o in options if (c := o.model.cost_per_1k()) is not None]
        dearest = max(known_costs, default=0.0) or 1.0
        slowest = max(self._latency(o.model, task) for o in options) or 1.0
        lowest_priority = max((o.rule.priority for o in options if o.rule), default=1)
        scored: list[tuple[float, int, ScoredCandidate]] = []
        for index, option in enumerate(options):
            model = option.model
            quality = self._quality(model, task)
            cost = model.cost_per_1k()
            # An unknown price is treated as the dearest: the cost-aware preferences must not favour it.
            relative_cost = (cost if cost is not None else dearest) / dearest
            utility = (
                weights.quality_weight * quality
                - weights.cost_weight * relative_cost
                - weights.latency_weight * self._latency(model, task) / slowest
            )
            notes = []
            if (option.rule and option.rule.is_specialized) or model.is_specialist_for(task):
                utility += settings.specialization_bonus
                notes.append("specialist")
            if option.rule:
                utility += settings.priority_bonus * (lowest_priority - option.rule.priority)
                notes.append(f"priority {option.rule.priority}")
            candidate = ScoredCandidate(
                model.name, utility, quality, cost, self._latency(model, task), ", ".join(notes)
            )
            priority = option.rule.priority if option.rule else lowest_priority
            scored.append((-utility, priority * 1000 + index, candidate))
        scored.sort(key=lambda item: (round(item[0], 9), item[1]))
        return [candidate for _, _, candidate in scored]


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None
