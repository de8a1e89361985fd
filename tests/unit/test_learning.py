"""Off-policy evaluation and the champion/challenger gate of the background trainer."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from proxy.evaluation.offpolicy import (
    MAX_WEIGHT,
    LoggedDecision,
    PolicyValue,
    effective_sample_size,
    evaluate_policy,
    mean_reward_model,
    on_policy_value,
)
from proxy.events import DecisionRecord, FeedbackRecord, PerformanceRecord
from proxy.learning import challenge, compute_winrates, gate
from proxy.store import SQLiteStore
from router_plugins.outcomes import from_feedback
from router_plugins.registry import LearningSettings, LiteLLMParams, ModelEntry, Registry
from router_plugins.routers import LearnedRouter, RouterContext
from router_plugins.routers.learned import current_artifact

from .test_learned_router import bag_of_words

MODELS = ("solver", "writer", "cheap")


def test_ips_snips_and_dr_on_a_known_log() -> None:
    logged = [
        LoggedDecision("t", "a", 0.5, 1.0),
        LoggedDecision("t", "b", 0.5, 0.0),
        LoggedDecision("t", "a", 0.25, 0.0),
        LoggedDecision("t", "b", 1.0, 1.0),
    ]
    value = evaluate_policy(logged, ["a", "a", "a", "b"], lambda task, m: 0.5)
    # Matches: rows 0 (w 2, r 1), 2 (w 4, r 0), 3 (w 1, r 1). IPS = (2 + 0 + 1) / 4; SNIPS = 3 / 7.
    assert value.ips == pytest.approx(0.75) and value.snips == pytest.approx(3 / 7) and value.matched == 3
    # DR = mean(0.5 + w·(r − 0.5)) = (0.5 + 1) + 0.5 + (0.5 − 2) + (0.5 + 0.5) → 1.5, 0.5, −1.5, 1.0 → 0.375.
    assert value.dr == pytest.approx(0.375)
    clipped = evaluate_policy([LoggedDecision("t", "a", 1e-4, 1.0)], ["a"], lambda task, m: 0.0)
    assert clipped.ips == pytest.approx(10.0), "a tiny propensity's weight is clipped at MAX_WEIGHT"
    q = mean_reward_model(logged, prior_weight=0.0)
    assert q("t", "a") == pytest.approx(0.5) and q("t", "b") == pytest.approx(0.5) and q("x", "zz") == 0.5


def _registry() -> Registry:
    models = tuple(
        ModelEntry(name=n, litellm_params=LiteLLMParams(model=f"openai/{n}"), input_cost_per_mtok=1.0,
                   output_cost_per_mtok=1.0)
        for n in MODELS
    )  # fmt: skip
    return Registry(models=models)


def _prompt(i: int) -> tuple[str, str, str]:
    """(text, task, the model that answers it well): math goes to solver, writing to writer."""
    if i % 2:
        return f"solve the equation number {i} for x and integrate", "math", "solver"
    return f"write a short poem about autumn leaves number {i}", "writing", "writer"


def _log(store: SQLiteStore, start: int, n: int, flipped: bool, seed: int) -> None:
    """Uniformly random routing (propensity 1/3) with the reward 1 when the right model served (or wrong, flipped)."""
    rng = random.Random(seed)
    records = []
    for i in range(start, start + n):
        text, task, good = _prompt(i)
        model = rng.choice(MODELS)
        reward = float((model == good) != flipped)
        rid = f"r{i}"
        records += [
            DecisionRecord(rid, 1000.0 + i, "auto", "quality", task, 1.0, "keywords", False, [], model, model, "logged",
                           [{"model": m} for m in MODELS], "winrate", "v", 1 / 3, False, "success", 1, len(text), text),
            PerformanceRecord(rid, 1000.0 + i, 1, model, task, "success", 100.0, 100.0, 10, 10, 0.001, "provider"),
            FeedbackRecord(rid, 1000.5 + i, reward),
        ]  # fmt: skip
    store.write_batch(records)


def _artifact(tmp_path: Path, flipped: bool) -> Path:
    """A champion trained on 200 outcomes, right or wrong."""
    registry = _registry()
    rows = []
    for i in range(200):
        text, task, good = _prompt(i)
        for model in MODELS:
            rows.append({"request_id": f"{i}{model}", "prompt_text": text, "task": task, "model": model,
                         "quality": float((model == good) != flipped), "cost_usd": 0.001})  # fmt: skip
    router = LearnedRouter(registry, RouterContext(static_embed=bag_of_words))
    router.fit(from_feedback(rows, list(MODELS)))
    router.version = "champion-" + ("bad" if flipped else "good")
    return router.save(tmp_path / "artifacts")


def test_a_better_challenger_is_promoted_on_enough_evidence(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    # Uniformly random logging (propensity 1/3): of the newest 30 % (900), the challenger agrees with about 300,
    # each of weight 3, so its estimate rests on an ESS of about 300 (the default minimum is 200).
    _log(store, 0, 3000, flipped=False, seed=1)
    _artifact(tmp_path, flipped=True)
    result = challenge(_registry(), store, tmp_path / "artifacts", RouterContext(static_embed=bag_of_words))
    assert result is not None and result.promoted, result
    assert result.challenger is not None and result.champion is not None
    assert result.challenger.dr > 0.8 > 0.2 > result.champion.dr
    assert 250 < result.challenger.ess < 350 and result.reason.startswith("promoted")
    assert result.evidence["challenger_lower"] > result.evidence["champion_upper"]
    assert min(result.evidence["outcomes"].values()) >= 30 and set(result.evidence["routes_to"]) == {"solver", "writer"}
    assert result.champion_version == "champion-bad" and current_artifact(tmp_path / "artifacts") == result.path
    store.close()


def test_the_same_better_challenger_is_not_promoted_on_too_little_overlap(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    _log(store, 0, 300, flipped=False, seed=1)  # 90 held out: it agrees with ~30 of them, ESS ~30
    champion = _artifact(tmp_path, flipped=True)
    result = challenge(_registry(), store, tmp_path / "artifacts", RouterContext(static_embed=bag_of_words))
    assert result is not None and not result.promoted and result.path is None
    assert result.challenger is not None and result.challenger.dr > 0.8, "better by its point estimate"
    assert result.challenger.ess < 200 and "ESS" in result.reason and result.kind == "rejection"
    assert current_artifact(tmp_path / "artifacts") == champion, "the champion keeps serving"
    store.close()


def test_a_worse_challenger_is_rejected(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    _log(store, 0, 210, flipped=True, seed=2)  # older: misleading feedback, what the challenger learns from
    _log(store, 210, 90, flipped=False, seed=3)  # newest 30 %: the truth, what both are scored on
    champion = _artifact(tmp_path, flipped=False)
    result = challenge(_registry(), store, tmp_path / "artifacts", RouterContext(static_embed=bag_of_words))
    assert result is not None and not result.promoted and result.path is None
    assert result.challenger is not None and result.champion is not None
    assert result.champion.dr > result.challenger.dr
    assert "does not beat the champion's upper bound" in result.reason
    assert current_artifact(tmp_path / "artifacts") == champion, "the champion keeps serving"
    store.close()


def _value(dr: float, se: float, ess: float, matched: int = 300, n: int = 900) -> PolicyValue:
    return PolicyValue(dr, dr, dr, matched, n, se, ess)


def test_the_gate_names_every_missing_piece_of_evidence() -> None:
    settings = LearningSettings()
    z = 1.6448536
    champion = _value(0.5, 0.01, 900.0)
    outcomes = {"solver": 400, "writer": 400, "cheap": 2}
    ok, problems, evidence = gate(_value(0.6, 0.01, 300.0), champion, outcomes, {"solver": 500, "writer": 400},
                                  settings, 0.0)  # fmt: skip
    assert ok and not problems
    assert evidence["challenger_lower"] == pytest.approx(0.6 - z * 0.01, abs=1e-4)
    assert evidence["champion_upper"] == pytest.approx(0.5 + z * 0.01, abs=1e-4)
    assert evidence["confidence"] == 0.95 and evidence["ess"] == 300.0 and evidence["min_ess"] == 200.0
    # (a) one decision for a model trained on 2 outcomes: its prediction is the registry prior, not evidence.
    ok, problems, _ = gate(_value(0.6, 0.01, 300.0), champion, outcomes, {"solver": 899, "cheap": 1}, settings, 0.0)
    assert not ok and problems == ["too few training outcomes (< 30) for models it would route to: cheap 2"]
    # (b) the case: a high DR that rests on one logged agreement is the reward model's guess.
    ok, problems, _ = gate(_value(0.861, 0.01, 1.0, matched=1, n=415), champion, outcomes, {"solver": 415},
                           settings, 0.0)  # fmt: skip
    assert not ok and problems == ["ESS 1.0 < 200: it agrees with 1 of 415 logged decisions, too few to rest an "
                                   "estimate on"]  # fmt: skip
    # (c) better by its point estimate, not by its lower bound against the champion's upper bound.
    ok, problems, _ = gate(_value(0.52, 0.01, 300.0), champion, outcomes, {"solver": 900}, settings, 0.0)
    assert not ok and problems[0].startswith("its lower bound 0.5036 does not beat the champion's upper bound 0.5164")
    ok, problems, _ = gate(_value(0.6, 0.01, 300.0), champion, outcomes, {"solver": 900}, settings, 0.1)
    assert not ok and problems[0].endswith("+ margin 0.1")


def test_ess_is_how_many_logged_decisions_an_estimate_rests_on() -> None:
    logged = [LoggedDecision("t", "a", 0.9, 1.0)] * 100 + [LoggedDecision("t", "b", 0.05, 1.0)] * 5
    assert evaluate_policy(logged, ["a"] * 105, lambda t, m: 0.5).ess == pytest.approx(100.0), "equal weights: n"
    only_b = evaluate_policy(logged, ["b"] * 105, lambda t, m: 0.5)
    assert only_b.ess == pytest.approx(5.0) and only_b.matched == 5
    mixed = evaluate_policy(logged, ["a"] * 99 + ["b"] * 6, lambda t, m: 0.5)
    # 99 weights of 1/0.9 and 5 of 20: (110 + 100)² / (99/0.81 + 2000).
    assert mixed.ess == pytest.approx(210**2 / (99 / 0.81 + 2000))
    assert effective_sample_size([]) == 0.0 and effective_sample_size([0.0, 0.0]) == 0.0
    # SE: of the per-decision DR terms; the logging policy's own value is its mean reward with ESS n.
    value = evaluate_policy(logged[:4] + logged[-2:], ["a"] * 4 + ["b"] * 2, lambda t, m: 0.5)
    terms = np.array([0.5 + 0.5 / 0.9] * 4 + [0.5 + min(20.0, MAX_WEIGHT) * 0.5] * 2)
    assert value.se == pytest.approx(terms.std(ddof=1) / np.sqrt(6))
    on_policy = on_policy_value([LoggedDecision("t", "a", 0.9, r) for r in (1.0, 0.0, 1.0, 1.0)])
    assert on_policy.dr == 0.75 and on_policy.ess == 4.0 and on_policy.se == pytest.approx(0.25)


def test_win_rates_come_from_feedback_and_failures_in_the_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    _log(store, 0, 60, flipped=False, seed=4)
    store.write_batch([PerformanceRecord("r0", 1000.0, 2, "cheap", "writing", "failure", 5.0, None, None, None, None,
                                         None, "APIError")])  # fmt: skip
    state = compute_winrates(store, _registry(), now=1100.0)
    assert state.cell("math", "solver").successes > 0 and state.cell("math", "writer").successes == 0
    assert state.cell("writing", "writer").successes > state.cell("writing", "writer").failures == 0
    failures = state.cell("writing", "cheap").failures
    assert failures >= 1 and np.isfinite(failures)
    store.close()


CONFIG = """
models:
""" + "".join(
    f"  - {{name: {n}, litellm_params: {{model: openai/{n}}}, input_cost_per_mtok: 1.0, output_cost_per_mtok: 1.0}}\n"
    for n in MODELS
)


class _BagOfWords:
    embed = staticmethod(bag_of_words)


@pytest.fixture
def no_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """`autoroute train` reads the static table; a bag of words stands in (the table takes ~30 s to build)."""
    from router_plugins.classify import StaticEmbedder

    monkeypatch.setattr(StaticEmbedder, "load_or_build", staticmethod(lambda data_dir: _BagOfWords()))


def test_autoroute_train_is_gated_by_the_champion(tmp_path: Path, no_table: None) -> None:
    from proxy.training import train

    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    store = SQLiteStore(tmp_path / "autoroute.db")
    _log(store, 0, 210, flipped=True, seed=2)  # misleading older feedback: what the new version learns from
    _log(store, 210, 90, flipped=False, seed=3)  # the newest 30 %, held out: the truth
    store.close()
    champion = _artifact(tmp_path, flipped=False)
    report = train(config, [], tmp_path, folds=0)
    assert report["gate"]["promoted"] is False and report["artifact"] is None
    assert current_artifact(tmp_path / "artifacts") == champion
    assert report["prompts"] == 210, "the held-out decisions are not trained on"
    forced = train(config, [], tmp_path, folds=0, force=True)
    assert forced["gate"]["promoted"] and forced["gate"]["forced"]
    assert current_artifact(tmp_path / "artifacts") not in (None, champion)
    store = SQLiteStore(tmp_path / "autoroute.db")
    newest, rejection = store.learning_events()
    assert rejection["kind"] == "rejection" and rejection["champion_version"] == "champion-good"
    assert rejection["scores"]["champion"]["dr"] > rejection["scores"]["challenger"]["dr"]
    assert {"ess", "challenger_lower", "champion_upper", "outcomes", "routes_to"} <= set(rejection["scores"]["gate"])
    assert rejection["version"] == report["version"] and rejection["reason"].startswith("not promoted")
    assert newest["kind"] == "forced-promotion" and newest["version"] == forced["version"]
    assert newest["champion_version"] == "champion-good" and "--force" in newest["reason"]
    store.close()


def test_autoroute_train_promotes_a_better_version(tmp_path: Path, no_table: None) -> None:
    from proxy.training import train

    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    store = SQLiteStore(tmp_path / "autoroute.db")
    _log(store, 0, 3000, flipped=False, seed=1)
    store.close()
    champion = _artifact(tmp_path, flipped=True)
    report = train(config, [], tmp_path, folds=2)
    assert report["gate"]["promoted"] and current_artifact(tmp_path / "artifacts") not in (None, champion)
    assert report["cv"]["prompts"] == 2100 and report["gate"]["gate"]["ess"] >= 200
    store = SQLiteStore(tmp_path / "autoroute.db")
    (event,) = store.learning_events()
    assert (event["kind"], event["version"], event["champion_version"]) == ("promotion", report["version"],
                                                                          "champion-bad")  # fmt: skip
    store.close()


def test_two_feedback_scores_do_not_promote_a_router(tmp_path: Path, no_table: None) -> None:
    """The issue's demo: after two scored answers `autoroute train` promoted a router that sent everything to one
    model. Now it is not promoted (and says why); `--force` still can, and is recorded as forced."""
    from proxy.training import train

    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    store = SQLiteStore(tmp_path / "autoroute.db")
    _log(store, 0, 2, flipped=False, seed=5)
    store.close()
    report = train(config, [], tmp_path, folds=0)
    assert report["gate"]["promoted"] is False and report["artifact"] is None
    assert current_artifact(tmp_path / "artifacts") is None
    assert "--force" in report["gate"]["reason"] and report["gate"]["gate"]["logged_decisions"] == 2
    assert max(report["gate"]["gate"]["outcomes"].values()) <= 2
    store = SQLiteStore(tmp_path / "autoroute.db")
    (event,) = store.learning_events()
    assert event["kind"] == "rejection" and event["champion_version"] is None
    store.close()
    # Forced, the router it writes still predicts every model from its prior: 2 outcomes are fewer than 30.
    forced = train(config, [], tmp_path, folds=0, force=True)
    assert forced["gate"]["forced"] and current_artifact(tmp_path / "artifacts") is not None
    router = LearnedRouter(_registry(), RouterContext(static_embed=bag_of_words))
    router.load(Path(forced["artifact"]))
    assert not any(router.learned(m) for m in MODELS)
