"""Task classification: a cascade of layers from keyword rules to embeddings."""

from __future__ import annotations


from ..registry import Registry
from .cascade import TaskClassifier
from .keywords import KeywordLayer
from .layer import ClassifierLayer, LayerVerdict
from .static_embedding import StaticEmbedder, StaticEmbeddingLayer

__all__ = [
    "ClassifierLayer",
    "KeywordLayer",
    "LayerVerdict",
    "StaticEmbedder",
    "StaticEmbeddingLayer",
    "TaskClassifier",
    "build_classifier",
]


def build_classifier(registry: Registry, embedder: StaticEmbedder | None) -> TaskClassifier:
    """The cascade the registry asks for; the embedding layer is left out when no embedder is given."""
    settings = registry.router.classifier
    layers: list[tuple[ClassifierLayer, float]] = []
    if settings.keywords.enabled:
        layers.append((KeywordLayer(registry.tasks), settings.keywords.threshold))
    if settings.static_embedding.enabled and embedder is not None:
        layers.append((StaticEmbeddingLayer(embedder, registry.tasks), settings.static_embedding.threshold))
    return TaskClassifier(layers, registry.router.fallback_task, settings.max_chars)


