"""Labelled prompts for the embedding layers: where they come from, how they are balanced and weighted.

Three origins: the registry's task descriptions and examples (user-style, every task), labelled data sets
(`tasks/train.jsonl`: benchmark-style, five tasks only) and, later, prompts labelled by feedback. Benchmark rows
outnumber the registry's examples a hundred to one and all look alike (multiple choice, "Write a function to ..."),
so left alone they would teach the layers what a benchmark looks like rather than what a task is. Hence: a cap per
task drawn evenly across sources, and training weights that give every task the same total weight and, inside a
task, each origin the same share.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..registry import TaskType

Origin = Literal["registry", "labelled", "feedback"]
ORIGINS: tuple[Origin, ...] = ("registry", "labelled", "feedback")


@dataclass(frozen=True, slots=True)
class LabelledPrompt:
    text: str
    task: str
    origin: Origin = "labelled"
    source: str = ""
    """Where the row came from (a data set name); balancing draws evenly across sources."""
    accept: tuple[str, ...] = ()
    """Every label counted as right when scoring a classifier (the task itself when empty)."""


def registry_prompts(tasks: Sequence[TaskType]) -> list[LabelledPrompt]:
    """Every task's description and examples, as labelled prompts."""
    return [
        LabelledPrompt(text, task.name, "registry", "registry")
        for task in tasks
        for text in (task.description, *task.examples)
        if text.strip()
    ]


def load_labelled(path: Path, origin: Origin = "labelled") -> list[LabelledPrompt]:
    """A JSONL file of `{text, task, accept?, source?}` records (the format of `tasks/train.jsonl`)."""
    prompts = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            text, task = record.get("text"), record.get("task")
            if not isinstance(text, str) or not isinstance(task, str):
                raise ValueError(f"{path}:{line_no}: each record needs a string 'text' and 'task'")
            accept = tuple(record.get("accept") or (task,))
            prompts.append(LabelledPrompt(text, task, origin, str(record.get("source") or path.name), accept))
    return prompts


def normalized(text: str) -> str:
    """The key two prompts share when they are the same prompt (data sets repeat each other's rows)."""
    return " ".join(text.lower().split())


def balance(
    prompts: Iterable[LabelledPrompt],
    per_task: int,
    tasks: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    seed: int = 0,
) -> list[LabelledPrompt]:
    """At most `per_task` prompts per task, taken round-robin across sources, without duplicates.

    `tasks` keeps only those labels (the registry's); `exclude` drops texts that must stay unseen (an evaluation set).
    """
    rng = random.Random(seed)
    wanted = set(tasks) if tasks is not None else None
    seen = {normalized(t) for t in exclude}
    by_task: dict[str, dict[str, list[LabelledPrompt]]] = defaultdict(lambda: defaultdict(list))
    for prompt in prompts:
        key = normalized(prompt.text)
        if (wanted is not None and prompt.task not in wanted) or not key or key in seen:
            continue
        seen.add(key)
        by_task[prompt.task][prompt.source].append(prompt)
    chosen: list[LabelledPrompt] = []
    for task in sorted(by_task):
        pools = [by_task[task][source] for source in sorted(by_task[task])]
        for pool in pools:
            rng.shuffle(pool)
        taken = 0
        while taken < per_task and any(pools):
            for pool in pools:
                if pool and taken < per_task:
                    chosen.append(pool.pop())
                    taken += 1
    return chosen


def training_weights(prompts: Sequence[LabelledPrompt], origin_share: Mapping[str, float] | None = None) -> np.ndarray:
    """One weight per prompt, mean 1: each task weighs the same in total, and inside a task the origins present
    split its weight by `origin_share` (equal shares when not given; origins missing from a task give theirs up)."""
    shares = dict(origin_share or {})
    counts: dict[tuple[str, str], int] = defaultdict(int)
    origins: dict[str, set[str]] = defaultdict(set)
    for prompt in prompts:
        counts[prompt.task, prompt.origin] += 1
        origins[prompt.task].add(prompt.origin)

    def share(task: str, origin: str) -> float:
        present = origins[task]
        total = sum(shares.get(o, 1.0) for o in present)
        return shares.get(origin, 1.0) / total

    weights = np.array([share(p.task, p.origin) / counts[p.task, p.origin] for p in prompts], dtype=np.float64)
    return weights * (len(prompts) / weights.sum()) if len(prompts) else weights
