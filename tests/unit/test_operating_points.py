"""Per-preference operating points: the pure calibration, the learned router's use of it, its artifact, its report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from proxy.evaluation import offline
from proxy.evaluation.offline import evaluate_cv
from router_plugins.outcomes import OutcomeSet, load_outcomes
from router_plugins.registry import PreferenceWeights, Registry, parse_registry
from router_plugins.routers import LearnedRouter, RouterContext
from router_plugins.routers.operating import (
    KNEE,
    NEVER_REACHES,
    REACHES_BEST,
    REGISTRY,
    OperatingPoint,
    SweepPoint,
    above_chord,
    calibrate,
    cheapest_reaching,
    choose,
    knee,
)
from router_plugins.routers.ranking import Estimate, rank
from router_plugins.types import ChatRequest, Classification

from .test_learned_router import FIXTURES, bag_of_words, synthetic

SMALL = 30
"""These tests calibrate on 80 synthetic prompts: far below the default `router.calibration_min_outcomes`."""


def registry_for(data: OutcomeSet, min_outcomes: int = SMALL) -> Registry:
    registry = offline.registry_for(data)
    return dataclasses.replace(
        registry, router=dataclasses.replace(registry.router, calibration_min_outcomes=min_outcomes)
    )


@pytest.fixture(autouse=True)
def _small_sets_calibrate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline, "registry_for", lambda data, real=offline.registry_for: _lowered(real(data)))


def _lowered(registry: Registry) -> Registry:
    return dataclasses.replace(registry, router=dataclasses.replace(registry.router, calibration_min_outcomes=SMALL))


def curve(*points: tuple[float, float]) -> list[SweepPoint]:
    """(cost, quality) points, the cost weight falling along the list as it does along a sweep."""
    return [SweepPoint(float(len(points) - i), q, c) for i, (c, q) in enumerate(points)]


# -- the pure functions -----------------------------------------------------------------------------------------


def test_the_knee_is_the_point_furthest_above_the_chord() -> None:
    # Chord from (1, .5) to (8, .9). Scaled distances: (2, .8) .75 − 1/7 = .61; (4, .88) .95 − 3/7 = .52;
    # (16, .9) is dearer than the max-quality end and is never the knee.
    points = curve((16, 0.9), (8, 0.9), (4, 0.88), (2, 0.8), (1, 0.5))
    assert knee(points) == 3
    assert above_chord(points, 0.8, 2) == pytest.approx(0.75 - 1 / 7)
    # The cost unit does not matter.
    scaled = [SweepPoint(p.cost_weight, p.quality, p.cost * 1000) for p in points]
    assert knee(scaled) == 3


def test_a_curve_without_a_bend_takes_its_max_quality_end() -> None:
    assert knee(curve((4, 0.9), (3, 0.8), (2, 0.7), (1, 0.6))) == 0  # a straight line: every point on the chord
    assert knee(curve((4, 0.9), (1, 0.9))) == 1  # the max-quality point is the cheapest
    assert knee(curve((4, 0.9), (3, 0.6), (2, 0.55), (1, 0.5))) == 0  # convex: every inner point under the chord


def test_equal_landings_take_the_middle_of_their_weights() -> None:
    points = curve((8, 0.9), (2, 0.8), (2, 0.8), (2, 0.8), (1, 0.5))
    assert knee(points) == 2


def test_the_cost_point_is_the_cheapest_reaching_the_target() -> None:
    points = curve((16, 0.9), (8, 0.9), (4, 0.88), (2, 0.8), (1, 0.5))
    assert cheapest_reaching(points, 0.85) == 2
    assert cheapest_reaching(points, 0.9) == 1
    assert cheapest_reaching(points, 0.95) is None


def test_choose_is_the_rankings_first_choice() -> None:
    rng = np.random.default_rng(3)
    quality = rng.uniform(size=(200, 4))
    cost = rng.uniform(1e-4, 1e-2, size=(200, 4))
    cost[rng.uniform(size=cost.shape) < 0.1] = np.nan  # unknown: counted as the dearest
    latency = rng.uniform(100, 3000, size=(200, 4))
    for weights in (PreferenceWeights(1, 0, 0), PreferenceWeights(1, 0.3, 0.05), PreferenceWeights(1, 5.0, 0.6)):
        chosen = choose(quality, cost, weights, latency)
        for i in range(len(quality)):
            estimates = [Estimate(str(j), quality[i, j], cost[i, j], latency[i, j]) for j in range(4)]
            assert rank(estimates, weights)[0].model == str(chosen[i])


def _two_kinds(n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns dear, mid, cheap. Half the prompts only `dear` solves; on the rest all three do."""
    quality = np.array([[1.0, 0.0, 0.0] if i % 2 else [1.0, 1.0, 1.0] for i in range(n)])
    cost = np.tile([1.0, 0.1, 0.01], (n, 1))
    predicted = np.where(quality == 1.0, 0.9, 0.1)
    return predicted, cost, quality


