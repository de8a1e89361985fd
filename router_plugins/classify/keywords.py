"""Layer 1: keyword and pattern rules from the registry's task types (microseconds, no model)."""

from __future__ import annotations

import math
import re
import re._constants as _sre
import re._parser as _sre_parser
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..registry import TaskType
from .layer import LayerVerdict

PATTERN_WEIGHT = 2.0
"""A pattern is written to be specific (a traceback, a `translate ... into` phrase): it counts as two keywords.
Each distinct pattern that matches counts, so several specific signals outweigh one."""
HEAD_CHARS = 600
TAIL_CHARS = 600
"""Only the start and the end of a long prompt are read: the ask is there, while pasted material in the middle
(an article, a log, a transcript) mostly adds keywords of other tasks, and costs a regex scan per pattern."""
_TOKEN = re.compile(r"\w(?:[\w'.+#-]*[\w+#])?")
"""A word, keeping inner apostrophes, dots and hyphens and trailing + or # (doesn't, node.js, e2e, c++, c#)."""


_LEADING_LITERALS = re.compile(
    r"^(?:\^\\s\*|\^)?\\b"  # optionally anchored, then a word boundary
    r"(?:\((?:\?:)?([a-z0-9 '|-]+)\)(?![?*{|])"  # a group of literal alternatives, not optional
    r"|([a-z][a-z ']*[a-z])(?![?*{(|\w]))"  # or a literal word or phrase
)
"""A pattern that opens with a literal word or a group of literal alternatives, `\\b(write|draft)` or `\\bhow `."""


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def mandatory_literals(pattern: str) -> tuple[tuple[str, ...], ...]:
    """Sets of lowercase ASCII strings such that any match contains one string of each set, read off the whole
    pattern (its groups, alternations and repeats), fewest alternatives first; () when none can be read.

    A necessary condition on ASCII text only: a case-insensitive pattern character outside ASCII (the Kelvin sign)
    can match an ASCII letter, so non-ASCII pattern characters are never taken as literals.
    """
    try:
        parsed = _sre_parser.parse(pattern, re.IGNORECASE | re.MULTILINE)
    except re.error:  # compiling the pattern raises it with a better message
        return ()
    # A one-character literal is in nearly every text: not worth a test.
    sets = {alts for alts in _required_sets(parsed) if min(map(len, alts)) > 1}
    return tuple(sorted(sets, key=lambda alts: (len(alts), -min(map(len, alts)), alts)))


def _required_sets(sequence: Any) -> list[tuple[str, ...]]:
    """Each item of a parsed sequence that any match must contain, as its set of literal alternatives."""
    found: list[tuple[str, ...]] = []
    run: list[str] = []
    for op, av in sequence:
        if op is _sre.LITERAL and av < 128:
            run.append(chr(av))
            continue
        prefix = "".join(run).lower()
        if prefix:
            found.append((prefix,))
            run.clear()
        if op is _sre.SUBPATTERN:
            found.extend(_required_sets(av[-1]))
        elif op is _sre.ATOMIC_GROUP:
            found.extend(_required_sets(av))
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT) and av[0] >= 1:
            found.extend(_required_sets(av[2]))
        elif op is _sre.BRANCH:
            if prefix:  # the parser moves the alternatives' common opening out: `pr|pull` is `p(r|ull)`
                found.append(tuple(sorted({prefix + _leading_run(alternative) for alternative in av[1]})))
            union: set[str] = set()
            for alternative in av[1]:
                needed = _required_sets(alternative)
                if not needed:  # this alternative needs no literal: the alternation as a whole needs none
                    break
                shortest: tuple[str, ...] = min(needed, key=len)
                union.update(shortest)
            else:
                found.append(tuple(sorted(union)))
    if run:
        found.append(("".join(run).lower(),))
    return found


def _leading_run(sequence: Any) -> str:
    run = []
    for op, av in sequence:
        if op is not _sre.LITERAL or av >= 128:
            break
        run.append(chr(av))
    return "".join(run).lower()


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """Lowercase strings of which a match must contain one, read off the pattern's opening; None when unsure.

    Searching ~100 patterns costs a regex scan each; a substring test of the lowercased text rules most out first.
    """
    found = _LEADING_LITERALS.match(pattern)
    if not found:
        return None
    alternatives = (found.group(1) or found.group(2)).split("|")
    return None if any(not a.strip() for a in alternatives) else tuple(alternatives)


