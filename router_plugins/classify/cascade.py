"""The task classifier cascade: cheap layers first, each with a threshold, every attempt recorded."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..types import Classification, LayerAttempt
from .layer import ClassifierLayer

FALLBACK_LAYER = "fallback"


class TaskClassifier:
    """Asks each layer in order; the first whose confidence reaches its threshold decides.

    When none does, the fallback task is returned flagged `needs_clarification`, so the router can
    play safe (a generalist) and the feedback loop can find the prompts the layers miss.
    """

    def __init__(
        self,
        layers: Sequence[tuple[ClassifierLayer, float]],
        fallback_task: str,
        max_chars: int = 4000,
    ) -> None:
        self._layers = tuple(layers)
        self._fallback = fallback_task
        self._max_chars = max_chars

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer, _ in self._layers)

    def _clip(self, text: str) -> str:
        if len(text) <= self._max_chars:
            return text
        # The ask is usually at the start or the end of a long prompt (an instruction, then pasted material).
        half = self._max_chars // 2
        return f"{text[:half]}\n{text[-half:]}"

    def classify(self, text: str) -> Classification:
        text = self._clip(text)
        attempts: list[LayerAttempt] = []
        for layer, threshold in self._layers:
            started = time.perf_counter()
            verdict = layer.classify(text)
            elapsed = (time.perf_counter() - started) * 1000
            accepted = verdict.task is not None and verdict.confidence >= threshold
            attempts.append(
                LayerAttempt(layer.name, verdict.task, verdict.confidence, threshold, accepted, elapsed, verdict.detail)
            )
            if accepted:
                assert verdict.task is not None
                return Classification(verdict.task, verdict.confidence, layer.name, tuple(attempts))
        attempts.append(LayerAttempt(FALLBACK_LAYER, self._fallback, 0.0, 0.0, True, 0.0, "no layer was sure"))
        return Classification(self._fallback, 0.0, FALLBACK_LAYER, tuple(attempts), needs_clarification=True)
