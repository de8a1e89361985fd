"""What one classifier layer answers, and the two kinds of layer: reading the text, or the prompt's embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class LayerVerdict:
    task: str | None
    confidence: float
    detail: str = ""


class ClassifierLayer(Protocol):
    """A layer that reads only the text (keywords, the static table): cheap enough for every request."""

    name: str

    def classify(self, text: str) -> LayerVerdict: ...


class EmbeddingLayer(Protocol):
    """A layer that reads the prompt's transformer embedding, computed by the caller (batched, maybe on a GPU).

    The embedding is one unit-length row from `router_plugins.embeddings.TransformerEmbedder.embed([text])`
    (MiniLM over `focus(text)`), the same model the layer's reference vectors came from.
    """

    name: str
    needs_embedding: Literal[True]

    def classify(self, text: str, embedding: np.ndarray) -> LayerVerdict: ...


AnyLayer = ClassifierLayer | EmbeddingLayer


def needs_embedding(layer: AnyLayer) -> bool:
    return getattr(layer, "needs_embedding", False) is True


def check_embedding(embedding: np.ndarray, dimension: int) -> str | None:
    """Why this embedding cannot be used (wrong shape, not finite), or None when it can."""
    if embedding.ndim != 1 or embedding.shape[0] != dimension:
        return f"embedding has shape {tuple(embedding.shape)}, expected ({dimension},)"
    if not np.isfinite(embedding).all() or not embedding.any():
        return "embedding is zero or not finite"
    return None
