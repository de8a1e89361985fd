"""The win-rate router: posterior updates, recency decay, Thompson exploration and its propensities."""

from __future__ import annotations

import dataclasses

import pytest

from router_plugins.registry import LiteLLMParams, ModelEntry, Registry, WinRateSettings, parse_registry
from router_plugins.routers import RouterContext, WinRateRouter
from router_plugins.routers.policies import Choice, DriftGuard, Exploration
from router_plugins.routers.winrate import ANY_TASK, Observation, WinRateState, aggregate, confidence
from router_plugins.schema import ConfigError
from router_plugins.types import ChatRequest, Classification, RouteDecision, ScoredCandidate

SETTINGS = WinRateSettings(prior_strength=4.0, half_life_events=10.0, window_s=1000.0, exploration=0.2)


def model(name: str, prior: float = 0.5, price: float = 1.0) -> ModelEntry:
    return ModelEntry(name=name, litellm_params=LiteLLMParams(model=f"openai/{name}"), quality={"default": prior},
                      input_cost_per_mtok=price, output_cost_per_mtok=price)  # fmt: skip


def registry(exploration: float = 0.2) -> Registry:
    base = Registry(models=(model("a", 0.6), model("b", 0.5), model("c", 0.4)))
    learning = dataclasses.replace(base.learning, winrate=dataclasses.replace(SETTINGS, exploration=exploration))
    return dataclasses.replace(base, learning=learning)


def test_posterior_adds_weighted_evidence_to_a_pooled_prior() -> None:
    obs = [Observation(100.0, "math", "a", 1.0), Observation(99.0, "math", "a", 0.0), Observation(98.0, "math", "a", 1.0)]
    state = aggregate(obs, dataclasses.replace(SETTINGS, half_life_events=1e9), now=100.0)
    cell = state.cell("math", "a")
    assert (cell.successes, cell.failures, cell.observations) == pytest.approx((2.0, 1.0, 3))
    # Prior: registry 0.6 pooled with a's all-task record (2 of 3): (4·0.6 + 2) / (4 + 3) = 4.4 / 7.
    alpha, beta = state.posterior("math", model("a", 0.6), 4.0)
    prior = 4.4 / 7
    assert alpha == pytest.approx(4 * prior + 2) and beta == pytest.approx(4 * (1 - prior) + 1)
    # No evidence at all: the registry prior alone.
    assert WinRateState().posterior("math", model("a", 0.6), 4.0) == pytest.approx((2.4, 1.6))


def test_old_evidence_fades_and_the_window_drops_it() -> None:
    # 20 old successes, then 10 newer failures: with a half-life of 10 observations the failures dominate.
    obs = [Observation(float(t), "math", "a", 1.0) for t in range(20)]
    obs += [Observation(float(t), "math", "a", 0.0) for t in range(20, 30)]
    state = aggregate(obs, SETTINGS, now=30.0)
    cell = state.cell("math", "a")
    assert cell.failures == pytest.approx(sum(0.5 ** (k / 10) for k in range(10)))
    assert cell.successes == pytest.approx(sum(0.5 ** (k / 10) for k in range(10, 30)))
    assert cell.failures > cell.successes, "recent failures outweigh twice as many older successes"
    dropped = aggregate(obs, dataclasses.replace(SETTINGS, window_s=5.0), now=30.0).cell("math", "a")
    assert dropped.observations == 5 and dropped.successes == 0.0, "only the last 5 s count"
    assert state.cell(ANY_TASK, "a").observations == 30


def test_latency_and_cost_are_tracked_beside_success() -> None:
    obs = [Observation(1.0, "chat", "b", None, 100.0, 0.01), Observation(2.0, "chat", "b", 1.0, 300.0, 0.03)]
    cell = aggregate(obs, dataclasses.replace(SETTINGS, half_life_events=1e9), now=2.0).cell("chat", "b")
    assert cell.latency_ms == pytest.approx(200.0) and cell.cost_usd == pytest.approx(0.02)
    assert cell.observations == 1, "a call without a verdict is no evidence of success"


def test_confidence_is_a_sigmoid_of_the_evidence() -> None:
    assert confidence(10, 10) == pytest.approx(0.5)
    assert confidence(0, 10) < 0.1 < 0.9 < confidence(30, 10)


def _router(state: WinRateState, exploration: float = 0.2, seed: int = 7) -> WinRateRouter:
    return WinRateRouter(registry(exploration), RouterContext(seed=seed), state=lambda: state)


