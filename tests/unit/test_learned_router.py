"""The learned router: fitting, preference utilities, constraints, artifacts, and `autoroute train`."""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from proxy.evaluation.offline import registry_for
from router_plugins.outcomes import OutcomeSet, concatenate, from_feedback, load_outcomes
from router_plugins.routers import LearnedRouter, PromptBatch, RouterContext
from router_plugins.routers.learned import current_artifact
from router_plugins.types import ChatRequest, Classification

FIXTURES = Path(__file__).parent.parent / "fixtures" / "outcomes"


def bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """A stand-in for the static table: each word hashes to one of 32 directions."""
    out = np.zeros((len(texts), 32), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, zlib.crc32(word.encode()) % 32] += 1
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


@pytest.fixture
def train() -> OutcomeSet:
    return load_outcomes(FIXTURES / "train.jsonl")


def synthetic(train: OutcomeSet, n: int = 40) -> OutcomeSet:
    """Coding prompts only big solves; math prompts mid and small solve and big fails half the time."""
    texts, tasks, quality, cost = [], [], [], []
    for i in range(n):
        texts.append(f"Write a Python function number {i} that sorts and filters a list")
        tasks.append("coding")
        quality.append([1.0, 0.5 * (i % 2), 0.0])
        texts.append(f"What is {i} times {i + 3} plus {2 * i}?")
        tasks.append("math")
        quality.append([float(i % 2), 1.0, 1.0])
    for text in texts:
        cost.append([0.03 + len(text) * 1e-6, 0.003 + len(text) * 1e-7, 0.0002 + len(text) * 1e-8])
    return OutcomeSet([str(i) for i in range(len(texts))], texts, tasks, ["synthetic"] * len(texts), list(train.models),
                      np.array(quality), np.array(cost), dict(train.prices))  # fmt: skip


@pytest.fixture
def router(train: OutcomeSet) -> LearnedRouter:
    learned = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    learned.fit(synthetic(train))
    return learned


def _route(router: LearnedRouter, text: str, task: str, preference: str = "balanced", **kw: float) -> list[str]:
    request = ChatRequest("r", "auto", ({"role": "user", "content": text},), preference=preference, **kw)  # type: ignore[arg-type]
    decision = router.route(request, Classification(task, 1.0, "keywords"), router._registry.models)
    return [] if decision is None else [c.model for c in decision.alternatives]


def test_predictions_follow_the_training_outcomes(router: LearnedRouter) -> None:
    prediction = router.predict(PromptBatch(["Write a Python function that sorts.", "What is 3 times 9?"], ["coding", "math"]))
    assert prediction.models == ("big", "mid", "small")
    coding, math = prediction.quality
    # Trained on coding: big 1.0 > mid .25 > small 0; math: small and mid 1.0, big .5.
    assert coding[0] > coding[1] > coding[2]
    assert math[2] > math[0] and math[1] > math[0]
    assert ((prediction.quality > 0) & (prediction.quality < 1)).all()
    # Cost is fitted per model on prompt length: big is dearest, small cheapest.
    assert prediction.cost[0, 0] > prediction.cost[0, 1] > prediction.cost[0, 2] > 0


def test_preferences_change_the_choice(train: OutcomeSet) -> None:
    registry = registry_for(train)  # weights as written (calibrated ones: tests/unit/test_operating_points.py)
    registry = dataclasses.replace(registry, router=dataclasses.replace(registry.router, calibrate_preferences=False))
    router = LearnedRouter(registry, RouterContext(static_embed=bag_of_words))
    router.fit(synthetic(train))
    # Coding: only big succeeds, so even the cost preference pays for it (0.95 − 0.6 beats 0.25 − 0.06).
    assert _route(router, "Write a Python function that sorts a list.", "coding", "quality")[0] == "big"
    assert _route(router, "Write a Python function that sorts a list.", "coding", "cost")[0] == "big"
    # Math: mid and small both succeed; cost decides between them, and big (which fails half the time) is last.
    assert _route(router, "What is 3 times 9 plus 4?", "math", "cost") == ["small", "mid", "big"]
    assert _route(router, "What is 3 times 9 plus 4?", "math", "quality")[-1] == "big"


def test_request_constraints_are_honoured(router: LearnedRouter) -> None:
    ranked = _route(router, "Write a Python function that sorts a list.", "coding", "quality", max_cost_per_1k=0.002)
    assert "big" not in ranked and ranked, "big costs (10 + 30) / 2 / 1000 = 0.02 per 1k"
    assert _route(router, "Write a haiku", "writing", "quality", min_quality=0.9999) == []


def test_artifact_round_trip_predicts_the_same(router: LearnedRouter, train: OutcomeSet, tmp_path: Path) -> None:
    path = router.save(tmp_path, extra={"cv": {"aiq": 0.5}})
    assert current_artifact(tmp_path) == path
    loaded = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    loaded.load(path)
    batch = PromptBatch(train.texts, train.tasks)
    assert loaded.version == router.version and loaded.models == router.models
    np.testing.assert_allclose(loaded.predict(batch).quality, router.predict(batch).quality)
    np.testing.assert_allclose(loaded.predict(batch).cost, router.predict(batch).cost)
    assert json.loads(str(np.load(path)["meta"]))["cv"] == {"aiq": 0.5}


def test_a_newer_artifact_replaces_the_pointer(router: LearnedRouter, train: OutcomeSet, tmp_path: Path) -> None:
    first = router.save(tmp_path)
    router.version = "later"
    second = router.save(tmp_path)
    assert first != second and first.exists() and current_artifact(tmp_path) == second
    assert json.loads((tmp_path / "learned-current.json").read_text())["version"] == "later"


