"""The static-rules router over a small registry, and the router table plugins share with built-ins."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pytest

from router_plugins.registry import ModelEntry, Registry, parse_registry
from router_plugins.routers import DuplicateRouterError, RouterContext, RouterTable, StaticRulesRouter, default_table
from router_plugins.types import ChatRequest, Classification, Preference, RouteDecision

# Blended USD per 1k tokens: premium 0.02, cheap 0.0002, fast 0.002, coder 0.001.
MODELS = """\
models:
  - name: premium
    litellm_params: {model: openai/premium}
    input_cost_per_mtok: 10.0
    output_cost_per_mtok: 30.0
    latency_ms: 3000
    quality: {default: 0.9, coding: 0.86}
  - name: cheap
    litellm_params: {model: openai/cheap}
    input_cost_per_mtok: 0.1
    output_cost_per_mtok: 0.3
    latency_ms: 1500
    quality: {default: 0.7}
  - name: fast
    litellm_params: {model: openai/fast}
    input_cost_per_mtok: 1.0
    output_cost_per_mtok: 3.0
    latency_ms: 200
    quality: {default: 0.72}
  - name: coder
    litellm_params: {model: openai/coder}
    input_cost_per_mtok: 0.5
    output_cost_per_mtok: 1.5
    latency_ms: 1000
    context_window: 4096
    generalist: false
    supports_tools: false
    specialized_for: [coding]
    quality: {default: 0.5, coding: 0.8}
"""

RULES = """\
routing_rules:
  - task: coding
    candidates:
      - {model: coder, priority: 1, is_specialized: true}
      - {model: premium, priority: 2}
      - {model: cheap, priority: 3}
  - task: writing
    candidates:
      - {model: premium, max_cost_per_1k: 0.01}
      - {model: cheap, min_quality_score: 0.8}
      - {model: fast}
  - task: summarization
    candidates:
      - {model: premium, min_quality_score: 0.95}
      - {model: cheap, min_quality_score: 0.95}