_Pattern = tuple[re.Pattern[str], tuple[str, ...] | None, tuple[tuple[str, ...], ...]]
"""A compiled pattern, its opening's literals (any text) and its mandatory literal sets (ASCII text)."""


def _ascii_prefilter(pattern: str) -> tuple[tuple[str, ...], ...]:
    # The opening's literals are kept among the sets: on ASCII text this prefilter then skips a pattern whenever the
    # opening-literal one alone would, so both give the same scores.
    opening = required_literals(pattern)
    return tuple(dict.fromkeys(((opening,) if opening else ()) + mandatory_literals(pattern)))


def _has_one_of_each(lowered: str, required: tuple[tuple[str, ...], ...]) -> bool:
    # Plain loops: nested any()/all() generators cost twice as much as the substring tests they run.
    for alternatives in required:
        for literal in alternatives:
            if literal in lowered:
                break
        else:
            return False
    return True


class KeywordLayer:
    """Counts each task's distinct keywords and matching patterns; confidence is strength times margin.

    Keywords are matched as whole words or phrases by looking token n-grams up in one table (one pass over the
    text for all tasks, instead of one regex alternation per task: ~20x cheaper on long prompts).
    """

    name = "keywords"

    def __init__(self, tasks: Sequence[TaskType]) -> None:
        self._phrases: dict[str, set[str]] = defaultdict(set)
        self._starts: dict[str, int] = {}
        """First token of a phrase -> the most tokens a phrase starting with it has."""
        self._patterns: list[tuple[str, tuple[_Pattern, ...]]] = []
        for task in tasks:
            for keyword in task.keywords:
                words = tokens(keyword)
                if words:
                    self._phrases[" ".join(words)].add(task.name)
                    self._starts[words[0]] = max(self._starts.get(words[0], 0), len(words))
            # Compiled one by one: joined, their inline flags and group numbers would clash.
            patterns = tuple(
                (re.compile(p, re.IGNORECASE | re.MULTILINE), required_literals(p), _ascii_prefilter(p))
                for p in task.patterns
            )
            if patterns:
                self._patterns.append((task.name, patterns))

    def _keyword_hits(self, text: str) -> dict[str, set[str]]:
        """Task -> the distinct keywords of it found in the text."""
        hits: dict[str, set[str]] = defaultdict(set)
        words = tokens(text)
        for i, word in enumerate(words):
            longest = self._starts.get(word, 0)
            for n in range(1, min(longest, len(words) - i) + 1):
                phrase = word if n == 1 else " ".join(words[i : i + n])
                for task in self._phrases.get(phrase, ()):
                    hits[task].add(phrase)
        return hits

    def classify(self, text: str) -> LayerVerdict:
        if len(text) > HEAD_CHARS + TAIL_CHARS:
            text = f"{text[:HEAD_CHARS]}\n{text[-TAIL_CHARS:]}"
        score: dict[str, float] = {task: float(len(found)) for task, found in self._keyword_hits(text).items()}
        lowered = text.lower()
        ascii_text = text.isascii()
        for task, patterns in self._patterns:
            matched = 0
            for pattern, literals, ascii_required in patterns:
                if ascii_text:  # where a substring of the lowercased text is exact: see mandatory_literals
                    if not _has_one_of_each(lowered, ascii_required):
                        continue
                elif literals is not None and not any(literal in lowered for literal in literals):
                    continue
                if pattern.search(text):
                    matched += 1
            if matched:
                score[task] = score.get(task, 0.0) + PATTERN_WEIGHT * matched
        scores = sorted(((s, task) for task, s in score.items() if s), reverse=True)
        if not scores:
            return LayerVerdict(None, 0.0, "no keyword matched")
        top, task = scores[0]
        second = scores[1][0] if len(scores) > 1 else 0.0
        # Strength of the evidence times its share: one keyword alone is fair evidence, a tie is none.
        confidence = (1.0 - math.exp(-top)) * (top - second) / top if top > second else 0.0
        detail = ", ".join(f"{t}={s:g}" for s, t in scores[:3])
        return LayerVerdict(task, confidence, detail)
