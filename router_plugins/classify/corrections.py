"""Layer 0: tasks that feedback named for earlier prompts, applied to the same prompt and its near duplicates.

A user who corrects a label expects the correction to stick for that prompt, whatever the keyword layer or the
model thought. Applications resend the same templated prompt with small changes (a name, a number), so a prompt
counts as the corrected one when its text-model features are nearly the same (cosine >= NEAR_DUPLICATE).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .layer import LayerVerdict
from .text_model import TextModel
from .training import normalized

NEAR_DUPLICATE = 0.9
"""Cosine of two prompts' n-gram vectors above which they are one prompt with small edits. Different prompts that
share a template (`Translate into English: ...` around other sentences) stay well below it."""


class CorrectionsLayer:
    name = "corrections"

    def __init__(self, labels: Sequence[tuple[str, str]], model: TextModel | None, tasks: Sequence[str]) -> None:
        """`labels`: (prompt text, task), newest first; the newest label of a prompt wins. Tasks the registry lacks
        are dropped."""
        known = set(tasks)
        exact: dict[str, tuple[str, str]] = {}
        for text, task in labels:
            if task in known and text.strip():
                exact.setdefault(normalized(text), (task, text))
        self._exact = {key: task for key, (task, _) in exact.items()}
        self._model = model
        self._tasks = [task for task, _ in exact.values()]
        # The prompts as sent, so a request's features are the ones the text model layer computes for it (cached).
        texts = [text for _, text in exact.values()]
        self._vectors = model.features(texts) if model is not None and texts else None
        self._norms = (
            np.sqrt(np.asarray(self._vectors.multiply(self._vectors).sum(axis=1)).ravel())
            if self._vectors is not None
            else None
        )

    def __len__(self) -> int:
        return len(self._exact)

    def classify(self, text: str) -> LayerVerdict:
        if not self._exact:
            return LayerVerdict(None, 0.0, "no corrections")
        task = self._exact.get(normalized(text))
        if task is not None:
            return LayerVerdict(task, 1.0, "corrected by feedback")
        if self._model is None or self._vectors is None or self._norms is None:
            return LayerVerdict(None, 0.0, "no near duplicate")
        query = self._model.features([text])
        similarity = np.asarray((self._vectors @ query.T).todense()).ravel()
        similarity = similarity / np.maximum(self._norms * np.sqrt(query.multiply(query).sum()), 1e-12)
        best = int(np.argmax(similarity))
        if similarity[best] >= NEAR_DUPLICATE:
            return LayerVerdict(self._tasks[best], float(similarity[best]), f"near duplicate of a corrected prompt "
                                f"(cosine {similarity[best]:.2f})")  # fmt: skip
        return LayerVerdict(None, 0.0, f"no near duplicate (best cosine {similarity[best]:.2f})")
