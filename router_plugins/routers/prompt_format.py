"""Prompt-format features of the learned router: format markers, length buckets and language, in three groups.

The learned router keeps a group only when adding it alone lowers the pooled inner out-of-fold log loss on the
training data (`fitting.select_format_groups`): on LLMRouter all three help (+0.011 AIQ by nested CV), on RouterBench
only `format` does (docs/EVALUATION.md, "Variants by nested CV"). About 0.1 ms per prompt, language guess included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from ..language import detect_language

LANGUAGES = ("en", "zh", "es", "fr", "de", "ru", "ja", "ko", "pt", "it")
LENGTH_EDGES = (100, 300, 1000, 3000)
"""Prompt-length buckets in chars: a step function beside the log length of the base features."""
FORMAT_GROUPS: dict[str, list[int]] = {
    "format": list(range(7)),
    "length_bucket": list(range(7, 8 + len(LENGTH_EDGES))),
    "language": list(range(8 + len(LENGTH_EDGES), 9 + len(LENGTH_EDGES) + len(LANGUAGES))),
}
"""Column groups of `format_features`, in the order they are appended to the base features."""
_FENCE = re.compile(r"```")
_OPTION = re.compile(r"(?m)^\s*\(?[A-Ja-j][).:]\s")
_INLINE_OPTION = re.compile(r"(?:^|\s)\(?[A-D]\)\s")
_LIST_ITEM = re.compile(r"(?m)^\s*(?:[-*•]|\d{1,2}[.)])\s")
_JSON = re.compile(r"[{\[]\s*\"[^\"\n]{1,40}\"\s*:")
_MATH = re.compile(r"[=+^<>]|\\frac|\\sqrt|\$|\d\s*[-*/]\s*\d")


def format_features(texts: Sequence[str], language: Callable[[str], str] = detect_language) -> np.ndarray:
    """[n, 9 + buckets + languages]: code fence, multiple-choice options, question mark, list, JSON, math symbols,
    log line count, length bucket one-hot, language one-hot (other languages share the last column)."""
    rows = []
    for text in texts:
        options = len(_OPTION.findall(text)) + len(_INLINE_OPTION.findall(text))
        lines = text.count("\n") + 1
        bucket = [0.0] * (len(LENGTH_EDGES) + 1)
        bucket[int(np.searchsorted(LENGTH_EDGES, len(text), side="right"))] = 1.0
        code = language(text)
        lang = [1.0 if code == name else 0.0 for name in LANGUAGES] + [0.0 if code in LANGUAGES else 1.0]
        rows.append([
            1.0 if _FENCE.search(text) else 0.0,
            1.0 if options >= 2 else 0.0,
            1.0 if "?" in text else 0.0,
            min(len(_LIST_ITEM.findall(text)) / 5.0, 2.0),
            1.0 if _JSON.search(text) else 0.0,
            min(len(_MATH.findall(text)) / 10.0, 3.0),
            np.log1p(lines) / 3.0,
            *bucket,
            *lang,
        ])  # fmt: skip
    return np.array(rows, dtype=np.float32).reshape(len(texts), -1)


def columns(groups: Sequence[str]) -> list[int]:
    """The `format_features` columns of `groups` (unknown names are an error: an artifact from a newer version)."""
    return [c for g in groups for c in FORMAT_GROUPS[g]]