def _request(preference: str = "quality") -> ChatRequest:
    return ChatRequest("r", "auto", ({"role": "user", "content": "integrate x"},), preference=preference)  # type: ignore[arg-type]


def test_learned_win_rates_change_the_greedy_choice() -> None:
    task = Classification("math", 1.0, "keywords")
    router = _router(WinRateState(), exploration=0.0)
    assert router.route(_request(), task, router._registry.models).model == "a", "priors: a 0.6 is best"
    obs = [Observation(float(t), "math", "c", 1.0) for t in range(30)]
    obs += [Observation(float(t), "math", "a", 0.0) for t in range(30)]
    router = _router(aggregate(obs, SETTINGS, now=30.0), exploration=0.0)
    decision = router.route(_request(), task, router._registry.models)
    assert decision is not None and decision.model == "c" and decision.propensity == 1.0
    assert decision.router == "winrate" and "won" in decision.reason


def _frequencies(
    explore: Exploration, greedy: RouteDecision, models: tuple[ModelEntry, ...], n: int
) -> dict[str, float]:
    counts: dict[str, int] = {}
    for _ in range(n):
        choice = explore.apply(Choice.certain(greedy), _request(), Classification("math", 1.0, "keywords"), models)
        decision = choice.decision
        counts[decision.model] = counts.get(decision.model, 0) + 1
        assert decision.propensity == choice.probabilities[decision.model], "the logged propensity is its probability"
    return {name: k / n for name, k in counts.items()}


def test_propensities_sum_to_one_and_match_how_often_each_model_is_chosen() -> None:
    task = Classification("math", 1.0, "keywords")
    router = _router(WinRateState(), exploration=0.3, seed=1)
    models = router._registry.models
    greedy = router.route(_request(), task, models)
    assert greedy is not None
    explore = Exploration(router, 0.3, seed=1)
    probabilities = explore.apply(Choice.certain(greedy), _request(), task, models).probabilities
    assert sum(probabilities.values()) == pytest.approx(1.0)
    assert probabilities[greedy.model] >= 0.7, "the greedy model keeps at least 1 − exploration"
    assert min(probabilities.values()) >= 0.01, "every candidate keeps the propensity floor"
    n = 3000
    frequencies = _frequencies(explore, greedy, models, n)
    for name, p in probabilities.items():
        assert frequencies.get(name, 0.0) == pytest.approx(p, abs=0.04)
    draws = (explore.apply(Choice.certain(greedy), _request(), task, models).decision for _ in range(200))
    explored = next(d for d in draws if d.model != greedy.model)
    assert explored.alternatives[0].model == explored.model and explored.reason.startswith("explored by")


def test_the_propensity_floor_gives_every_candidate_support() -> None:
    task = Classification("math", 1.0, "keywords")
    # Evidence makes c hopeless: Thompson sampling alone would (almost) never try it.
    obs = [Observation(float(t), "math", "a", 1.0) for t in range(200)]
    obs += [Observation(float(t), "math", "c", 0.0) for t in range(200)]
    router = _router(aggregate(obs, dataclasses.replace(SETTINGS, half_life_events=1e9), now=200.0), exploration=0.1)
    models = router._registry.models
    greedy = router.route(_request(), task, models)
    assert greedy is not None and greedy.model == "a"
    without = Exploration(router, 0.1, seed=2, floor=0.0).apply(Choice.certain(greedy), _request(), task, models)
    assert without.probabilities["c"] < 0.005
    explore = Exploration(router, 0.1, seed=2, floor=0.03)
    probabilities = explore.apply(Choice.certain(greedy), _request(), task, models).probabilities
    assert sum(probabilities.values()) == pytest.approx(1.0)
    assert probabilities["c"] >= 0.03 and probabilities["b"] >= 0.03 and probabilities["a"] >= 0.9
    n = 20_000
    frequencies = _frequencies(explore, greedy, models, n)
    for name, p in probabilities.items():
        assert frequencies.get(name, 0.0) == pytest.approx(p, abs=4 * (p * (1 - p) / n) ** 0.5 + 1e-3)


