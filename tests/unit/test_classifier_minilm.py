"""Layers 3-4 on real MiniLM embeddings: fit a small task model from registry examples, save it, load it, and let
the cascade finish prompts that the keyword layer leaves open. Loads the model once for the module (~5 s)."""

from __future__ import annotations

import numpy as np
import pytest

from router_plugins.classify import HeadTraining, LayerVerdict, TaskClassifier, TaskModel, fit_task_model
from router_plugins.classify.cascade import FALLBACK_LAYER
from router_plugins.embeddings import TransformerEmbedder
from router_plugins.registry import TaskType, default_tasks

WANTED = ("math", "translation", "chat", "summarization")


@pytest.fixture(scope="module")
def embedder() -> TransformerEmbedder:
    return TransformerEmbedder(device="cpu")


@pytest.fixture(scope="module")
def tasks() -> tuple[TaskType, ...]:
    chosen = [t for t in default_tasks() if t.name in WANTED]
    return tuple(TaskType(t.name, t.description, examples=t.examples[:12]) for t in chosen)


@pytest.fixture(scope="module")
def model(
    embedder: TransformerEmbedder, tasks: tuple[TaskType, ...], tmp_path_factory: pytest.TempPathFactory
) -> TaskModel:
    fitted = fit_task_model(tasks, [], embedder.embed, training=HeadTraining(epochs=60))
    return TaskModel.load(fitted.save(tmp_path_factory.mktemp("artifacts") / "task-model-v1.npz"))


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("what's seventeen times twenty-three", "math"),
        ("Wie sagt man 'good night' auf Französisch?", "translation"),
        ("hey! long time no see, how have you been?", "chat"),
        (
            "Give me the gist of this article in two lines: the city council approved the budget after a long debate.",
            "summarization",
        ),
    ],
)
def test_knn_and_head_agree_on_clear_prompts(
    embedder: TransformerEmbedder, model: TaskModel, text: str, task: str
) -> None:
    knn, head = model.layers()
    vector = embedder.embed([text])[0]

    assert knn.classify(text, vector).task == task
    assert head.classify(text, vector).task == task


def test_the_embedding_is_unit_length_and_matches_the_model(embedder: TransformerEmbedder, model: TaskModel) -> None:
    vector = embedder.embed(["anything"])[0]

    assert vector.shape == (model.reference.dimension,)
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-4)


def test_two_phase_cascade_on_real_embeddings(embedder: TransformerEmbedder, model: TaskModel) -> None:
    class Unsure:
        name = "cheap"

        def classify(self, text: str) -> LayerVerdict:
            return LayerVerdict(None, 0.0, "no keyword matched")

    knn, head = model.layers()
    classifier = TaskClassifier([(Unsure(), 0.5), (knn, 0.8), (head, 0.25)], fallback_task="chat")
    text = "ok so like, 3/4 of 96 is what?"

    first = classifier.classify(text)
    assert first.layer == FALLBACK_LAYER and classifier.wants_embedding(first)

    result = classifier.resume(text, embedder.embed([text])[0], first)
    assert result.task == "math" and result.layer in {"transformer_knn", "torch_head"}
    assert not result.needs_clarification


def test_saved_model_is_loaded_from_disk(model: TaskModel) -> None:
    assert set(model.tasks) == set(WANTED)
    assert model.meta["prompts"] == sum(1 + 12 for _ in WANTED)
    assert model.meta["fitted_at"].endswith("Z")