def test_calibrate_on_a_constructed_case() -> None:
    predicted, cost, quality = _two_kinds()
    preferences = registry_for(load_outcomes(FIXTURES / "train.jsonl")).preferences  # the default weights
    points = calibrate(predicted, cost, quality, cost, 0, preferences)
    assert points["quality"] == OperatingPoint(0.0, 1.0, 1.0, REGISTRY)
    assert points["latency"].source == REGISTRY and points["latency"].cost_weight == 0.05
    # Routing hard prompts to dear and easy ones to cheap keeps quality 1 at (1 + .01) / 2: the knee, and the
    # cheapest point that reaches dear's quality.
    assert points["balanced"].source == KNEE and points["cost"].source == REACHES_BEST
    for name in ("balanced", "cost"):
        assert points[name].oof_quality == 1.0 and points[name].oof_cost == pytest.approx(0.505)
        weights = dataclasses.replace(preferences[name], cost_weight=points[name].cost_weight)
        assert choose(predicted, cost, weights).tolist() == [2 if i % 2 == 0 else 0 for i in range(40)]


def test_calibrate_when_the_best_single_is_never_reached() -> None:
    predicted, cost, quality = _two_kinds()
    predicted[:, 1] = 0.95  # mid looks best everywhere, and nothing tells the hard prompts apart
    predicted[:, 0] = 0.5
    points = calibrate(predicted, cost, quality, cost, 0, {"cost": PreferenceWeights(1.0, 0.6, 0.0)})
    assert points["cost"].source == NEVER_REACHES
    assert points["cost"].oof_quality == 0.5  # mid everywhere: the most any cost weight reaches
    assert points["cost"].calibrated


# -- the learned router -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train() -> OutcomeSet:
    return load_outcomes(FIXTURES / "train.jsonl")


@pytest.fixture(scope="module")
def fitted(train: OutcomeSet) -> LearnedRouter:
    router = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    router.fit(synthetic(train))
    return router


def _uncalibrated(registry: Registry) -> Registry:
    return dataclasses.replace(registry, router=dataclasses.replace(registry.router, calibrate_preferences=False))


def _decide(router: LearnedRouter, text: str, task: str, preference: str) -> tuple[str, str]:
    request = ChatRequest("r", "auto", ({"role": "user", "content": text},), preference=preference)  # type: ignore[arg-type]
    decision = router.route(request, Classification(task, 1.0, "keywords"), router._registry.models)
    assert decision is not None
    return decision.model, decision.reason


def test_fit_calibrates_balanced_and_cost_on_out_of_fold_predictions(fitted: LearnedRouter) -> None:
    points = fitted.operating_points
    assert set(points) == {"quality", "balanced", "cost", "latency"}
    assert points["balanced"].source == KNEE and points["cost"].calibrated
    assert points["quality"].cost_weight == 0.0 and points["quality"].source == REGISTRY
    assert points["cost"].oof_quality is not None and points["cost"].oof_quality >= 0.75 - 1e-9  # big's mean
    assert fitted.operating_note.startswith("calibrated on 80 out-of-fold prompts")


def _copy(fitted: LearnedRouter, registry: Registry, tmp_path: Path) -> LearnedRouter:
    router = LearnedRouter(registry, RouterContext(static_embed=bag_of_words))
    router.load(fitted.save(tmp_path))
    return router


def test_route_uses_the_calibrated_weight_unless_told_not_to(
    fitted: LearnedRouter, train: OutcomeSet, tmp_path: Path
) -> None:
    router = _copy(fitted, registry_for(train), tmp_path)
    router.operating_points = {**fitted.operating_points, "cost": OperatingPoint(2.0, None, None, REACHES_BEST)}
    coding = "Write a Python function that sorts a list."
    # Registry weight .6: big (p ≈ .97) − .6 beats mid (p ≈ .36) − .06. Calibrated 2.0: big − 2 loses to mid − .2.
    model, reason = _decide(router, coding, "coding", "cost")
    assert model == "mid" and "cost weight 2 calibrated" in reason
    uncalibrated = _copy(fitted, _uncalibrated(registry_for(train)), tmp_path / "again")
    uncalibrated.operating_points = router.operating_points
    model, reason = _decide(uncalibrated, coding, "coding", "cost")
    assert model == "big" and "calibrated" not in reason
    assert uncalibrated.preference_weights("cost") == (uncalibrated._registry.preferences["cost"], None)


