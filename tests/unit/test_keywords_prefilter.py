"""The keyword layer's literal prefilter only skips regex scans: its scores equal the plain pattern loop's."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from router_plugins.classify.keywords import (
    HEAD_CHARS,
    PATTERN_WEIGHT,
    TAIL_CHARS,
    KeywordLayer,
    mandatory_literals,
    required_literals,
)
from router_plugins.classify.layer import LayerVerdict
from router_plugins.registry import TaskType, default_tasks

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tasks"


class ReferenceKeywordLayer(KeywordLayer):
    """The scoring before the mandatory-literal prefilter: every pattern whose opening literals occur is searched."""

    def __init__(self, tasks: Sequence[TaskType]) -> None:
        super().__init__(tasks)
        self._reference = [
            (task.name, [(re.compile(p, re.IGNORECASE | re.MULTILINE), required_literals(p)) for p in task.patterns])
            for task in tasks
            if task.patterns
        ]

    def classify(self, text: str) -> LayerVerdict:
        if len(text) > HEAD_CHARS + TAIL_CHARS:
            text = f"{text[:HEAD_CHARS]}\n{text[-TAIL_CHARS:]}"
        score = {task: float(len(found)) for task, found in self._keyword_hits(text).items()}
        lowered = text.lower()
        for task, patterns in self._reference:
            matched = sum(
                1
                for pattern, literals in patterns
                if (literals is None or any(literal in lowered for literal in literals)) and pattern.search(text)
            )
            if matched:
                score[task] = score.get(task, 0.0) + PATTERN_WEIGHT * matched
        scores = sorted(((s, task) for task, s in score.items() if s), reverse=True)
        if not scores:
            return LayerVerdict(None, 0.0, "no keyword matched")
        top, task = scores[0]
        second = scores[1][0] if len(scores) > 1 else 0.0
        confidence = (1.0 - math.exp(-top)) * (top - second) / top if top > second else 0.0
        return LayerVerdict(task, confidence, ", ".join(f"{t}={s:g}" for s, t in scores[:3]))


def prompts() -> Iterator[str]:
    """The dev and holdout prompts and the default tasks' examples, as written, in capitals, in pieces, with a
    non-ASCII character (the other prefilter path) and as long pasted text (the head and tail cut)."""
    texts = [
        json.loads(line)["text"]
        for name in ("user_prompts.jsonl", "user_prompts_holdout.jsonl")
        for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    texts += [example for task in default_tasks() for example in task.examples]
    for i, text in enumerate(texts):
        yield text
        yield text.upper()
        yield text[: len(text) // 2]
        yield text[len(text) // 3 :]
        yield f"{text} — café"
        yield f"{text}\n{texts[(i * 7 + 3) % len(texts)]}"
        yield "\n".join(texts[i : i + 8])


def test_the_prefilter_gives_the_same_scores_as_the_pattern_loop() -> None:
    tasks = default_tasks()
    fast, reference = KeywordLayer(tasks), ReferenceKeywordLayer(tasks)
    checked = matched = 0
    for text in prompts():
        assert fast.classify(text) == reference.classify(text), text
        checked += 1
        matched += fast.classify(text).task is not None
    assert checked > 2000 and matched > checked / 2, "the prompts exercise the patterns"


@pytest.mark.parametrize(
    ("pattern", "sets"),
    [
        (r"\bpanicked at\b", (("panicked at",),)),
        (r"\b(pr|pull request)\b", (("pr", "pull request"),)),
        (r"\b(fix|debug)\b.{0,20}\b(bug|error)s?\b", (("bug", "error"), ("debug", "fix"))),
        (r"\bhow (do|can) i\b", (("how ",), (" i",), ("can", "do"))),
        (r"\b(\d+|two)[- ]days?\b", (("day",),)),
        (r"(ab)+c", (("ab",),)),  # a one-character literal is not worth a test
        (r"\b\w+(Error|Exception)\b", (("error", "exception"), ("rror", "xception"))),
        (r"\b(a|b?)\b", ()),  # an alternative that needs nothing
        (r"x?y*", ()),
        (r"\bcaf\u00e9\b", (("caf",),)),  # a non-ASCII character is never a literal
        (r"(?!.{0,9}\bnot\b)\bsure\b", (("sure",),)),  # a negative lookahead requires nothing
    ],
)
def test_mandatory_literals_are_what_every_match_contains(pattern: str, sets: tuple[tuple[str, ...], ...]) -> None:
    assert mandatory_literals(pattern) == sets