"""

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


@functools.cache
def registry(extra: str = "") -> Registry:
    return parse_registry(MODELS + RULES + extra, "test.yaml")


def request(text: str = "hello", preference: Preference = "balanced", **kw: Any) -> ChatRequest:
    return ChatRequest("req-1", "auto", ({"role": "user", "content": text},), preference=preference, **kw)


def route(
    task: str,
    req: ChatRequest | None = None,
    reg: Registry | None = None,
    candidates: Sequence[ModelEntry] | None = None,
    needs_clarification: bool = False,
) -> RouteDecision | None:
    reg = reg or registry()
    classification = Classification(task, 0.9, "keywords", needs_clarification=needs_clarification)
    candidates = reg.models if candidates is None else candidates
    return StaticRulesRouter(reg).route(req or request(), classification, candidates)


def chosen(task: str, req: ChatRequest | None = None, **kw: Any) -> str:
    decision = route(task, req, **kw)
    assert decision is not None
    return decision.model


def names(decision: RouteDecision | None) -> list[str]:
    assert decision is not None
    return [c.model for c in decision.alternatives]


# -- preference ----------------------------------------------------------------------------------------------------


def test_quality_preference_picks_the_highest_prior_quality() -> None:
    assert chosen("chat", request(preference="quality")) == "premium"


def test_cost_preference_picks_the_cheapest_acceptable() -> None:
    assert chosen("chat", request(preference="cost")) == "cheap"


def test_cost_preference_skips_the_cheapest_when_it_is_below_min_quality() -> None:
    assert chosen("chat", request(preference="cost", min_quality=0.72)) == "fast"


def test_latency_preference_picks_the_fastest() -> None:
    assert chosen("chat", request(preference="latency")) == "fast"


def test_decision_names_router_version_and_preference() -> None:
    reg = registry()
    decision = route("chat", request(preference="cost"), reg=reg)

    assert decision is not None
    assert (decision.router, decision.router_version, decision.propensity) == ("static-rules", reg.version, 1.0)
    assert decision.reason.startswith("static rules, cost: cheap has the best utility for chat among 4")
    assert "all models (no rule for this task)" in decision.reason


# -- rules, specialists, priorities ---------------------------------------------------------------------------------


def test_specialist_bonus_makes_the_specialist_win() -> None:
    decision = route("coding", request(preference="quality"))

    assert decision is not None and decision.model == "coder"
    assert "specialist" in decision.alternatives[0].note
    assert "rule for coding" in decision.reason


def test_without_the_specialist_bonus_the_better_generalist_wins() -> None:
    reg = registry("router: {specialization_bonus: 0.0}\n")

    assert chosen("coding", request(preference="quality"), reg=reg) == "premium"


def test_priority_bonus_ranks_by_rule_priority() -> None:
    # cheap and fast differ by 0.02 in quality; two priority steps (0.04) put the less good one first.
    extra = "  - task: chat\n    candidates:\n      - {model: cheap, priority: 1}\n      - {model: fast, priority: 3}\n"
    decision = route("chat", request(preference="quality"), reg=registry(extra))

    assert decision is not None
    assert names(decision) == ["cheap", "fast"]
    assert [c.note for c in decision.alternatives] == ["priority 1", "priority 3"]
    assert decision.alternatives[0].score == pytest.approx(0.7 + 0.04)


def test_task_without_a_rule_uses_all_models() -> None:
    assert sorted(names(route("knowledge"))) == ["cheap", "coder", "fast", "premium"]


def test_rule_whose_models_are_unavailable_falls_back_to_all_available() -> None:
    reg = registry()
    available = [m for m in reg.models if m.name == "fast"]

    decision = route("summarization", reg=reg, candidates=available)

    assert decision is not None and decision.model == "fast"
    assert "the rule's models are unavailable or cannot serve" in decision.reason


def test_only_available_candidates_are_considered() -> None:
    reg = registry()
    available = [m for m in reg.models if m.name != "coder"]

    assert names(route("coding", request(preference="quality"), reg=reg, candidates=available)) == ["premium", "cheap"]


def test_uncertain_task_is_said_in_the_reason() -> None:
    decision = route("chat", needs_clarification=True)

    assert decision is not None and decision.reason.endswith("; task uncertain")


# -- what a model can serve ----------------------------------------------------------------------------------------


def test_tools_request_excludes_models_without_tool_support() -> None:
    decision = route("coding", request(preference="quality", params={"tools": TOOLS}))

    assert "coder" not in names(decision)
    assert decision is not None and decision.model == "premium"


def test_long_prompt_excludes_a_small_context_model() -> None:
    short, long = request("write a function"), request("x" * 16_000)  # 4000 tokens + 512 for the answer > 4096

    assert "coder" in names(route("coding", short))
    assert "coder" not in names(route("coding", long))


def test_max_tokens_counts_toward_the_context_window() -> None:
    assert "coder" not in names(route("coding", request(params={"max_tokens": 4096})))


# -- constraints ---------------------------------------------------------------------------------------------------


def test_rule_min_quality_and_max_cost_filter_candidates() -> None:
    # premium costs 0.02 > its rule's 0.01; cheap's quality 0.7 < its rule's 0.8.
    decision = route("writing")

    assert names(decision) == ["fast"]
    assert decision is not None and "relaxed" not in decision.reason


def test_rule_constraints_are_relaxed_when_nothing_meets_them() -> None:
    decision = route("summarization", request(preference="quality"))

    assert names(decision) == ["premium", "cheap"]
    assert decision is not None and "rule constraints relaxed" in decision.reason


def test_request_constraints_still_apply_after_relaxing_the_rule() -> None:
    assert names(route("summarization", request(min_quality=0.8))) == ["premium"]


@pytest.mark.parametrize("constraint", [{"max_cost_per_1k": 0.0001}, {"min_quality": 0.95}])
def test_request_constraints_are_never_relaxed(constraint: dict[str, float]) -> None:
    assert route("chat", request(**constraint)) is None


def test_request_max_cost_keeps_only_models_within_it() -> None:
    assert sorted(names(route("chat", request(max_cost_per_1k=0.001)))) == ["cheap", "coder"]


def test_request_max_cost_excludes_a_model_with_unknown_price() -> None:
    extra = "  - name: unpriced\n    litellm_params: {model: openai/unpriced}\n    quality: {default: 0.99}\n"
    reg = parse_registry(MODELS + extra, "test.yaml")

    assert "unpriced" in names(route("chat", request(preference="quality"), reg=reg))
    assert "unpriced" not in names(route("chat", request(max_cost_per_1k=1.0), reg=reg))


def test_rule_constraints_never_make_a_satisfiable_request_fail() -> None:
    # writing: only fast meets the rule; the request's max cost rules fast out, but cheap (0.0002) fits it.
    decision = route("writing", request(max_cost_per_1k=0.001))

    assert decision is not None and decision.model == "cheap"


def test_rule_models_that_cannot_serve_fall_back_to_other_models() -> None:
    extra = "  - task: math\n    candidates:\n      - {model: coder}\n"

    decision = route("math", request(params={"tools": TOOLS}), reg=registry(extra))

    assert decision is not None and decision.model != "coder"


# -- alternatives and order ----------------------------------------------------------------------------------------


def test_alternatives_carry_every_candidate_in_rank_order_with_scores() -> None:
    decision = route("chat", request(preference="quality"))

    assert decision is not None
    assert names(decision) == ["premium", "fast", "cheap", "coder"]
    scores = [c.score for c in decision.alternatives]
    assert scores == sorted(scores, reverse=True)
    assert [c.quality for c in decision.alternatives] == [0.9, 0.72, 0.7, 0.5]
    assert decision.alternatives[0].cost_per_1k == pytest.approx(0.02)
    assert decision.alternatives[0].latency_ms == 3000


def test_fallback_order_starts_with_the_chosen_model() -> None:
    decision = route("coding", request(preference="quality"))

    assert decision is not None
    assert decision.fallback_order == ("coder", "premium", "cheap")


def test_ties_are_broken_by_registry_order_deterministically() -> None:
    twins = """\
