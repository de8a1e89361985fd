"""Layers 3-4 (transformer kNN, neural head), the task model artifact that holds them, and their wiring and settings.

Embeddings here are small synthetic vectors: the layers only see numbers, so the arithmetic can be checked exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from router_plugins.classify import (
    FALLBACK_LAYER,
    SKIPPED_NO_EMBEDDING,
    HeadTraining,
    LabelledPrompt,
    LayerVerdict,
    ReferenceSet,
    TaskHead,
    TaskModel,
    TorchHeadLayer,
    TransformerKnnLayer,
    build_classifier,
    fit_task_model,
    train_head,
)
from router_plugins.classify.model import MODEL_VERSION, tasks_fingerprint
from router_plugins.embeddings import MODEL_ID
from router_plugins.registry import ClassifierSettings, LayerSettings, Registry, TaskType, parse_registry
from router_plugins.schema import ConfigError

DIM = 8
TASKS = ("apples", "bananas", "cherries")


def axis(i: int, scale: float = 1.0) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = scale
    return v


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


# -- layer 3: kNN over reference embeddings ----------------------------------------------------------------------


def reference(vectors: Sequence[np.ndarray], labels: Sequence[str]) -> ReferenceSet:
    return ReferenceSet.from_labels(TASKS, np.stack(vectors), labels)


def test_knn_confidence_is_a_softmax_of_per_task_top_k_means() -> None:
    ref = reference([axis(0), axis(0), axis(1)], ["apples", "apples", "bananas"])
    layer = TransformerKnnLayer(ref, k=2, temperature=1.0)

    verdict = layer.classify("text", axis(0))

    # apples: mean(1, 1) = 1; bananas: its only reference, 0; cherries: none, so no probability at all.
    assert verdict.task == "apples"
    assert verdict.confidence == pytest.approx(math.e / (math.e + 1))
    assert verdict.detail == f"apples={math.e / (math.e + 1):.3f}, bananas={1 / (math.e + 1):.3f}, cherries=0.000"


def test_knn_top_k_mean_discounts_one_lucky_neighbour() -> None:
    lucky = unit(axis(0) + axis(2, 0.5))
    vectors = [lucky, *[axis(3)] * 4, *[unit(axis(0) + axis(1, 1.2))] * 5]
    ref = reference(vectors, ["apples"] * 5 + ["bananas"] * 5)

    assert TransformerKnnLayer(ref, k=1).classify("t", axis(0)).task == "apples"  # the nearest single reference
    assert TransformerKnnLayer(ref, k=5).classify("t", axis(0)).task == "bananas"  # the best five


def test_knn_lower_temperature_is_more_confident() -> None:
    ref = reference([unit(axis(0) + axis(1, 0.2)), unit(axis(1) + axis(0, 0.2))], ["apples", "bananas"])
    query = unit(axis(0) + axis(1, 0.5))

    soft = TransformerKnnLayer(ref, k=1, temperature=0.5).classify("t", query).confidence
    sharp = TransformerKnnLayer(ref, k=1, temperature=0.02).classify("t", query).confidence

    assert 0.5 < soft < sharp <= 1.0


@pytest.mark.parametrize(
    ("embedding", "detail"),
    [
        (np.ones(DIM + 1, dtype=np.float32), f"embedding has shape ({DIM + 1},), expected ({DIM},)"),
        (np.ones((1, DIM), dtype=np.float32), f"embedding has shape (1, {DIM}), expected ({DIM},)"),
        (np.zeros(DIM, dtype=np.float32), "embedding is zero or not finite"),
        (np.full(DIM, np.nan, dtype=np.float32), "embedding is zero or not finite"),
    ],
)
def test_knn_unusable_embedding_gives_no_task(embedding: np.ndarray, detail: str) -> None:
    layer = TransformerKnnLayer(reference([axis(0)], ["apples"]))

    assert layer.classify("t", embedding) == LayerVerdict(None, 0.0, detail)


def test_knn_without_references_gives_no_task() -> None:
    empty = ReferenceSet(TASKS, np.zeros((0, DIM), np.float32), np.zeros(0, np.int64))

    assert TransformerKnnLayer(empty).classify("t", axis(0)).task is None


def test_reference_set_checks_its_labels() -> None:
    with pytest.raises(ValueError, match="not among the tasks: durians"):
        reference([axis(0)], ["durians"])
    with pytest.raises(ValueError, match="one label per row"):
        ReferenceSet(TASKS, np.zeros((2, DIM), np.float32), np.zeros(1, np.int64))
    assert reference([axis(0), axis(1)], ["apples", "apples"]).counts() == {"apples": 2, "bananas": 0, "cherries": 0}


# -- layer 4: the neural head ------------------------------------------------------------------------------------


def clusters(per_task: int = 20, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three well-separated clusters of unit vectors, one per task."""
    rng = np.random.default_rng(seed)
    vectors, labels = [], []
    for i, task in enumerate(TASKS):
        for _ in range(per_task):
            vectors.append(unit(axis(i, 3.0) + rng.normal(0, 0.4, DIM).astype(np.float32)))
            labels.append(task)
    return np.stack(vectors), labels


