"""What the served cascade is built from beyond the registry, read from one data directory.

The gateway and `autoroute eval tasks` both build their classifier through `ClassifierSources`, so the evaluation
scores exactly what a gateway on the same config and data directory serves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..datadir import ArtifactVersionError, DamagedArtifact, file_stamp, quarantine
from ..registry import ClassifierSettings, Registry
from .corrections import CorrectionsLayer
from .model import MODEL_FILE, TaskModel
from .text_model import ARTIFACT_FILE, SHIPPED_FILE, TextModel

log = logging.getLogger(__name__)

MAX_CORRECTIONS = 5_000
"""The newest prompts labelled by feedback that the corrections layer holds: its near-duplicate search is a sparse
product with each of them per request, and rebuilding it featurises them all."""


def transformer_inline(settings: ClassifierSettings, device: str | None = None) -> bool:
    """Whether layers 3-4 belong on the request path: on a GPU, or on a CPU with an explicit budget."""
    if not (settings.transformer_knn.enabled or settings.torch_head.enabled):
        return False
    if settings.transformer_budget_ms is not None:
        return True
    if device is None:
        from ..embeddings import choose_device

        device = choose_device()
    return device.startswith("cuda")


@dataclass
class ClassifierSources:
    """The text model (the data directory's fit, else the shipped one), the task model for layers 3-4 and the
    corrections from feedback; each reloaded only when its file or its labels changed."""

    artifacts: Path
    _text: tuple[object, TextModel | None] = (None, None)
    _task: tuple[object, TaskModel | None] = (None, None)
    _corrections: tuple[object, CorrectionsLayer | None] = (None, None)

    def text_model(self) -> TextModel | None:
        stamp = (file_stamp(self.artifacts / ARTIFACT_FILE), file_stamp(SHIPPED_FILE))
        if stamp != self._text[0]:
            self._text = (stamp, self._load_text())
        return self._text[1]

    def _load_text(self) -> TextModel | None:
        for path in (self.artifacts / ARTIFACT_FILE, SHIPPED_FILE):
            if not path.exists():
                continue
            try:
                model = TextModel.load(path)
            except DamagedArtifact as exc:  # moved aside (the shipped one is left alone): the next one serves
                if path != SHIPPED_FILE:
                    quarantine(path, str(exc))
                else:
                    log.error("text model not used: %s", exc)
                continue
            except ArtifactVersionError as exc:
                log.error("text model not used: %s", exc)
                continue
            log.info("text model %s loaded (%s)", path, model.fingerprint)
            return model
        return None

    def task_model(self) -> TaskModel | None:
        path = self.artifacts / MODEL_FILE
        stamp = file_stamp(path)
        if stamp != self._task[0]:
            model = None
            if path.exists():
                try:
                    model = TaskModel.load(path)
                except DamagedArtifact as exc:
                    quarantine(path, str(exc))
                except (ArtifactVersionError, OSError) as exc:
                    log.warning("task model %s not used: %s", path, exc)
            self._task = (stamp, model)
        return self._task[1]

    def corrections(self, labels: Sequence[tuple[str, str]], registry: Registry) -> CorrectionsLayer | None:
        """The corrections layer for these feedback labels (text, task), newest first (the first MAX_CORRECTIONS).

        Building it featurises every label: call it off the event loop first (the result is kept for the same
        labels, model and tasks), then a rebuild on the loop finds it ready."""
        labels = labels[:MAX_CORRECTIONS]
        model = self.text_model()
        key = (tuple(labels), id(model), tuple(t.name for t in registry.tasks))
        if key != self._corrections[0]:
            layer = CorrectionsLayer(labels, model, [t.name for t in registry.tasks]) if labels else None
            self._corrections = (key, layer)
        return self._corrections[1]

    def pointers(self) -> tuple[Path, ...]:
        """Files whose change a serving gateway swaps in: what `autoroute train-classifier` writes."""
        return (self.artifacts / ARTIFACT_FILE, self.artifacts / MODEL_FILE)