def test_an_unfitted_router_does_not_decide(train: OutcomeSet) -> None:
    learned = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    assert _route(learned, "hello", "chat") == []


def test_models_without_training_outcomes_use_their_registry_prior(train: OutcomeSet) -> None:
    data = synthetic(train)
    data.quality[:, 1] = np.nan  # nothing known about mid
    learned = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    learned.fit(data)
    prediction = learned.predict(PromptBatch(["What is 2 times 2?"], ["math"]))
    assert prediction.quality[0, 1] == 0.5  # registry_for gives every model the default prior 0.5


def test_models_with_fewer_outcomes_than_the_minimum_keep_their_prior(train: OutcomeSet) -> None:
    data = synthetic(train)  # 80 prompts, every model known on each
    data.quality[10:, 2] = np.nan  # small: 10 outcomes, all of them failures on coding
    registry = registry_for(train)
    learned = LearnedRouter(registry, RouterContext(static_embed=bag_of_words))
    learned.fit(data)
    assert learned.outcome_counts() == {"big": 80, "mid": 80, "small": 10}
    assert learned.learned("big") and not learned.learned("small") and not learned.learned("unknown")
    prediction = learned.predict(PromptBatch(["What is 2 times 2?"], ["math"]))
    assert prediction.quality[0, 2] == 0.5, "below learning.min_model_outcomes (30): the registry prior"
    assert prediction.quality[0, 1] != 0.5
    request = ChatRequest("r", "auto", ({"role": "user", "content": "What is 2 times 2?"},))
    decision = learned.route(request, Classification("math", 1.0, "keywords"), registry.models)
    assert decision is not None
    notes = {c.model: c.note for c in decision.alternatives}
    assert notes["small"] == "registry prior: too few outcomes" and notes["big"] == "predicted"
    fewer = dataclasses.replace(registry, learning=dataclasses.replace(registry.learning, min_model_outcomes=10))
    lenient = LearnedRouter(fewer, RouterContext(static_embed=bag_of_words))
    lenient.fit(data)
    assert lenient.learned("small")
    assert lenient.predict(PromptBatch(["What is 2 times 2?"], ["math"])).quality[0, 2] != 0.5


def test_training_data_from_feedback_has_one_known_outcome_per_prompt(train: OutcomeSet) -> None:
    rows = [
        {"request_id": "a", "prompt_text": "sort a list", "task": "coding", "model": "mid", "quality": 0.5, "cost_usd": 0.001},
        {"request_id": "b", "prompt_text": "hi", "task": "chat", "model": "unknown-model", "quality": 1.0, "cost_usd": None},
    ]  # fmt: skip
    logged = from_feedback(rows, ["big", "mid", "small"])
    assert len(logged) == 1 and np.isnan(logged.quality[0, 0]) and logged.quality[0, 1] == 0.5
    joined = concatenate([train, logged], ["big", "mid", "small"])
    assert len(joined) == len(train) + 1
    learned = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    learned.fit(joined)  # NaN outcomes are masked, not learned as failures
    assert learned.trained_on == 7


def test_feature_importance_finds_the_informative_group(router: LearnedRouter, train: OutcomeSet) -> None:
    importance = router.feature_importance(synthetic(train))
    # The base groups, then each prompt-format group inner CV kept (in this set: whichever lowered the log loss).
    assert set(importance) == {"embedding", "length", "task", "digits", "code", *router.format_groups}
    # In the synthetic set the task alone separates who succeeds: shuffling it hurts most.
    assert max(importance, key=importance.get) in ("task", "embedding")
    assert importance["task"] > 0


def _latencies(router: LearnedRouter, text: str) -> dict[str, float]:
    request = ChatRequest("r", "auto", ({"role": "user", "content": text},), preference="latency")
    decision = router.route(request, Classification("math", 1.0, "keywords"), router._registry.models)
    assert decision is not None
    return {c.model: c.latency_ms for c in decision.alternatives}


def test_measured_latency_replaces_the_prior_and_moves_the_latency_choice(router: LearnedRouter) -> None:
    text = "What is 3 times 9 plus 4?"
    assert set(_latencies(router, text).values()) == {1000.0}, "before measurements: the registry prior"
    # small is measured slow (and slower for long prompts), mid fast: the latency preference now picks mid.
    samples = [("small", chars, 8000.0 * (1 + chars / 1000)) for chars in range(10, 2000, 20)]
    samples += [("mid", chars, 150.0) for chars in range(10, 2000, 20)]
    router.fit_latency(samples)
    latencies = _latencies(router, text)
    assert latencies["small"] > 4000 and latencies["mid"] < 250 and latencies["big"] == 1000.0
    assert _route(router, text, "math", "latency")[0] == "mid"
    long_prompt = _latencies(router, text + " and explain" * 300)
    assert long_prompt["small"] > latencies["small"], "latency grows with the prompt"


def test_few_latency_measurements_are_shrunk_to_the_prior(router: LearnedRouter, train: OutcomeSet, tmp_path: Path) -> None:
    router.fit_latency([("mid", 30, 10_000.0)])
    one = _latencies(router, "What is 2 plus 2?")["mid"]
    assert 1000.0 < one < 10_000.0 * 0.5, "one measurement is worth a tenth of the prior's weight in log space"
    router.fit_latency([("mid", 30, 10_000.0)] * 200)
    assert _latencies(router, "What is 2 plus 2?")["mid"] > 8000
    loaded = LearnedRouter(registry_for(train), RouterContext(static_embed=bag_of_words))
    loaded.load(router.save(tmp_path))
    assert loaded.latency == router.latency