FAST = HeadTraining(hidden=16, epochs=30, batch_size=16, learning_rate=1e-2)


def test_head_learns_separable_tasks() -> None:
    vectors, labels = clusters()
    test_vectors, test_labels = clusters(seed=1)

    head = train_head(vectors, labels, TASKS, config=FAST)

    predicted = [TASKS[i] for i in head.probabilities(test_vectors).argmax(axis=1)]
    assert np.mean([p == t for p, t in zip(predicted, test_labels)]) >= 0.95
    assert [w.shape for w, _ in head.layers] == [(DIM, 16), (16, 3)]


def test_head_training_is_deterministic_for_a_seed() -> None:
    vectors, labels = clusters()

    first = train_head(vectors, labels, TASKS, config=FAST)
    second = train_head(vectors, labels, TASKS, config=FAST)

    np.testing.assert_array_equal(first.layers[0][0], second.layers[0][0])


def test_head_follows_sample_weights() -> None:
    # The same vector labelled both ways: the heavier label wins.
    vectors = np.stack([axis(0)] * 4 + [axis(1)] * 4)
    labels = ["apples", "apples", "bananas", "bananas", "cherries", "cherries", "cherries", "cherries"]
    weights = np.array([3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])

    config = HeadTraining(hidden=0, epochs=100, learning_rate=5e-2, dropout=0.0)

    head = train_head(vectors, labels, TASKS, weights, config)

    assert TASKS[int(head.probabilities(axis(0)).argmax())] == "apples"


def test_head_linear_when_hidden_is_zero() -> None:
    vectors, labels = clusters(per_task=5)

    head = train_head(vectors, labels, TASKS, config=dataclasses.replace(FAST, hidden=0))

    assert [w.shape for w, _ in head.layers] == [(DIM, 3)]


def test_head_rejects_unknown_labels_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="not among the tasks: durians"):
        train_head(np.stack([axis(0)]), ["durians"], TASKS, config=FAST)
    with pytest.raises(ValueError, match="do not chain"):
        TaskHead(TASKS, ((np.zeros((DIM, 4)), np.zeros(4)), (np.zeros((5, 3)), np.zeros(3))))
    with pytest.raises(ValueError, match="2 outputs for 3 tasks"):
        TaskHead(TASKS, ((np.zeros((DIM, 2)), np.zeros(2)),))


def test_head_layer_answers_the_most_probable_task() -> None:
    # A linear head that copies the first three coordinates into the logits.
    head = TaskHead(TASKS, ((np.eye(DIM, 3, dtype=np.float32), np.zeros(3, np.float32)),))
    layer = TorchHeadLayer(head)

    verdict = layer.classify("t", axis(2, 5.0))

    assert verdict.task == "cherries"
    assert verdict.confidence == pytest.approx(math.exp(5) / (math.exp(5) + 2))
    assert layer.classify("t", np.ones(3, np.float32)).task is None


# -- the task model artifact -------------------------------------------------------------------------------------


def toy_tasks() -> tuple[TaskType, ...]:
    return (
        TaskType("apples", description="apple fruit", examples=("an apple", "apple pie")),
        TaskType("bananas", examples=("a banana",)),
        TaskType("cherries", examples=("cherry jam",)),
    )


