"""What one classifier layer answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LayerVerdict:
    task: str | None
    confidence: float
    detail: str = ""


class ClassifierLayer(Protocol):
    name: str

    def classify(self, text: str) -> LayerVerdict: ...
