"""Layer 0, corrections from feedback: the same prompt and its near duplicates get the task feedback named.

Near duplicates are judged over the shipped text model's n-gram features, as the gateway judges them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router_plugins.classify import CorrectionsLayer, build_classifier
from router_plugins.classify.assembly import ClassifierSources
from router_plugins.classify.corrections import NEAR_DUPLICATE
from router_plugins.classify.text_model import SHIPPED_FILE, TextModel
from router_plugins.registry import Registry, parse_registry

TICKET = (
    "Customer ticket #48213 from Maria Lopez: my order of 3 blue mugs arrived broken, I would like a refund of "
    "42.50 EUR. Classify this ticket as billing, shipping or product."
)
OTHER_BODY = (
    "Customer ticket #48213 from Maria Lopez: I cannot log in to my account since the password reset email never "
    "came. Classify this ticket as billing, shipping or product."
)


@pytest.fixture(scope="module")
def shipped() -> TextModel:
    return TextModel.load(SHIPPED_FILE)


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The default taxonomy, keyword rules on (so the order of the layers shows)."""
    return parse_registry("models:\n  - {name: m, litellm_params: {model: openai/m}}\n")


class NoEmbedder:
    """The static layer must not be built while a text model serves: any use of this fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the static embedder was used ({name})")


def test_an_exact_match_wins_over_the_text_model(shipped: TextModel, registry: Registry) -> None:
    assert text_model_task(shipped, TICKET) != "extraction", "the correction must change the answer"
    corrections = CorrectionsLayer([(TICKET, "extraction")], shipped, shipped.tasks)
    classifier = build_classifier(registry, None, text_model=shipped, corrections=corrections)

    for text in (TICKET, f"  {TICKET.upper()}\n", TICKET.replace(" ", "   ")):
        result = classifier.classify(text)
        assert (result.task, result.layer, result.confidence) == ("extraction", "corrections", 1.0)
        assert result.attempts[0].detail == "corrected by feedback" and len(result.attempts) == 1


@pytest.mark.parametrize("edit", [("48213", "51877"), ("Maria Lopez", "John Smith"), ("3 blue", "5 blue")])
def test_a_near_duplicate_gets_the_correction(shipped: TextModel, edit: tuple[str, str]) -> None:
    layer = CorrectionsLayer([(TICKET, "extraction")], shipped, shipped.tasks)

    verdict = layer.classify(TICKET.replace(*edit))

    assert verdict.task == "extraction" and NEAR_DUPLICATE <= verdict.confidence < 1.0
    assert verdict.detail.startswith("near duplicate of a corrected prompt")


def test_the_same_template_around_another_body_is_not_corrected(shipped: TextModel, registry: Registry) -> None:
    corrections = CorrectionsLayer([(TICKET, "extraction")], shipped, shipped.tasks)
    classifier = build_classifier(registry, None, text_model=shipped, corrections=corrections)

    verdict = corrections.classify(OTHER_BODY)
    result = classifier.classify(OTHER_BODY)
    unrelated = corrections.classify("What is the capital of Australia?")

    assert verdict.task is None and verdict.detail.startswith("no near duplicate (best cosine 0.")
    assert result.layer != "corrections" and not result.attempts[0].accepted
    assert unrelated.task is None


def test_unknown_tasks_are_dropped(shipped: TextModel, registry: Registry) -> None:
    corrections = CorrectionsLayer([(TICKET, "poetry"), ("   ", "math")], shipped, shipped.tasks)

    assert len(corrections) == 0
    assert corrections.classify(TICKET).task is None
    classifier = build_classifier(registry, None, text_model=shipped, corrections=corrections)
    assert classifier.layer_names == ("keywords", "text_model"), "an empty corrections layer is left out"


def test_the_newest_label_of_a_prompt_wins(shipped: TextModel) -> None:
    labels = [(TICKET.lower(), "summarization"), (TICKET, "extraction"), ("solve 2x = 4", "math")]
    layer = CorrectionsLayer(labels, shipped, shipped.tasks)

    assert len(layer) == 2
    assert layer.classify(TICKET).task == "summarization"
    assert layer.classify(TICKET.replace("48213", "51877")).task == "summarization"
    assert layer.classify("Solve 2x = 4").task == "math"


def test_without_a_text_model_only_the_exact_prompt_is_corrected(shipped: TextModel) -> None:
    layer = CorrectionsLayer([(TICKET, "extraction")], None, shipped.tasks)

    assert layer.classify(TICKET).task == "extraction"
    assert layer.classify(TICKET.replace("48213", "51877")).task is None


def test_the_cascade_order_and_the_static_layer_left_out_when_a_text_model_serves(
    shipped: TextModel, registry: Registry
) -> None:
    corrections = CorrectionsLayer([(TICKET, "extraction")], shipped, shipped.tasks)

    embedder: Any = NoEmbedder()
    served = build_classifier(registry, embedder, text_model=shipped, corrections=corrections)
    refitted = TextModel(shipped.tasks[:-1], shipped.blocks, shipped.weights[:, :-1], shipped.bias[:-1],
                         shipped.temperature)  # fmt: skip
    mismatched = build_classifier(registry, None, text_model=refitted, corrections=corrections)

    assert served.layer_names == ("corrections", "keywords", "text_model")
    assert mismatched.layer_names == ("corrections", "keywords"), "a model fitted for other tasks is not used"
    assert served.classify("Translate into French: good morning").layer in {"keywords", "text_model"}


def test_sources_rebuild_corrections_only_when_the_labels_change(registry: Registry, tmp_path: Path) -> None:
    sources = ClassifierSources(tmp_path)
    labels = [(TICKET, "extraction")]

    first = sources.corrections(labels, registry)
    assert first is not None and first.classify(TICKET.replace("48213", "1")).task == "extraction"
    assert sources.corrections(list(labels), registry) is first
    second = sources.corrections([("solve 2x = 4", "math"), *labels], registry)
    assert second is not first and second is not None and len(second) == 2
    assert sources.corrections([], registry) is None


def text_model_task(model: TextModel, text: str) -> str:
    return model.tasks[int(model.probabilities([text])[0].argmax())]


def test_a_request_is_featurised_once_for_the_corrections_and_the_text_model() -> None:
    from router_plugins.classify.text_model import TextModelLayer

    model = TextModel.load(SHIPPED_FILE)
    layer = CorrectionsLayer([("Please summarise this memo for me", "summarization")], model, model.tasks)
    text = "What is the tallest mountain in South America, and how tall is it?"
    before = model._featurizer.row.cache_info()  # type: ignore[attr-defined]

    assert layer.classify(text).task is None, "not a near duplicate"
    TextModelLayer(model).classify(text)

    after = model._featurizer.row.cache_info()  # type: ignore[attr-defined]
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