def fake_embed(texts: Sequence[str]) -> np.ndarray:
    """Each fruit word points along its own axis; anything else along the last one."""
    rows = []
    for text in texts:
        v = np.zeros(DIM, dtype=np.float32)
        for i, word in enumerate(("apple", "banana", "cherry")):
            v[i] += text.lower().count(word)
        v[DIM - 1] += 0.1
        rows.append(unit(v))
    return np.stack(rows)


def toy_model() -> TaskModel:
    labelled = [
        LabelledPrompt("banana bread", "bananas", source="bakery"),
        LabelledPrompt("banana split", "bananas", source="diner"),
        LabelledPrompt("cherry tart", "cherries", source="bakery"),
        LabelledPrompt("durian", "durians", source="market"),
        LabelledPrompt("apple crumble", "apples", source="bakery"),
    ]
    return fit_task_model(toy_tasks(), labelled, fake_embed, exclude=["Apple  Crumble"], training=FAST)


def test_fit_uses_the_registry_examples_and_the_kept_labelled_prompts() -> None:
    model = toy_model()

    # Registry: description + 2 examples, 1, 1; labelled: 2 bananas, 1 cherry; the durian and the excluded row left out.
    assert model.reference.counts() == {"apples": 3, "bananas": 3, "cherries": 2}
    assert model.meta["counts"] == {
        "apples/registry": 3, "bananas/labelled": 2, "bananas/registry": 1, "cherries/labelled": 1,
        "cherries/registry": 1,
    }  # fmt: skip
    assert model.embedding_model == MODEL_ID
    assert model.tasks_fingerprint == tasks_fingerprint(toy_tasks())
    knn, head = model.layers()
    assert knn.classify("t", fake_embed(["cherry"])[0]).task == "cherries"
    assert head.classify("t", fake_embed(["banana"])[0]).task == "bananas"


def test_fit_takes_feedback_rows_that_come_as_embeddings() -> None:
    embedded = [(fake_embed(["cherry"])[0], "cherries")] * 3 + [(fake_embed(["fig"])[0], "figs")]

    model = fit_task_model(toy_tasks(), [], fake_embed, embedded=embedded, labelled_per_task=2, training=FAST)

    # Two of the three cherry rows (the cap), none for a task the registry lacks.
    assert model.meta["counts"]["cherries/feedback"] == 2 and model.reference.counts()["cherries"] == 3
    assert not any(key.startswith("figs") for key in model.meta["counts"])


def test_fit_from_embeddings_alone() -> None:
    bare = [TaskType("apples"), TaskType("bananas")]
    embedded = [(fake_embed(["apple"])[0], "apples"), (fake_embed(["banana"])[0], "bananas")]

    model = fit_task_model(bare, [], fake_embed, embedded=embedded, training=FAST)

    assert model.reference.counts() == {"apples": 1, "bananas": 1}


def test_fit_without_anything_to_learn_from_fails() -> None:
    with pytest.raises(ValueError, match="nothing to fit on"):
        fit_task_model([TaskType("a"), TaskType("b")], [], fake_embed, training=FAST)


def test_task_model_round_trip(tmp_path: Path) -> None:
    model = toy_model()
    path = tmp_path / "artifacts" / f"{MODEL_VERSION}.npz"

    assert model.save(path) == path
    loaded = TaskModel.load(path)

    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind
    assert loaded.tasks == model.tasks and loaded.tasks_fingerprint == model.tasks_fingerprint
    assert loaded.meta == model.meta
    np.testing.assert_array_equal(loaded.reference.labels, model.reference.labels)
    np.testing.assert_allclose(loaded.reference.vectors, model.reference.vectors, atol=1e-3)  # stored as float16
    queries = fake_embed(["apple", "banana split", "cherry"])
    np.testing.assert_allclose(loaded.head.probabilities(queries), model.head.probabilities(queries), rtol=1e-5)


def test_task_model_save_replaces_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    path.write_bytes(b"an older, different file")

    toy_model().save(path)

    assert TaskModel.load(path).tasks == TASKS