def test_floors_beyond_the_budget_win_and_the_greedy_keeps_the_rest() -> None:
    task = Classification("math", 1.0, "keywords")
    router = _router(WinRateState(), exploration=0.015, seed=3)
    models = router._registry.models
    greedy = router.route(_request(), task, models)
    assert greedy is not None
    # Two other candidates at a floor of 0.01 need 0.02, more than the budget of 0.015: no Thompson draw is left.
    explore = Exploration(router, 0.015, seed=3, floor=0.01)
    probabilities = explore.apply(Choice.certain(greedy), _request(), task, models).probabilities
    assert probabilities == {greedy.model: pytest.approx(0.98), **{m.name: 0.01 for m in models if m.name != "a"}}
    frequencies = _frequencies(explore, greedy, models, 20_000)
    assert frequencies[greedy.model] == pytest.approx(0.98, abs=0.005)
    assert all(frequencies[m.name] == pytest.approx(0.01, abs=0.004) for m in models if m.name != greedy.model)
    # A floor larger than 1/k is 1/k: uniform.
    uniform = Exploration(router, 0.6, seed=3, floor=0.5).apply(Choice.certain(greedy), _request(), task, models)
    assert uniform.probabilities == pytest.approx({m.name: 1 / 3 for m in models})


def test_the_floor_is_validated_against_the_budget() -> None:
    with pytest.raises(ValueError, match="propensity_floor"):
        WinRateSettings(exploration=0.05, propensity_floor=0.1)
    with pytest.raises(ValueError, match="propensity_floor"):
        WinRateSettings(propensity_floor=-0.01)
    assert WinRateSettings(exploration=0.0).propensity_floor == 0.01, "with exploration off the floor is unused"
    with pytest.raises(ConfigError, match="propensity_floor"):
        parse_registry("models: [{name: a, litellm_params: {model: openai/a}}]\n"
                       "learning: {winrate: {exploration: 0.01, propensity_floor: 0.02}}\n")  # fmt: skip


def test_no_exploration_budget_means_propensity_one() -> None:
    task = Classification("math", 1.0, "keywords")
    router = _router(WinRateState(), exploration=0.0)
    models = router._registry.models
    greedy = router.route(_request(), task, models)
    assert greedy is not None
    choices = [Exploration(router, 0.0).apply(Choice.certain(greedy), _request(), task, models) for _ in range(50)]
    assert {(c.decision.model, c.decision.propensity) for c in choices} == {("a", 1.0)}


def test_the_drift_guard_overrules_a_stale_prediction() -> None:
    task = Classification("math", 1.0, "keywords")
    learned = RouteDecision("a", "learned says a", "learned", "v1",
                            (ScoredCandidate("a", 0.9, 0.9, 0.001, 100.0), ScoredCandidate("b", 0.5, 0.5, 0.001, 100.0)))  # fmt: skip
    few = [Observation(float(t), "math", "a", 0.0) for t in range(5)]
    router = _router(aggregate(few, SETTINGS, now=5.0), exploration=0.0)
    chosen = Choice.certain(learned)

    def guard(router: WinRateRouter) -> RouteDecision:
        return DriftGuard(router).apply(chosen, _request(), task, router._registry.models).decision

    assert guard(router) is learned, "too few verdicts to overrule"
    many = [Observation(float(t), "math", "a", 0.0) for t in range(30)]
    many += [Observation(float(t), "math", "b", 0.7) for t in range(10)]  # explored now and then: still fine
    router = _router(aggregate(many, SETTINGS, now=30.0), exploration=0.0)
    guarded = guard(router)
    assert guarded.model != "a" and guarded.reason.startswith("drift guard") and guarded.router == "winrate"
    good = [Observation(float(t), "math", "a", 1.0) for t in range(30)]
    router = _router(aggregate(good, SETTINGS, now=30.0), exploration=0.0)
    assert guard(router) is learned


def test_untried_models_start_from_what_the_task_showed_not_an_optimistic_default() -> None:
    # On this task the tried models do far worse than the registry's priors (0.6 and 0.5) promised.
    obs = [Observation(float(t), "trivia", "a", 0.1) for t in range(40)]
    obs += [Observation(float(t), "trivia", "b", 0.2) for t in range(40)]
    state = aggregate(obs, dataclasses.replace(SETTINGS, half_life_events=1e9), now=40.0)
    shift = state.task_shift("trivia", registry().models, 4.0)
    # Excess over the priors: 40·0.1 − 0.6·40 + 40·0.2 − 0.5·40 = −32, over 4 + 80 weight.
    assert shift == -0.2, "−32 / (4 + 80) = −0.38, bounded at −0.2"
    untried = model("c", 0.4)
    alpha, beta = state.posterior("trivia", untried, 4.0, shift)
    assert alpha / (alpha + beta) == pytest.approx(0.2), "c's prior 0.4 moved down by the task's evidence"
    router = _router(state, exploration=0.0)
    decision = router.route(_request(), Classification("trivia", 1.0, "keywords"), router._registry.models)
    assert decision.model == "b", "the best tried model keeps the traffic; the untried one is not presumed better"
