"""Classifier thresholds learned by `autoroute tune`: versioned state beside the other artifacts, overlaid on the
registry's (`thresholds-<version>.json`, pointed at by `thresholds-current.json`). The YAML stays the human's."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .datadir import read_json, read_pointer
from .registry import ClassifierSettings, Registry

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "autoroute-thresholds-v1"
POINTER_FILE = "thresholds-current.json"
LAYERS: tuple[str, ...] = tuple(ClassifierSettings.DEFAULT_THRESHOLDS)


def apply_thresholds(registry: Registry, thresholds: Mapping[str, float]) -> Registry:
    """`registry` with its classifier layers at `thresholds` (layer -> value in [0, 1]; unknown layers ignored)."""
    settings = registry.router.classifier
    changes = {
        name: dataclasses.replace(getattr(settings, name), threshold=float(value))
        for name, value in thresholds.items()
        if name in LAYERS
    }
    if not changes:
        return registry
    router = dataclasses.replace(registry.router, classifier=dataclasses.replace(settings, **changes))
    return dataclasses.replace(registry, router=router)


def load_tuned_thresholds(artifacts_dir: Path) -> dict[str, float] | None:
    """The thresholds `thresholds-current.json` points at; None when there are none or they cannot be read
    (logged: serving goes on with the YAML's)."""
    path = read_pointer(artifacts_dir, POINTER_FILE)
    if path is None:
        return None

    def check(data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValueError("the file is not a JSON object")
        if data.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {ARTIFACT_FORMAT!r}")
        if not isinstance(data["thresholds"], dict):
            raise ValueError("`thresholds` is not an object")
        return data["thresholds"]

    values = read_json(path, "a thresholds file", check)
    if values is None:
        return None
    thresholds: dict[str, float] = {}
    for layer, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
            thresholds[str(layer)] = float(value)
        else:
            log.warning("ignoring the tuned threshold %r of layer %s: not a number in [0, 1]", value, layer)
    return thresholds


def with_tuned_thresholds(registry: Registry, artifacts_dir: Path | None) -> Registry:
    """The registry as served: the YAML's thresholds overlaid with the tuned ones in `artifacts_dir`, if any."""
    if artifacts_dir is None:
        return registry
    return apply_thresholds(registry, load_tuned_thresholds(artifacts_dir) or {})


__all__ = [
    "ARTIFACT_FORMAT",
    "LAYERS",
    "POINTER_FILE",
    "apply_thresholds",
    "load_tuned_thresholds",
    "with_tuned_thresholds",
]
