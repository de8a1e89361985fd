"""The classifier's part of the registry (`router.classifier`): which layers run, and their thresholds."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class LayerSettings:
    enabled: bool = True
    threshold: float | None = None
    """The layer decides when its confidence reaches this; below it the next layer is asked (1.0: never decides).
    Left out, the layer's own default (ClassifierSettings.DEFAULT_THRESHOLDS) applies."""

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"a classifier layer threshold must be in [0, 1], got {self.threshold}")

    @property
    def level(self) -> float:
        """The threshold, once ClassifierSettings has filled in its default."""
        if self.threshold is None:
            raise ValueError("this layer's threshold was never resolved")
        return self.threshold


@dataclass(frozen=True)
class ClassifierSettings:
    """The task classifier cascade, asked in this order; the first layer sure enough decides.

    Corrections (tasks feedback named for a prompt and its near duplicates) come first; then keyword rules, the
    text model (character and word n-grams, fitted on real prompts in many languages: the layer that decides most
    requests), the static-embedding similarity (used only when no text model fits the registry's tasks), and the
    transformer layers 3-4. On a CPU the transformer layers stay off the request path unless
    `transformer_budget_ms` allows them (they are fitted and used by `autoroute train-classifier`, offline); on a
    GPU they run inline. The text model's threshold was chosen by cross-validation on real prompts
    (bench/train_text_model.py). There, keyword rules were less precise than the text model at every threshold: with
    the shipped text model, turn them off (as config.yaml does); they remain the first cheap layer of registries
    whose own task names no text model was fitted for.
    """

    DEFAULT_THRESHOLDS: ClassVar[Mapping[str, float]] = {
        "keywords": 0.55,
        "text_model": 0.1,
        "static_embedding": 0.85,
        "transformer_knn": 0.8,
        "torch_head": 0.25,
    }
    keywords: LayerSettings = LayerSettings()
    text_model: LayerSettings = LayerSettings()
    static_embedding: LayerSettings = LayerSettings()
    transformer_knn: LayerSettings = LayerSettings()
    torch_head: LayerSettings = LayerSettings()
    max_chars: int = 4000
    """Only the start and end of very long prompts are read by the classifier."""
    transformer_budget_ms: float | None = None
    """Let layers 3-4 run on the request path on a CPU, waiting at most this long for the embedding, and only when
    no other request's embedding is queued. Left out: inline only on a GPU."""

    def __post_init__(self) -> None:
        if self.max_chars < 100:
            raise ValueError("router.classifier.max_chars must be >= 100")
        if self.transformer_budget_ms is not None and self.transformer_budget_ms <= 0:
            raise ValueError("router.classifier.transformer_budget_ms must be > 0")
        for name, default in self.DEFAULT_THRESHOLDS.items():
            layer: LayerSettings = getattr(self, name)
            if layer.threshold is None:
                object.__setattr__(self, name, dataclasses.replace(layer, threshold=default))
