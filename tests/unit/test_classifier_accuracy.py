"""Accuracy of the cheap layers (1-2) on the hand-written dev set of user-style prompts, with the default taxonomy.

No transformer here: the distilled static table only (built once into .pytest_cache when missing, ~30 s).
The floors are what the layers reach today, a little under: a drop means a change made them worse.
Measured: keywords decide 71% at 97% precision; defaults 0.77 (the unsure fall back to chat, left for layers 3-4);
standalone with the static threshold at 0.4, 0.86. The dev set was used to tune; see the holdout set for an
estimate of the accuracy on unseen prompts.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from router_plugins.classify import StaticEmbedder, TaskClassifier, build_classifier
from router_plugins.registry import ClassifierSettings, LayerSettings, Registry, parse_registry

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tasks"
CACHE = Path(__file__).parents[2] / ".pytest_cache" / "autoroute-data"
TASKS = (
    "chat", "code_review", "coding", "debugging", "documentation", "extraction", "knowledge", "math", "planning",
    "reasoning", "summarization", "testing", "translation", "writing",
)  # fmt: skip


def load(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def registry() -> Registry:
    """Layers 1-2 as a registry without a text model uses them: keyword rules deciding above 0.55."""
    return parse_registry(
        "models:\n  - {name: m, litellm_params: {model: openai/m}}\n"
        "router: {classifier: {keywords: {threshold: 0.55}, text_model: {enabled: false}}}\n"
    )


@pytest.fixture(scope="module")
def static() -> StaticEmbedder:
    return StaticEmbedder.load_or_build(CACHE)


def accuracy(classifier: TaskClassifier, records: list[dict[str, object]]) -> float:
    right = sum(classifier.classify(str(r["text"])).task in r["accept"] for r in records)  # type: ignore[operator]
    return right / len(records)


@pytest.mark.parametrize("name", ["user_prompts.jsonl", "user_prompts_holdout.jsonl"])
def test_the_labelled_sets_are_well_formed(name: str) -> None:
    records = load(name)

    assert Counter(r["task"] for r in records).keys() == set(TASKS)
    assert min(Counter(r["task"] for r in records).values()) >= (15 if name == "user_prompts.jsonl" else 6)
    for record in records:
        assert set(record) == {"text", "task", "accept", "source"}
        assert record["task"] in record["accept"] and set(record["accept"]) <= set(TASKS)  # type: ignore[operator]
    assert len({r["text"] for r in records}) == len(records)


def test_dev_and_holdout_share_no_prompt_with_each_other_or_the_examples(registry: Registry) -> None:
    dev, holdout = ({str(r["text"]) for r in load(n)} for n in ("user_prompts.jsonl", "user_prompts_holdout.jsonl"))
    examples = {e for task in registry.tasks for e in (task.description, *task.examples)}

    assert not dev & holdout and not dev & examples and not holdout & examples


def test_keyword_layer_is_precise_when_it_decides(registry: Registry) -> None:
    records = load("user_prompts.jsonl")
    classifier = build_classifier(registry, None)

    decided = [(classifier.classify(str(r["text"])), r) for r in records]
    decided = [(c, r) for c, r in decided if c.layer == "keywords"]

    assert len(decided) / len(records) >= 0.68
    assert sum(c.task in r["accept"] for c, r in decided) / len(decided) >= 0.95  # type: ignore[operator]


def test_layers_1_2_with_default_thresholds(registry: Registry, static: StaticEmbedder) -> None:
    classifier = build_classifier(registry, static)

    assert accuracy(classifier, load("user_prompts.jsonl")) >= 0.76


def test_layers_1_2_standalone(registry: Registry, static: StaticEmbedder) -> None:
    settings = dataclasses.replace(ClassifierSettings(), static_embedding=LayerSettings(True, 0.4))
    standalone = dataclasses.replace(registry, router=dataclasses.replace(registry.router, classifier=settings))

    assert accuracy(build_classifier(standalone, static), load("user_prompts.jsonl")) >= 0.85


def test_static_layer_is_precise_above_its_default_threshold(registry: Registry, static: StaticEmbedder) -> None:
    classifier = build_classifier(registry, static)
    records = load("user_prompts.jsonl")

    results = [(classifier.classify(str(r["text"])), r) for r in records]
    by_static = [(c, r) for c, r in results if c.layer == "static_embedding"]

    assert len(by_static) >= 15
    assert sum(c.task in r["accept"] for c, r in by_static) / len(by_static) >= 0.9  # type: ignore[operator]
