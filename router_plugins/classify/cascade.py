"""The task classifier cascade: cheap layers first, each with a threshold, every attempt recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..progress import track
from ..types import Classification, LayerAttempt
from .layer import AnyLayer, needs_embedding

FALLBACK_LAYER = "fallback"
SKIPPED_NO_EMBEDDING = "skipped: no embedding given"


class TaskClassifier:
    """Asks each layer in order; the first whose confidence reaches its threshold decides.

    Layers that read an embedding are asked only when the caller passes one; without it their attempt is recorded
    as skipped. The gateway therefore calls `classify(text)` first (layers 1-2, about a millisecond), and only when
    `wants_embedding(result)` computes the embedding (batched, off the event loop) and calls `resume`, which asks the
    remaining layers without asking the cheap ones again; `classify_batch` does the same for many prompts at once
    (the evaluation's way).

    When no layer decides, the fallback task is returned flagged `needs_clarification`, so the router can play safe
    (a generalist) and the feedback loop can find the prompts the layers miss.
    """

    def __init__(
        self,
        layers: Sequence[tuple[AnyLayer, float]],
        fallback_task: str,
        max_chars: int = 4000,
    ) -> None:
        self._layers = tuple(layers)
        self._fallback = fallback_task
        self._max_chars = max_chars

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer, _ in self._layers)

    @property
    def embedding_layers(self) -> tuple[str, ...]:
        """Names of the layers that are asked only when an embedding is given."""
        return tuple(layer.name for layer, _ in self._layers if needs_embedding(layer))

    def wants_embedding(self, result: Classification) -> bool:
        """True when `result` fell back after skipping a layer for want of an embedding: one may settle it."""
        return any(attempt.detail == SKIPPED_NO_EMBEDDING for attempt in result.attempts)

    def _clip(self, text: str) -> str:
        if len(text) <= self._max_chars:
            return text
        # The ask is usually at the start or the end of a long prompt (an instruction, then pasted material).
        half = self._max_chars // 2
        return f"{text[:half]}\n{text[-half:]}"

    def classify(self, text: str, embedding: np.ndarray | None = None) -> Classification:
        """Ask every layer in turn; layers needing an embedding are skipped when `embedding` is None."""
        return self._run(self._clip(text), embedding, 0, [])

    def resume(self, text: str, embedding: np.ndarray, previous: Classification) -> Classification:
        """Continue `previous` (from `classify(text)` without an embedding) from its first skipped layer."""
        attempts = list(previous.attempts)
        start = next((i for i, a in enumerate(attempts) if a.detail == SKIPPED_NO_EMBEDDING), None)
        if start is None:
            return previous
        return self._run(self._clip(text), embedding, start, attempts[:start])

    def classify_batch(
        self,
        texts: Sequence[str],
        embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    ) -> list[Classification]:
        """What the gateway does per request, for many texts: `classify` each, then, given `embed`, one batched
        embedding of the texts the cheap layers left unsure and `resume` for those. Reports its progress
        (`router_plugins.progress`), as the embedding does its own."""
        results = [self.classify(text) for text in track(texts, "classifying", unit="prompts")]
        unsure = [i for i, result in enumerate(results) if self.wants_embedding(result)]
        if embed is None or not unsure:
            return results
        vectors = embed([texts[i] for i in unsure])
        for row, i in enumerate(unsure):
            results[i] = self.resume(texts[i], vectors[row], results[i])
        return results

    def _run(self, text: str, embedding: np.ndarray | None, start: int, attempts: list[LayerAttempt]) -> Classification:
        for layer, threshold in self._layers[start:]:
            if needs_embedding(layer) and embedding is None:
                attempts.append(LayerAttempt(layer.name, None, 0.0, threshold, False, 0.0, SKIPPED_NO_EMBEDDING))
                continue
            started = time.perf_counter()
            if needs_embedding(layer):
                assert embedding is not None  # layers that need one were skipped above without it
                verdict = layer.classify(text, embedding)  # type: ignore[call-arg]
            else:
                verdict = layer.classify(text)  # type: ignore[call-arg]
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
