"""Labelled prompts for the embedding layers: loading, balancing across tasks and sources, and training weights."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from router_plugins.classify.training import (
    LabelledPrompt,
    balance,
    load_labelled,
    normalized,
    registry_prompts,
    training_weights,
)
from router_plugins.registry import TaskType


def prompts(task: str, source: str, n: int, origin: str = "labelled") -> list[LabelledPrompt]:
    return [LabelledPrompt(f"{task} {source} {i}", task, origin, source) for i in range(n)]  # type: ignore[arg-type]


def test_registry_prompts_are_descriptions_and_examples() -> None:
    tasks = [TaskType("a", description="about a", examples=("a1", "a2")), TaskType("b", examples=(" ",))]

    assert registry_prompts(tasks) == [
        LabelledPrompt("about a", "a", "registry", "registry"),
        LabelledPrompt("a1", "a", "registry", "registry"),
        LabelledPrompt("a2", "a", "registry", "registry"),
    ]


def test_load_labelled_reads_the_tasks_jsonl_format(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    rows = [
        {"id": "1", "text": "2+2?", "task": "math", "accept": ["math"], "source": "gsm8k"},
        {"text": "hi", "task": "chat"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")

    assert load_labelled(path) == [
        LabelledPrompt("2+2?", "math", "labelled", "gsm8k", ("math",)),
        LabelledPrompt("hi", "chat", "labelled", "train.jsonl", ("chat",)),
    ]
    assert load_labelled(path, origin="feedback")[0].origin == "feedback"


def test_load_labelled_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "task": "chat"}\n{"text": 3, "task": "chat"}\n')

    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_labelled(path)


def test_balance_caps_each_task_and_draws_evenly_across_sources() -> None:
    pool = [*prompts("math", "big", 100), *prompts("math", "small", 3), *prompts("math", "mid", 10)]
    pool += prompts("chat", "x", 2)

    chosen = balance(pool, per_task=12)

    # One from each source in turn (sources in name order: big, mid, small) until the cap; small runs out at 3.
    assert Counter(p.source for p in chosen if p.task == "math") == {"big": 5, "mid": 4, "small": 3}
    assert Counter(p.task for p in chosen) == {"math": 12, "chat": 2}


def test_balance_is_deterministic_for_a_seed() -> None:
    pool = prompts("math", "a", 50) + prompts("math", "b", 50)

    assert balance(pool, 10, seed=1) == balance(pool, 10, seed=1)
    assert balance(pool, 10, seed=1) != balance(pool, 10, seed=2)


def test_balance_drops_duplicates_excluded_texts_and_other_tasks() -> None:
    pool = [
        LabelledPrompt("What is 2+2?", "math", source="a"),
        LabelledPrompt("what  is 2+2? ", "math", source="b"),
        LabelledPrompt("Solve x", "math", source="a"),
        LabelledPrompt("A held-out prompt", "math", source="a"),
        LabelledPrompt("Hello", "chat", source="a"),
        LabelledPrompt("   ", "math", source="a"),
    ]

    chosen = balance(pool, 10, tasks=["math"], exclude=["a HELD-OUT prompt"])

    assert sorted(p.text for p in chosen) == ["Solve x", "What is 2+2?"]


def test_normalized_ignores_case_and_spacing() -> None:
    assert normalized("  Hello\n  World ") == normalized("hello world")


def test_training_weights_give_each_task_the_same_total() -> None:
    pool = [*prompts("math", "a", 90, "labelled"), *prompts("math", "r", 10, "registry")]
    pool += prompts("chat", "r", 5, "registry")

    w = training_weights(pool)

    assert w.mean() == pytest.approx(1.0)
    math_total, chat_total = w[:100].sum(), w[100:].sum()
    assert math_total == pytest.approx(chat_total)
    # Inside math, the 10 registry examples weigh as much as the 90 labelled rows together.
    assert w[90:100].sum() == pytest.approx(w[:90].sum())


def test_training_weights_origin_shares() -> None:
    pool = [*prompts("math", "a", 30, "labelled"), *prompts("math", "r", 10, "registry")]
    pool += prompts("chat", "r", 4, "registry")

    w = training_weights(pool, {"registry": 0.75, "labelled": 0.25})

    assert w[30:40].sum() == pytest.approx(3 * w[:30].sum())
    # A task with one origin keeps its whole weight, whatever that origin's share.
    assert w[40:].sum() == pytest.approx(w[:40].sum())


def test_training_weights_of_nothing() -> None:
    assert training_weights([]).shape == (0,)
    assert isinstance(training_weights(prompts("a", "s", 1)), np.ndarray)
