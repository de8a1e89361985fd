"""The learned router's regularisation is chosen inside the training data: the folds an evaluation reports are never
used to fit or to score a candidate C."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from proxy.evaluation.offline import evaluate_cv, registry_for
from router_plugins.outcomes import OutcomeSet, kfold_indices, load_outcomes
from router_plugins.routers import LearnedRouter, RouterContext, fitting, logistic
from router_plugins.routers.cost_model import CostModel

from .test_learned_router import FIXTURES, bag_of_words, synthetic

ID_COLUMN = 32
"""The feature column holding each prompt's identity (after the 32 bag-of-words directions)."""


def _identity(text: str) -> float:
    return (zlib.crc32(text.encode()) % 100_003) / 100_003


def tagged_embed(texts: Sequence[str]) -> np.ndarray:
    """Bag of words plus one column that names the prompt, so every feature row can be traced back to its prompt."""
    return np.hstack([bag_of_words(texts), np.array([[_identity(t)] for t in texts], dtype=np.float32)])


@pytest.fixture
def data() -> OutcomeSet:
    return synthetic(load_outcomes(FIXTURES / "train.jsonl"), n=40)


def test_cross_validation_never_selects_c_on_the_reported_folds(
    data: OutcomeSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every fit, prediction, cost fit and routing score inside `LearnedRouter.fit` (format groups, C, structure,
    scale, cost model) touches only the outer fold's training rows, and the last fit uses all of them."""
    folds: list[list[tuple[str, set[float]]]] = []
    real_fit = LearnedRouter.fit

    def fit(self: LearnedRouter, data: OutcomeSet) -> None:
        folds.append([])
        real_fit(self, data)

    def rows(X: object) -> set[float]:
        if isinstance(X, OutcomeSet):
            return {float(np.float32(_identity(t))) for t in X.texts}
        return {float(v) for v in np.asarray(X)[:, ID_COLUMN]}

    def spy(module: object, name: str, label: str) -> None:
        real = getattr(module, name)

        def wrapper(X: object, *args: object, **kwargs: object) -> object:
            folds[-1].append((label, rows(X)))
            return real(X, *args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    monkeypatch.setattr(LearnedRouter, "fit", fit)
    for module in (logistic, fitting):
        spy(module, "fit_logistic", "fit")
        spy(module, "predict_logistic", "score")
    spy(fitting, "fit_lowrank", "fit")
    spy(fitting, "headline_score", "routing score")
    real_cost = CostModel.fit.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(CostModel, "fit", classmethod(lambda cls, X, *a, **k: (
        folds[-1].append(("cost", rows(X))), real_cost(cls, X, *a, **k))[1]))  # fmt: skip
    evaluate_cv("learned", data, 4, context=RouterContext(static_embed=tagged_embed), seed=3)

    ids = np.array([float(np.float32(_identity(t))) for t in data.texts])
    assert len(set(ids)) == len(data), "every prompt is traceable"
    outer = kfold_indices(len(data), 4, 3)
    assert len(folds) == len(outer), "one fit per reported fold"
    for calls, test_idx in zip(folds, outer):
        reported = set(ids[test_idx])
        train = set(ids) - reported
        kinds = {kind for kind, _ in calls}
        assert {"fit", "score", "routing score", "cost"} <= kinds, "every choice was made by inner CV"
        for _, seen in calls:
            assert seen <= train and not seen & reported
        assert [c for c in calls if c[0] == "fit"][-1] == ("fit", train), "the final fit uses the whole training split"


def test_each_model_gets_a_c_from_the_grid_and_the_artifact_keeps_it(data: OutcomeSet, tmp_path: Path) -> None:
    router = LearnedRouter(registry_for(data), RouterContext(static_embed=bag_of_words))
    router.fit(data)
    assert set(router.regularisation) == set(data.models)
    chosen = router.fit_choices
    assert set(chosen["C"]) <= set(logistic.C_GRID) and chosen["scale"] in fitting.C_SCALES
    effective = [c * chosen["factor"] * chosen["scale"] for c in chosen["C"]]
    assert [router.regularisation[m] for m in data.models] == pytest.approx(effective)
    loaded = LearnedRouter(registry_for(data), RouterContext(static_embed=bag_of_words))
    loaded.load(router.save(tmp_path))
    assert loaded.regularisation == router.regularisation


def test_the_joint_fit_is_sklearns_logistic_regression_on_soft_labels() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    Q = np.clip(1 / (1 + np.exp(-(X @ rng.normal(size=(6, 3))))) + rng.normal(0, 0.1, (300, 3)), 0, 1)
    Q[rng.random(Q.shape) < 0.2] = np.nan
    coef, intercept = logistic.fit_logistic(X, Q, np.array([0.1, 1.0, 3.0]))
    for j, C in enumerate((0.1, 1.0, 3.0)):
        known = np.isfinite(Q[:, j])
        Xk, y = X[known], Q[known, j]
        reference = LogisticRegression(C=C, tol=1e-8, max_iter=2000).fit(
            np.vstack([Xk, Xk]), np.r_[np.ones(len(Xk)), np.zeros(len(Xk))], sample_weight=np.r_[y, 1 - y]
        )
        np.testing.assert_allclose(coef[j], reference.coef_[0], atol=2e-3)
        np.testing.assert_allclose(intercept[j], reference.intercept_[0], atol=2e-3)


def test_large_training_sets_select_c_on_a_subsample_and_return_its_out_of_fold_predictions() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 5))
    Q = (rng.random((400, 2)) < 1 / (1 + np.exp(-(X @ rng.normal(size=(5, 2)))))).astype(float)
    full = logistic.fit_selected(X, Q, selection_rows=1000)
    sampled = logistic.fit_selected(X, Q, selection_rows=120)
    assert full.oof_rows is not None and full.oof is not None and len(full.oof_rows) == 400
    assert sampled.oof_rows is not None and sampled.oof is not None
    assert len(sampled.oof_rows) == 120 and len(set(sampled.oof_rows.tolist())) == 120
    assert sampled.oof.shape == (120, 2) and np.isfinite(sampled.oof).all()
    # The out-of-fold predictions are the inner folds' at each model's chosen C: their loss is the chosen C's.
    assert full.inner_loss is not None
    chosen_loss = [full.inner_loss[float(c)][j] for j, c in enumerate(full.C)]
    np.testing.assert_allclose(logistic.soft_log_loss(full.oof, Q), chosen_loss, rtol=1e-6)
    # The final fit still uses every row: it equals a plain fit at the chosen constants.
    coef, intercept = logistic.fit_logistic(X, Q, sampled.C)
    np.testing.assert_allclose(sampled.coef, coef, atol=2e-3)
    np.testing.assert_allclose(sampled.intercept, intercept, atol=2e-3)


