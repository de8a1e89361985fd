"""Task classification: a cascade of layers from keyword rules to embeddings.

1 keywords and patterns → 2 static embedding → 3 transformer kNN → 4 neural head → 5 fallback. Layers 3-4 read a
precomputed transformer embedding and come from a fitted `TaskModel` (see `model`).
"""

from __future__ import annotations

import logging

from ..registry import Registry
from .cascade import FALLBACK_LAYER, SKIPPED_NO_EMBEDDING, TaskClassifier
from .corrections import CorrectionsLayer
from .head import HeadTraining, TaskHead, TorchHeadLayer, train_head
from .keywords import KeywordLayer
from .knn import ReferenceSet, TransformerKnnLayer
from .layer import AnyLayer, ClassifierLayer, EmbeddingLayer, LayerVerdict
from .model import MODEL_FILE, MODEL_VERSION, TaskModel, fit_task_model
from .static_embedding import StaticEmbedder, StaticEmbeddingLayer
from .text_model import TextModel, TextModelLayer, load_text_model
from .training import LabelledPrompt, load_labelled, registry_prompts

log = logging.getLogger(__name__)

__all__ = [
    "FALLBACK_LAYER",
    "MODEL_FILE",
    "MODEL_VERSION",
    "SKIPPED_NO_EMBEDDING",
    "ClassifierLayer",
    "CorrectionsLayer",
    "EmbeddingLayer",
    "HeadTraining",
    "KeywordLayer",
    "LabelledPrompt",
    "LayerVerdict",
    "ReferenceSet",
    "StaticEmbedder",
    "StaticEmbeddingLayer",
    "TaskClassifier",
    "TaskHead",
    "TaskModel",
    "TextModel",
    "TextModelLayer",
    "TorchHeadLayer",
    "TransformerKnnLayer",
    "build_classifier",
    "fit_task_model",
    "load_labelled",
    "load_text_model",
    "registry_prompts",
    "train_head",
]


def build_classifier(
    registry: Registry,
    embedder: StaticEmbedder | None,
    task_model: TaskModel | None = None,
    text_model: TextModel | None = None,
    corrections: CorrectionsLayer | None = None,
) -> TaskClassifier:
    """The cascade the registry asks for: corrections, keywords, the text model (when it was fitted for these
    task names), the static layer (only without a text model, and with an embedder) and layers 3-4 (with a task
    model; pass none to keep them off the request path). A model fitted for other task names is logged, not used."""
    settings = registry.router.classifier
    names = [t.name for t in registry.tasks]
    layers: list[tuple[AnyLayer, float]] = []
    if corrections is not None and len(corrections):
        layers.append((corrections, 0.0))
    if settings.keywords.enabled:
        layers.append((KeywordLayer(registry.tasks), settings.keywords.level))
    serves_text_model = False
    if text_model is not None and settings.text_model.enabled:
        problem = text_model.mismatch(names)
        if problem:
            log.warning("not using the text model: %s; fit one with autoroute train-classifier", problem)
        else:
            layers.append((TextModelLayer(text_model), settings.text_model.level))
            serves_text_model = True
    # The static layer reads English only and is less accurate: with a text model it would only add cost.
    if not serves_text_model and settings.static_embedding.enabled and embedder is not None:
        layers.append((StaticEmbeddingLayer(embedder, registry.tasks), settings.static_embedding.level))
    if task_model is not None:
        problem = task_model.mismatch(registry.tasks)
        if problem:
            log.warning("not using the task model: %s; refit it for this registry", problem)
        else:
            knn, head = task_model.layers()
            if settings.transformer_knn.enabled:
                layers.append((knn, settings.transformer_knn.level))
            if settings.torch_head.enabled:
                layers.append((head, settings.torch_head.level))
    return TaskClassifier(layers, registry.router.fallback_task, settings.max_chars)
