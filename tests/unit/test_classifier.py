"""Task classification: the keyword layer, the static embedding layer and the cascade that asks them in turn
(layers 3-4, which read an embedding, are tested in test_classifier_embedding_layers.py)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from router_plugins.classify import (
    KeywordLayer,
    LabelledPrompt,
    LayerVerdict,
    StaticEmbedder,
    StaticEmbeddingLayer,
    TaskClassifier,
)
from router_plugins.classify.cascade import FALLBACK_LAYER, SKIPPED_NO_EMBEDDING
from router_plugins.classify.keywords import HEAD_CHARS, TAIL_CHARS, required_literals, tokens
from router_plugins.classify.static_embedding import MAX_TOKENS, model_path
from router_plugins.registry import TaskType, default_tasks

DEV_SET = Path(__file__).parents[1] / "fixtures" / "tasks" / "user_prompts.jsonl"
ONE_KEYWORD = 1 - math.exp(-1)
"""Confidence for one distinct keyword of one task and nothing else."""

SORTING = TaskType("sorting", keywords=("sort", "order by", "quicksort"), patterns=(r"\bsorted\(",))
GREETING = TaskType("greeting", keywords=("hello", "good morning"))


# -- keyword layer -------------------------------------------------------------------------------------------------


def keywords() -> KeywordLayer:
    return KeywordLayer([SORTING, GREETING])


def test_keywords_no_match_gives_no_task() -> None:
    verdict = keywords().classify("what is the capital of France?")

    assert verdict.task is None
    assert verdict.confidence == 0.0


def test_keywords_one_keyword() -> None:
    verdict = keywords().classify("Please sort this list")

    assert verdict.task == "sorting"
    assert verdict.confidence == pytest.approx(ONE_KEYWORD)
    assert verdict.detail == "sorting=1"


def test_keywords_match_whole_words_only_and_ignore_case() -> None:
    layer = keywords()

    assert layer.classify("the resort was nice").task is None
    assert layer.classify("HELLO there").task == "greeting"
    assert layer.classify("Good Morning!").task == "greeting"


def test_keywords_a_pattern_counts_as_two_keywords() -> None:
    verdict = keywords().classify("x = sorted(items)")

    assert verdict.task == "sorting"
    assert verdict.confidence == pytest.approx(1 - math.exp(-2))
    assert verdict.detail == "sorting=2"


def test_keywords_distinct_keywords_add_up() -> None:
    verdict = keywords().classify("sort it with quicksort")

    assert verdict.confidence == pytest.approx(1 - math.exp(-2))


def test_keywords_repeated_keyword_counts_once() -> None:
    verdict = keywords().classify("sort sort Sort SORT sort")

    assert verdict.task == "sorting"
    assert verdict.confidence == pytest.approx(ONE_KEYWORD)


def test_keywords_tie_gives_zero_confidence() -> None:
    verdict = keywords().classify("hello, sort this")

    assert verdict.confidence == 0.0
    assert "sorting=1" in verdict.detail and "greeting=1" in verdict.detail


def test_keywords_runner_up_lowers_confidence_by_its_share() -> None:
    verdict = keywords().classify("hello, sort this with quicksort")

    assert verdict.task == "sorting"
    assert verdict.confidence == pytest.approx((1 - math.exp(-2)) * (2 - 1) / 2)


def test_keywords_task_without_keywords_or_patterns_never_matches() -> None:
    layer = KeywordLayer([TaskType("chat", description="small talk"), GREETING])

    assert layer.classify("small talk").task is None


def test_keywords_pattern_with_an_inline_flag() -> None:
    task = TaskType("shout", patterns=("(?i)^hey\\b", "!!!"))

    assert KeywordLayer([task]).classify("HEY you").task == "shout"


def test_keywords_pattern_with_a_back_reference_after_another_pattern() -> None:
    task = TaskType("stutter", patterns=(r"(um)+ er", r"\b(\w+) \1\b"))

    assert KeywordLayer([task]).classify("the the cat").task == "stutter"


def test_keywords_with_punctuation_match_as_whole_words() -> None:
    task = TaskType("tech", keywords=("tl;dr", "doesn't work", "c++", "node.js", "key-value"))
    layer = KeywordLayer([task])

    assert layer.classify("TL;DR please").detail == "tech=1"
    assert layer.classify("it Doesn't work at all").detail == "tech=1"
    assert layer.classify("a c++ and node.js shop, key-value store").detail == "tech=3"
    assert layer.classify("c is fine; node is fine; key value").task is None


def test_keywords_each_matching_pattern_counts() -> None:
    task = TaskType("shout", patterns=(r"!!!", r"\bhey\b"))

    assert KeywordLayer([task]).classify("hey!!!").detail == "shout=4"


def test_keywords_a_phrase_and_a_word_inside_it_both_count() -> None:
    task = TaskType("review", keywords=("code review", "review"))

    assert KeywordLayer([task]).classify("a code review please").detail == "review=2"


def test_keywords_read_only_the_start_and_end_of_a_long_prompt() -> None:
    filler = "x " * (HEAD_CHARS + TAIL_CHARS)
    layer = keywords()

    assert layer.classify(f"please sort {filler} hello").detail == "sorting=1, greeting=1"
    assert layer.classify(f"{filler[:HEAD_CHARS]} sort {filler}").task is None


def test_tokens_keep_inner_punctuation_and_drop_trailing() -> None:
    assert tokens("Hello, World. It's C++ & node.js (e2e)!") == ["hello", "world", "it's", "c++", "node.js", "e2e"]


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"\b(write|draft)\b.{0,30}\bpoem", ("write", "draft")),
        (r"\bhow (do|can) i", ("how",)),
        (r"\bshorter version\b", ("shorter version",)),
        (r"\bfoo bar?", ("foo",)),
        (r"\bfoo|bar", None),
        (r"\b(a|b)|c", None),
        (r"\b(a|b)?c", None),
        (r"\b(sql|c\+\+) query", None),
        (r"(um)+ er", None),
        (r"Traceback", None),
    ],
)
def test_required_literals_are_read_only_off_plain_openings(pattern: str, literals: tuple[str, ...] | None) -> None:
    assert required_literals(pattern) == literals


def test_the_pattern_prefilter_never_changes_a_match() -> None:
    """Every default pattern, on every dev prompt: skipped only when the regex would not have matched anyway."""
    texts = [json.loads(line)["text"] for line in DEV_SET.read_text(encoding="utf-8").splitlines()]
    for task in default_tasks():
        for pattern in task.patterns:
            literals = required_literals(pattern)
            if literals is None:
                continue
            compiled = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
            for text in texts:
                if compiled.search(text):
                    assert any(literal in text.lower() for literal in literals), (pattern, text)


# -- the cascade ---------------------------------------------------------------------------------------------------


class FixedLayer:
    """A layer that always answers the same, and remembers what it was asked."""

    def __init__(self, name: str, task: str | None, confidence: float) -> None:
        self.name = name
        self._verdict = LayerVerdict(task, confidence, f"{name} says {task}")
        self.seen: list[str] = []

    def classify(self, text: str) -> LayerVerdict:
        self.seen.append(text)
        return self._verdict


def test_cascade_first_layer_over_threshold_decides() -> None:
    first, second = FixedLayer("first", "math", 0.9), FixedLayer("second", "chat", 0.99)
    classifier = TaskClassifier([(first, 0.5), (second, 0.5)], fallback_task="chat")

    result = classifier.classify("2 + 2")

    assert (result.task, result.confidence, result.layer) == ("math", 0.9, "first")
    assert not result.needs_clarification
    assert second.seen == []
    assert [a.layer for a in result.attempts] == ["first"]


def test_cascade_confidence_equal_to_threshold_is_accepted() -> None:
    classifier = TaskClassifier([(FixedLayer("only", "math", 0.5), 0.5)], fallback_task="chat")

    assert classifier.classify("x").layer == "only"


def test_cascade_below_threshold_passes_to_the_next_layer() -> None:
    first, second = FixedLayer("first", "math", 0.4), FixedLayer("second", "coding", 0.7)
    classifier = TaskClassifier([(first, 0.5), (second, 0.6)], fallback_task="chat")

    result = classifier.classify("text")

    assert (result.task, result.layer) == ("coding", "second")
    assert [(a.layer, a.task, a.accepted) for a in result.attempts] == [
        ("first", "math", False),
        ("second", "coding", True),
    ]


def test_cascade_layer_without_a_task_is_not_accepted_even_at_threshold_zero() -> None:
    classifier = TaskClassifier([(FixedLayer("blank", None, 0.0), 0.0)], fallback_task="chat")

    result = classifier.classify("text")

    assert result.layer == FALLBACK_LAYER
    assert result.attempts[0].accepted is False


def test_cascade_falls_back_when_no_layer_is_sure() -> None:
    classifier = TaskClassifier(
        [(FixedLayer("first", "math", 0.3), 0.5), (FixedLayer("second", "coding", 0.1), 0.4)], fallback_task="chat"
    )

    result = classifier.classify("hmm")

    assert (result.task, result.confidence, result.layer) == ("chat", 0.0, FALLBACK_LAYER)
    assert result.needs_clarification
    assert [a.layer for a in result.attempts] == ["first", "second", FALLBACK_LAYER]
    assert result.attempts[-1].accepted and result.attempts[-1].task == "chat"


def test_cascade_with_no_layers_falls_back() -> None:
    result = TaskClassifier([], fallback_task="chat").classify("anything")

    assert result.task == "chat" and result.needs_clarification


def test_cascade_records_every_attempt() -> None:
    classifier = TaskClassifier(
        [(FixedLayer("first", "math", 0.3), 0.5), (FixedLayer("second", "coding", 0.8), 0.6)], fallback_task="chat"
    )

    first, second = classifier.classify("text").attempts

    assert (first.threshold, first.confidence, first.accepted, first.detail) == (0.5, 0.3, False, "first says math")
    assert (second.threshold, second.confidence, second.accepted) == (0.6, 0.8, True)
    assert first.latency_ms >= 0 and second.latency_ms >= 0
    assert first.to_dict()["layer"] == "first"


def test_cascade_clips_long_prompts_keeping_start_and_end() -> None:
    layer = FixedLayer("spy", None, 0.0)
    classifier = TaskClassifier([(layer, 0.5)], fallback_task="chat", max_chars=10)

    classifier.classify("HEAD-" + "x" * 100 + "-TAIL")

    assert layer.seen == ["HEAD-\n-TAIL"]


def test_cascade_leaves_short_prompts_alone() -> None:
    layer = FixedLayer("spy", None, 0.0)
    classifier = TaskClassifier([(layer, 0.5)], fallback_task="chat", max_chars=10)

    classifier.classify("0123456789")

    assert layer.seen == ["0123456789"]


class FixedEmbeddingLayer:
    """A layer that reads an embedding: always the same answer; remembers the embeddings it was given."""

    needs_embedding = True

    def __init__(self, name: str, task: str | None, confidence: float) -> None:
        self.name = name
        self._verdict = LayerVerdict(task, confidence, f"{name} says {task}")
        self.seen: list[np.ndarray] = []

    def classify(self, text: str, embedding: np.ndarray) -> LayerVerdict:
        self.seen.append(embedding)
        return self._verdict


def two_phase() -> tuple[TaskClassifier, FixedLayer, FixedEmbeddingLayer, FixedEmbeddingLayer]:
    cheap = FixedLayer("cheap", "math", 0.3)
    knn = FixedEmbeddingLayer("knn", "coding", 0.4)
    head = FixedEmbeddingLayer("head", "testing", 0.9)
    return TaskClassifier([(cheap, 0.5), (knn, 0.5), (head, 0.5)], fallback_task="chat"), cheap, knn, head


def test_cascade_names_the_layers_that_need_an_embedding() -> None:
    classifier, *_ = two_phase()

    assert classifier.layer_names == ("cheap", "knn", "head")
    assert classifier.embedding_layers == ("knn", "head")
    assert TaskClassifier([(FixedLayer("cheap", None, 0.0), 0.5)], "chat").embedding_layers == ()


def test_cascade_without_an_embedding_skips_those_layers_and_says_so() -> None:
    classifier, cheap, knn, head = two_phase()

    result = classifier.classify("text")

    assert result.layer == FALLBACK_LAYER and result.needs_clarification
    assert [(a.layer, a.task, a.accepted, a.detail) for a in result.attempts] == [
        ("cheap", "math", False, "cheap says math"),
        ("knn", None, False, SKIPPED_NO_EMBEDDING),
        ("head", None, False, SKIPPED_NO_EMBEDDING),
        (FALLBACK_LAYER, "chat", True, "no layer was sure"),
    ]
    assert result.attempts[1].threshold == 0.5
    assert knn.seen == [] and head.seen == []
    assert classifier.wants_embedding(result)


def test_cascade_with_an_embedding_asks_every_layer_in_order() -> None:
    classifier, cheap, knn, head = two_phase()
    vector = np.ones(4, dtype=np.float32)

    result = classifier.classify("text", vector)

    assert (result.task, result.layer) == ("testing", "head")
    assert [a.layer for a in result.attempts] == ["cheap", "knn", "head"]
    assert knn.seen[0] is vector and head.seen[0] is vector
    assert not classifier.wants_embedding(result)


def test_cascade_resume_asks_only_the_skipped_layers() -> None:
    classifier, cheap, knn, head = two_phase()
    first = classifier.classify("text")

    result = classifier.resume("text", np.ones(4, dtype=np.float32), first)

    assert (result.task, result.layer, result.needs_clarification) == ("testing", "head", False)
    assert len(cheap.seen) == 1
    assert result.attempts[0] is first.attempts[0]
    assert [(a.layer, a.accepted) for a in result.attempts] == [("cheap", False), ("knn", False), ("head", True)]


def test_cascade_resume_after_a_cheap_layer_decided_changes_nothing() -> None:
    sure = FixedLayer("sure", "math", 0.9)
    head = FixedEmbeddingLayer("head", "testing", 0.9)
    classifier = TaskClassifier([(sure, 0.5), (head, 0.5)], fallback_task="chat")
    first = classifier.classify("2 + 2")

    assert not classifier.wants_embedding(first)
    assert classifier.resume("2 + 2", np.ones(4, dtype=np.float32), first) is first
    assert head.seen == []


def test_cascade_resume_can_still_fall_back() -> None:
    classifier = TaskClassifier([(FixedEmbeddingLayer("knn", "coding", 0.2), 0.5)], fallback_task="chat")

    result = classifier.resume("text", np.ones(4, dtype=np.float32), classifier.classify("text"))

    assert result.layer == FALLBACK_LAYER and result.needs_clarification
    assert [(a.layer, a.task) for a in result.attempts] == [("knn", "coding"), (FALLBACK_LAYER, "chat")]


# -- static embedding layer ----------------------------------------------------------------------------------------

DIMENSIONS = 8
AXES = {"apple": 0, "banana": 1, "cherry": 2}
"""Each of these tokens points along its own axis; every other token has a zero row."""


@pytest.fixture(scope="module")
def embedder() -> StaticEmbedder:
    tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    rows = np.zeros((tokenizer.get_vocab_size(), DIMENSIONS), dtype=np.float32)
    for token, axis in AXES.items():
        rows[tokenizer.token_to_id(token), axis] = 1.0
    weights = np.ones(tokenizer.get_vocab_size(), dtype=np.float32)
    return StaticEmbedder(tokenizer, rows, weights)


@pytest.fixture(scope="module")
def fruit_layer(embedder: StaticEmbedder) -> StaticEmbeddingLayer:
    tasks = [
        TaskType("apples", description="apple"),
        TaskType("bananas", examples=("banana", "banana banana")),
        TaskType("nothing"),
    ]
    return StaticEmbeddingLayer(embedder, tasks)


def test_embedder_gives_unit_vectors_along_the_chosen_axes(embedder: StaticEmbedder) -> None:
    vectors = embedder.embed(["apple", "apple banana", "zebra"])

    np.testing.assert_allclose(vectors[0], np.eye(DIMENSIONS)[0])
    np.testing.assert_allclose(vectors[1], (np.eye(DIMENSIONS)[0] + np.eye(DIMENSIONS)[1]) / math.sqrt(2), rtol=1e-6)
    assert not vectors[2].any()


def test_embedder_single_texts_come_from_a_cache_as_fresh_copies(embedder: StaticEmbedder) -> None:
    texts = ["apple banana", "cherry", "apple banana cherry"]
    batched = embedder.embed(texts)

    first = embedder.embed(["apple banana"])
    first[0, 0] = 99.0  # a caller writing into its vector must not change what the next caller gets
    again = embedder.embed(["apple banana"])

    np.testing.assert_array_equal(again[0], batched[0])
    assert again.shape == (1, DIMENSIONS) and again.flags.writeable
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(embedder.embed([text])[0], batched[i])


def test_static_embedding_picks_the_nearest_task(fruit_layer: StaticEmbeddingLayer) -> None:
    verdict = fruit_layer.classify("banana")

    assert verdict.task == "bananas"
    assert 0.5 < verdict.confidence <= 1.0
    assert verdict.detail.startswith("bananas=1.000, apples=0.000, nothing=0.000")
    assert fruit_layer.classify("apple").task == "apples"


def test_static_embedding_mixed_text_leans_to_the_stronger_token(fruit_layer: StaticEmbeddingLayer) -> None:
    assert fruit_layer.classify("apple apple banana").task == "apples"
    assert fruit_layer.classify("banana banana banana apple").task == "bananas"


def test_static_embedding_probabilities_cover_every_task_and_skip_those_without_examples(
    fruit_layer: StaticEmbeddingLayer,
) -> None:
    probs = fruit_layer.probabilities("apple banana")

    assert probs is not None and probs.shape == (3,)
    assert probs.sum() == pytest.approx(1.0)
    assert probs[2] == 0.0


@pytest.mark.parametrize("text", ["", "zebra", "   "])
def test_static_embedding_without_usable_tokens_gives_no_task(fruit_layer: StaticEmbeddingLayer, text: str) -> None:
    verdict = fruit_layer.classify(text)

    assert (verdict.task, verdict.confidence, verdict.detail) == (None, 0.0, "no tokens")


def test_static_embedding_without_examples_gives_no_task(embedder: StaticEmbedder) -> None:
    layer = StaticEmbeddingLayer(embedder, [TaskType("chat"), TaskType("math")])

    assert layer.classify("apple") == LayerVerdict(None, 0.0, "no task examples")


def test_static_embedding_labelled_prompts_join_the_examples(embedder: StaticEmbedder) -> None:
    tasks = [TaskType("apples", description="apple"), TaskType("cherries")]
    labelled = [LabelledPrompt("cherry", "cherries"), LabelledPrompt("banana", "not-a-task")]

    layer = StaticEmbeddingLayer(embedder, tasks, labelled)

    assert layer.classify("cherry").task == "cherries"
    assert layer.classify("apple").task == "apples"


def test_static_embedding_reads_the_start_and_end_of_a_long_prompt(fruit_layer: StaticEmbeddingLayer) -> None:
    # focus() keeps the first 200 and the last 800 characters: a fruit in the middle is not read.
    middle = "x " * 300 + "apple " + "x " * 600

    assert fruit_layer.classify("banana " + middle).task == "bananas"