def test_task_model_refuses_another_version_or_embedding_model(tmp_path: Path) -> None:
    path = toy_model().save(tmp_path / "m.npz")

    with pytest.raises(ValueError, match="fitted on embeddings of"):
        TaskModel.load(path, embedding_model="some-other-model")

    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["version"] = np.array("task-model-v0")
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match=f"is task-model-v0, expected {MODEL_VERSION}"):
        TaskModel.load(tmp_path / "old.npz")


def test_task_model_mismatch_and_staleness() -> None:
    model = toy_model()
    edited = (dataclasses.replace(toy_tasks()[0], examples=("a green apple",)), *toy_tasks()[1:])

    assert model.mismatch(toy_tasks()) is None and not model.is_stale(toy_tasks())
    assert model.mismatch(edited) is None and model.is_stale(edited)
    assert "the registry has ['apples', 'bananas']" in (model.mismatch(toy_tasks()[:2]) or "")


# -- wiring: build_classifier and the settings -------------------------------------------------------------------

CONFIG = """
models:
  - {name: m, litellm_params: {model: openai/m}}
tasks:
  - {name: apples, keywords: [apple]}
  - {name: bananas, keywords: [banana]}
  - {name: cherries}
router:
  fallback_task: cherries
  classifier: %s
"""


def registry(classifier: str = "{}") -> Registry:
    return parse_registry(CONFIG % classifier)


def test_build_classifier_adds_layers_3_and_4_from_a_task_model() -> None:
    classifier = build_classifier(registry(), None, toy_model())

    assert classifier.layer_names == ("keywords", "transformer_knn", "torch_head")
    assert classifier.embedding_layers == ("transformer_knn", "torch_head")

    first = classifier.classify("a cherry")
    assert classifier.wants_embedding(first)
    assert [a.detail for a in first.attempts[1:3]] == [SKIPPED_NO_EMBEDDING] * 2
    assert [a.threshold for a in first.attempts[:3]] == [0.55, 0.8, 0.25]

    result = classifier.resume("a cherry", fake_embed(["a cherry"])[0], first)
    assert (result.task, result.layer) == ("cherries", "transformer_knn")


def test_build_classifier_follows_the_layer_settings() -> None:
    settings = "{transformer_knn: {enabled: false}, torch_head: {threshold: 1.0}}"
    classifier = build_classifier(registry(settings), None, toy_model())

    assert classifier.layer_names == ("keywords", "torch_head")
    result = classifier.classify("durian", fake_embed(["durian"])[0])
    assert result.layer == FALLBACK_LAYER and result.attempts[1].threshold == 1.0


def test_build_classifier_leaves_out_a_task_model_for_other_tasks(caplog: pytest.LogCaptureFixture) -> None:
    with_figs = (CONFIG % "{}").replace("  - {name: cherries}\n", "  - {name: cherries}\n  - {name: figs}\n")
    other = parse_registry(with_figs)

    with caplog.at_level(logging.WARNING):
        classifier = build_classifier(other, None, toy_model())

    assert classifier.layer_names == ("keywords",)
    assert "not using the task model" in caplog.text


def test_classifier_settings_defaults_and_partial_overrides() -> None:
    assert ClassifierSettings().torch_head == LayerSettings(True, 0.25)
    assert ClassifierSettings().static_embedding == LayerSettings(True, 0.85)

    settings = registry("{transformer_knn: {enabled: false}, keywords: {threshold: 0.7}}").router.classifier

    # A layer given without a threshold keeps its own default, not a generic one.
    assert settings.transformer_knn == LayerSettings(False, 0.8)
    assert settings.keywords == LayerSettings(True, 0.7)


@pytest.mark.parametrize(
    ("classifier", "message"),
    [
        ("{torch_head: {threshold: 1.5}}", "threshold must be in \\[0, 1\\]"),
        ("{torch_head: {treshold: 0.5}}", "did you mean 'threshold'"),
        ("{neural_head: {enabled: true}}", "unknown key 'neural_head'"),
        ("{max_chars: 10}", "max_chars must be >= 100"),
    ],
)
def test_classifier_settings_are_a_closed_schema(classifier: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        registry(classifier)