def test_registry_weights_for_uncalibrated_preferences(fitted: LearnedRouter) -> None:
    weights, note = fitted.preference_weights("quality")
    assert weights == fitted._registry.preferences["quality"] and note is None
    weights, note = fitted.preference_weights("balanced")
    assert weights.cost_weight == fitted.operating_points["balanced"].cost_weight and note is not None
    assert weights.latency_weight == fitted._registry.preferences["balanced"].latency_weight


def test_quality_only_data_keeps_the_registry_weights(train: OutcomeSet) -> None:
    data = synthetic(train)
    data.cost[:] = np.nan
    router = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    router.fit(data)
    assert router.operating_points == {} and "records no costs" in router.operating_note
    assert router.preference_weights("cost") == (router._registry.preferences["cost"], None)


def test_too_few_rows_keep_the_registry_weights(train: OutcomeSet) -> None:
    router = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    router.fit(synthetic(train, n=10))  # 20 prompts: C is not selected, no out-of-fold predictions
    assert router.operating_points == {} and "calibration needs 30" in router.operating_note


def test_by_default_a_few_dozen_prompts_keep_the_registry_weights(train: OutcomeSet) -> None:
    """A knee found on 80 prompts is noise: with the default minimum (500) the registry's weights serve."""
    router = LearnedRouter(registry_for(train, min_outcomes=500), RouterContext(static_embed=bag_of_words))
    router.fit(synthetic(train))
    assert router.operating_points == {} and "80 training prompts, calibration needs 500" in router.operating_note
    assert router.preference_weights("balanced") == (router._registry.preferences["balanced"], None)


def test_artifact_round_trip_keeps_the_operating_points(
    fitted: LearnedRouter, train: OutcomeSet, tmp_path: Path
) -> None:
    path = fitted.save(tmp_path)
    loaded = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    loaded.load(path)
    assert loaded.operating_points == fitted.operating_points
    assert loaded.operating_note == fitted.operating_note


def test_an_artifact_from_before_calibration_routes_with_registry_weights(
    fitted: LearnedRouter, train: OutcomeSet, tmp_path: Path
) -> None:
    path = fitted.save(tmp_path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["operating_points"], meta["operating_note"]
    arrays["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    loaded = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    loaded.load(path)
    assert loaded.operating_points == {} and "predates" in loaded.operating_note
    model, reason = _decide(loaded, "Write a Python function that sorts a list.", "coding", "cost")
    assert model == "big" and "calibrated" not in reason


def test_the_setting_is_in_the_schema() -> None:
    text = "models:\n  - name: alpha\n    litellm_params: {model: openai/alpha}\n"
    assert parse_registry(text, "cfg.yaml").router.calibrate_preferences is True
    registry = parse_registry(text + "router: {calibrate_preferences: false}\n", "cfg.yaml")
    assert registry.router.calibrate_preferences is False


# -- the offline report -----------------------------------------------------------------------------------------


def test_cross_validation_reports_where_each_preference_lands(train: OutcomeSet) -> None:
    data = synthetic(train)
    context = RouterContext(static_embed=bag_of_words)
    report = evaluate_cv("learned", data, 3, context=context, seed=0)
    landing = report["operating_points"]
    assert set(landing["preferences"]) == {"quality", "balanced", "cost", "latency"}
    balanced, quality = landing["preferences"]["balanced"], landing["preferences"]["quality"]
    assert len(balanced["cost_weights"]) == 3 and balanced["sources"] == [KNEE]
    assert quality["cost_weights"] == [0.0, 0.0, 0.0] and quality["sources"] == [REGISTRY]
    assert balanced["cost"] <= quality["cost"]
    best = report["best_single"]
    cost = landing["preferences"]["cost"]
    assert cost["reaches_best"] == (cost["quality"] >= best["quality"])
    assert cost["cost_share_of_best"] == pytest.approx(cost["cost"] / best["cost"])
    for preference in ("balanced", "cost"):  # no landing lies further above the chord than the test curve's knee
        assert landing["test_knee"]["above_chord"] >= landing["from_knee"][preference]["above_chord"] - 1e-9


def test_routers_without_calibration_have_no_landing(train: OutcomeSet) -> None:
    report = evaluate_cv("static-rules", synthetic(train), 3, seed=0)
    assert "operating_points" not in report