models:
  - {name: twin-b, litellm_params: {model: openai/b}, quality: {default: 0.6}}
  - {name: twin-a, litellm_params: {model: openai/a}, quality: {default: 0.6}}
"""
    reg = parse_registry(twins, "twins.yaml")

    assert [chosen("chat", request(preference="quality"), reg=reg) for _ in range(5)] == ["twin-b"] * 5
    assert chosen("chat", request(preference="quality"), reg=reg, candidates=reg.models[::-1]) == "twin-a"


def test_ties_within_a_rule_are_broken_by_priority() -> None:
    twins = """\
models:
  - {name: twin-b, litellm_params: {model: openai/b}, quality: {default: 0.6}}
  - {name: twin-a, litellm_params: {model: openai/a}, quality: {default: 0.6}}
routing_rules:
  - task: chat
    candidates: [{model: twin-b, priority: 2}, {model: twin-a, priority: 1}]
router: {priority_bonus: 0.0}
"""
    decision = route("chat", request(preference="quality"), reg=parse_registry(twins, "twins.yaml"))

    assert names(decision) == ["twin-a", "twin-b"]


# -- the router table ----------------------------------------------------------------------------------------------


class ThrowAwayRouter:
    name = "throw-away"
    version = "0"

    def __init__(self, registry: Registry, context: RouterContext) -> None:
        self.registry = registry
        self.context = context

    def route(
        self, request: ChatRequest, task: Classification, candidates: Sequence[ModelEntry]
    ) -> RouteDecision | None:
        return None


def test_default_table_holds_the_built_in_router() -> None:
    table = default_table(with_plugins=False)

    assert "static-rules" in table.names()
    assert isinstance(table.create("static-rules", registry()), StaticRulesRouter)


def test_duplicate_router_name_is_refused() -> None:
    table = default_table(with_plugins=False)

    with pytest.raises(DuplicateRouterError, match="'static-rules' is already registered"):
        table.register("static-rules", ThrowAwayRouter)


def test_a_plugin_router_registers_creates_and_unregisters() -> None:
    table = default_table(with_plugins=False)
    reg = registry()

    table.register(ThrowAwayRouter.name, ThrowAwayRouter)
    router = table.create("throw-away", reg)
    table.unregister("throw-away")

    assert isinstance(router, ThrowAwayRouter) and router.registry is reg
    assert "throw-away" not in table.names()
    table.register(ThrowAwayRouter.name, ThrowAwayRouter)  # the name is free again


def test_unknown_router_name_lists_the_known_ones() -> None:
    table = RouterTable()
    table.register("static-rules", StaticRulesRouter)
    table.register("throw-away", ThrowAwayRouter)

    with pytest.raises(KeyError, match="no router named 'nope'; known: static-rules, throw-away"):
        table.create("nope", registry())