def test_the_learned_router_fits_a_sample_of_max_train_rows(data: OutcomeSet) -> None:
    import dataclasses

    registry = registry_for(data)
    capped = dataclasses.replace(registry, learning=dataclasses.replace(registry.learning, max_train_rows=100))
    big = data.subset(np.arange(len(data)).repeat(2))  # 160 rows
    router = LearnedRouter(capped, RouterContext(static_embed=bag_of_words))
    router.fit(big)
    assert (router.offered, router.trained_on) == (160, 100)
    again = LearnedRouter(capped, RouterContext(static_embed=bag_of_words))
    again.fit(big)
    np.testing.assert_array_equal(router._coef, again._coef)  # the sample is reproducible
    with pytest.raises(ValueError, match="max_train_rows"):
        dataclasses.replace(registry.learning, max_train_rows=10)
    with pytest.raises(ValueError, match="selection_rows"):
        dataclasses.replace(registry.learning, selection_rows=10)


def test_every_inner_cv_choice_is_made_on_the_selection_subsample(
    data: OutcomeSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    registry = registry_for(data)
    small = dataclasses.replace(registry, learning=dataclasses.replace(registry.learning, selection_rows=100))
    big = data.subset(np.arange(len(data)).repeat(2))  # 160 rows
    seen: list[int] = []
    real = fitting.select_constants

    def select(X: np.ndarray, *args: object) -> object:
        seen.append(len(X))
        return real(X, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(fitting, "select_constants", select)
    router = LearnedRouter(small, RouterContext(static_embed=bag_of_words))
    router.fit(big)
    assert seen and set(seen) == {100}, "format groups and C chosen on the 100-row subsample"
    assert router.trained_on == 160 and router._coef.shape[0] == len(data.models)
