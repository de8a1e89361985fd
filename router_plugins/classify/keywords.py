"""Layer 1: keyword and pattern rules from the registry's task types (microseconds, no model)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ..registry import TaskType
from .layer import LayerVerdict

PATTERN_WEIGHT = 2.0
"""A pattern is written to be specific (a traceback, a `translate ... into` phrase): it counts as two keywords."""


class KeywordLayer:
    name = "keywords"

    def __init__(self, tasks: Sequence[TaskType]) -> None:
        self._rules: list[tuple[str, re.Pattern[str] | None, tuple[re.Pattern[str], ...]]] = []
        for task in tasks:
            words = "|".join(re.escape(k.strip()) for k in task.keywords if k.strip())
            keyword_re = re.compile(rf"(?<![\w]){'(?:' + words + ')'}(?![\w])", re.IGNORECASE) if words else None
            # Compiled one by one: joined, their inline flags and group numbers would clash.
            patterns = tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for p in task.patterns)
            if keyword_re or patterns:
                self._rules.append((task.name, keyword_re, patterns))

    def classify(self, text: str) -> LayerVerdict:
        scores: list[tuple[float, str]] = []
        for task, keyword_re, patterns in self._rules:
            score = 0.0
            if keyword_re is not None:
                # Distinct keywords count: one word repeated ten times is still one signal.
                score += len({m.group(0).lower() for m in keyword_re.finditer(text)})
            if any(pattern.search(text) for pattern in patterns):
                score += PATTERN_WEIGHT
            if score:
                scores.append((score, task))
        if not scores:
            return LayerVerdict(None, 0.0, "no keyword matched")
        scores.sort(reverse=True)
        top, task = scores[0]
        second = scores[1][0] if len(scores) > 1 else 0.0
        # Strength of the evidence times its share: one keyword alone is fair evidence, a tie is none.
        confidence = (1.0 - math.exp(-top)) * (top - second) / top if top > second else 0.0
        detail = ", ".join(f"{t}={s:g}" for s, t in scores[:3])
        return LayerVerdict(task, confidence, detail)
