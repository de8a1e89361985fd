"""Task classification: a cascade of layers from keyword rules to embeddings.

1 keywords and patterns → 2 static embedding → 3 transformer kNN → 4 neural head → 5 fallback. Layers 3-4 read a
precomputed transformer embedding and come from a fitted `TaskModel` (see `model`).
"""

from __future__ import annotations

import logging

from ..registry import Registry
from .cascade import FALLBACK_LAYER, SKIPPED_NO_EMBEDDING, TaskClassifier
from .head import HeadTraining, TaskHead, TorchHeadLayer, train_head
from .keywords import KeywordLayer
from .knn import ReferenceSet, TransformerKnnLayer
from .layer import AnyLayer, ClassifierLayer, EmbeddingLayer, LayerVerdict
from .model import MODEL_FILE, MODEL_VERSION, TaskModel, fit_task_model
from .static_embedding import StaticEmbedder, StaticEmbeddingLayer
from .training import LabelledPrompt, load_labelled, registry_prompts

log = logging.getLogger(__name__)

__all__ = [
    "FALLBACK_LAYER",
    "MODEL_FILE",
    "MODEL_VERSION",
    "SKIPPED_NO_EMBEDDING",
    "ClassifierLayer",
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
    "TorchHeadLayer",
    "TransformerKnnLayer",
    "build_classifier",
    "fit_task_model",
    "load_labelled",
    "registry_prompts",
    "train_head",
]


def build_classifier(
    registry: Registry, embedder: StaticEmbedder | None, task_model: TaskModel | None = None
) -> TaskClassifier:
    """The cascade the registry asks for. The static layer is left out without an embedder, layers 3-4 without a
    task model (or with one fitted for other task names, which is logged)."""
    settings = registry.router.classifier
    layers: list[tuple[AnyLayer, float]] = []
    if settings.keywords.enabled:
        layers.append((KeywordLayer(registry.tasks), settings.keywords.level))
    if settings.static_embedding.enabled and embedder is not None:
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
