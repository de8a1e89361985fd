"""Off-policy evaluation and the champion/challenger gate of the background trainer."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from proxy.evaluation.offpolicy import LoggedDecision, evaluate_policy, mean_reward_model
from proxy.events import DecisionRecord, FeedbackRecord, PerformanceRecord
from proxy.learning import challenge, compute_winrates
from proxy.store import SQLiteStore
from router_plugins.outcomes import from_feedback
from router_plugins.registry import LiteLLMParams, ModelEntry, Registry
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


def test_a_better_challenger_is_promoted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    _log(store, 0, 300, flipped=False, seed=1)
    _artifact(tmp_path, flipped=True)
    result = challenge(_registry(), store, tmp_path / "artifacts", RouterContext(static_embed=bag_of_words))
    assert result is not None and result.promoted, result
    assert result.challenger.dr > 0.8 > 0.2 > result.champion.dr
    assert result.champion_version == "champion-bad" and current_artifact(tmp_path / "artifacts") == result.path
    store.close()


def test_a_worse_challenger_is_rejected(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    _log(store, 0, 210, flipped=True, seed=2)  # older: misleading feedback, what the challenger learns from
    _log(store, 210, 90, flipped=False, seed=3)  # newest 30 %: the truth, what both are scored on
    champion = _artifact(tmp_path, flipped=False)
    result = challenge(_registry(), store, tmp_path / "artifacts", RouterContext(static_embed=bag_of_words))
    assert result is not None and not result.promoted and result.path is None
    assert result.champion.dr > result.challenger.dr
    assert current_artifact(tmp_path / "artifacts") == champion, "the champion keeps serving"
    store.close()


def test_too_little_feedback_decides_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    _log(store, 0, 20, flipped=False, seed=1)
    assert challenge(_registry(), store, tmp_path / "artifacts", RouterContext(static_embed=bag_of_words)) is None
    store.close()


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
    assert forced["gate"]["promoted"] and current_artifact(tmp_path / "artifacts") != champion
    store = SQLiteStore(tmp_path / "autoroute.db")
    (event,) = store.learning_events()
    assert event["kind"] == "rejection" and event["scores"]["champion"]["dr"] > event["scores"]["challenger"]["dr"]
    store.close()


def test_autoroute_train_promotes_a_better_version(tmp_path: Path, no_table: None) -> None:
    from proxy.training import train

    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    store = SQLiteStore(tmp_path / "autoroute.db")
    _log(store, 0, 300, flipped=False, seed=1)
    store.close()
    champion = _artifact(tmp_path, flipped=True)
    report = train(config, [], tmp_path, folds=2)
    assert report["gate"]["promoted"] and current_artifact(tmp_path / "artifacts") not in (None, champion)
    assert report["cv"]["prompts"] == 210
