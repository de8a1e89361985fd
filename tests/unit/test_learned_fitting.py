"""The learned router's refinements, each chosen by inner CV (`router_plugins.routers.fitting`): prompt-format
groups, the log-ridge cost model, the shared low-rank part; and its artifacts (v2, and v1 from before them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from proxy.evaluation.offline import registry_for
from router_plugins.outcomes import OutcomeSet, load_outcomes
from router_plugins.routers import LearnedRouter, PromptBatch, RouterContext, logistic
from router_plugins.routers.cost_model import CostModel
from router_plugins.routers.lowrank import fit_lowrank

from .test_learned_router import FIXTURES, bag_of_words


def blind(texts: Sequence[str]) -> np.ndarray:
    """An embedding that sees nothing: whatever the router learns must come from the other features."""
    return np.zeros((len(texts), 8), dtype=np.float32)


def fenced_set(n: int = 120) -> OutcomeSet:
    """Only the first model solves prompts with a code fence, only the third the others; length varies independently of
    the fence, task and digits are the same, so only the format group can tell them apart. The first model's cost
    follows the fence, not the length."""
    train = load_outcomes(FIXTURES / "train.jsonl")
    texts, quality, cost = [], [], []
    for i in range(n):
        fenced = i % 2 == 0
        texts.append(("```\nxx = yy\n```" if fenced else "Please explain xx vs yy") + " " + "ab" * (i % 7))
        quality.append([1.0, 0.5, 0.0] if fenced else [0.0, 0.5, 1.0])
        cost.append([0.02 if fenced else 0.002, 0.001, 0.0001])
    return OutcomeSet([str(i) for i in range(n)], texts, [None] * n, ["synthetic"] * n, list(train.models),
                      np.array(quality), np.array(cost), dict(train.prices))  # fmt: skip


@pytest.fixture(scope="module")
def fenced() -> LearnedRouter:
    data = fenced_set()
    router = LearnedRouter(registry_for(data), RouterContext(static_embed=blind))
    router.fit(data)
    return router


def test_a_format_group_that_explains_the_outcomes_is_kept_and_used(fenced: LearnedRouter) -> None:
    assert "format" in fenced.format_groups
    loglik = fenced.fit_choices["format_loglik"]
    assert loglik["format"] > loglik["none"]
    prediction = fenced.predict(PromptBatch(["```\nzz = ww\n``` a", "Please explain zz vs ww a"], [None, None]))
    (code_big, _, code_small), (prose_big, _, prose_small) = prediction.quality
    assert code_big > 0.8 > 0.2 > code_small and prose_small > 0.8 > 0.2 > prose_big


def test_groups_that_explain_nothing_are_dropped() -> None:
    data = fenced_set()
    data.quality[:] = 0.5  # nobody's outcome depends on anything
    router = LearnedRouter(registry_for(data), RouterContext(static_embed=blind))
    router.fit(data)
    assert router.format_groups == []


def test_the_cost_model_follows_the_features_where_cost_does(fenced: LearnedRouter) -> None:
    assert fenced.fit_choices["cost"][0].startswith("ridge")  # the fence, not the length, sets its cost
    prediction = fenced.predict(PromptBatch(["```\nzz = ww\n``` a", "Please explain zz vs ww a"], [None, None]))
    assert prediction.cost[0, 0] == pytest.approx(0.02, rel=0.1)
    assert prediction.cost[1, 0] == pytest.approx(0.002, rel=0.1)


def test_cost_linear_in_length_keeps_the_linear_fit() -> None:
    rng = np.random.default_rng(0)
    chars = rng.integers(10, 3000, 200).astype(float)
    X = rng.normal(size=(200, 5))
    cost = np.column_stack([1e-4 + 2e-7 * chars, np.full(200, np.nan)])
    model = CostModel.fit(X, chars, cost)
    assert model.chosen == ["linear", "linear"]
    predicted = model.predict(X, chars)
    np.testing.assert_allclose(predicted[:, 0], cost[:, 0], rtol=1e-6)
    assert np.isnan(predicted[:, 1]).all()  # nothing recorded: the router falls back to the registry's prices
    linear, weights, extra = model.arrays(5).values()
    again = CostModel.from_arrays(linear, weights, extra).predict(X, chars)
    np.testing.assert_array_equal(again, predicted)


def test_a_vanishing_shared_part_leaves_the_per_model_logistic_regression() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 4))
    Q = (rng.random((300, 3)) < 1 / (1 + np.exp(-(X @ rng.normal(size=(4, 3)))))).astype(float)
    Q[rng.random(Q.shape) < 0.2] = np.nan
    C = np.array([0.3, 1.0, 3.0])
    coef, intercept = fit_lowrank(X, Q, C, rank=2, C_shared=1e-4)
    reference = logistic.fit_logistic(X, Q, C)
    np.testing.assert_allclose(coef, reference[0], atol=2e-3)
    np.testing.assert_allclose(intercept, reference[1], atol=2e-3)


def test_the_artifact_keeps_format_groups_and_the_ridge_cost(fenced: LearnedRouter, tmp_path: Path) -> None:
    loaded = LearnedRouter(fenced._registry, RouterContext(static_embed=blind))
    path = fenced.save(tmp_path)
    loaded.load(path)
    assert loaded.format_groups == fenced.format_groups
    with np.load(path) as saved:  # what inner CV chose is on record beside the weights
        choices = json.loads(str(saved["meta"]))["choices"]
    assert choices["structure"] == fenced.fit_choices["structure"] and choices["cost"] == fenced.fit_choices["cost"]
    batch = PromptBatch(["```\nzz = ww\n``` a", "Please explain zz vs ww a", "tell me"], [None, None, None])
    before, after = fenced.predict(batch), loaded.predict(batch)
    np.testing.assert_array_equal(after.quality, before.quality)
    np.testing.assert_array_equal(after.cost, before.cost)


def test_a_v1_artifact_from_before_the_refinements_still_serves(tmp_path: Path) -> None:
    train = load_outcomes(FIXTURES / "train.jsonl")
    plain = type("Plain", (LearnedRouter,), {"refine": False})(
        registry_for(train), RouterContext(static_embed=bag_of_words)
    )
    plain.fit(train)
    path = plain.save(tmp_path)
    with np.load(path) as saved:  # as session 6 wrote it: format v1, linear cost only
        arrays = {k: saved[k] for k in ("coef", "intercept", "cost", "counts")}
        meta = json.loads(str(saved["meta"]))
    meta["format"] = "autoroute-learned-v1"
    del meta["format_groups"]
    old = tmp_path / "learned-old.npz"
    np.savez(old, meta=np.array(json.dumps(meta)), **arrays)
    loaded = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    loaded.load(old)
    batch = PromptBatch(train.texts[:5], train.tasks[:5])
    np.testing.assert_array_equal(loaded.predict(batch).quality, plain.predict(batch).quality)
    np.testing.assert_array_equal(loaded.predict(batch).cost, plain.predict(batch).cost)


def test_logged_feedback_one_outcome_per_prompt_and_a_model_never_served() -> None:
    """As the gateway's trainer sees it: each prompt scored on the one model it went to, one model never chosen,
    costs recorded for some calls only. Every inner-CV step runs (no warning: pytest makes them errors)."""
    data = fenced_set(150)
    rng = np.random.default_rng(3)
    served = rng.choice([0, 2], len(data))  # the middle model is never served
    keep = np.zeros(data.quality.shape, dtype=bool)
    keep[np.arange(len(data)), served] = True
    data.quality[~keep] = np.nan
    data.cost[~keep | (rng.random(data.cost.shape) < 0.3)] = np.nan
    router = LearnedRouter(registry_for(data), RouterContext(static_embed=blind))
    router.fit(data)
    assert {"format_groups", "structure", "scale", "cost"} <= set(router.fit_choices)
    prediction = router.predict(PromptBatch(["```\nzz = ww\n``` a", "Please explain zz vs ww a"], [None, None]))
    assert np.isfinite(prediction.quality).all() and np.isfinite(prediction.cost[:, [0, 2]]).all()
    assert prediction.quality[0, 0] > prediction.quality[1, 0] and prediction.quality[1, 2] > prediction.quality[0, 2]


def test_separable_outcomes_with_huge_logits_fit_without_overflow() -> None:
    """A feature that separates the outcomes drives some logits below -88, where float32 exp(-z) overflows: the
    sigmoid is exactly 0 there and the fits say nothing (pytest makes warnings errors)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)) * 200
    Q = (X[:, :2] > 0).astype(float)
    for coef, _ in (fit_lowrank(X, Q, np.array([100.0, 100.0]), 1, 100.0), logistic.fit_logistic(X, Q, 100.0)):
        assert np.isfinite(coef).all()
