"""Model prices: the registry's, else LiteLLM's price map. The gateway and the LiteLLM plugin route and record with
the same prices."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .registry import Registry

log = logging.getLogger(__name__)


def resolve_prices(registry: Registry, model_info: Callable[[str], Mapping[str, Any]]) -> Registry:
    """Fill the prices the registry leaves out from LiteLLM's price map (`model_info`: `litellm.get_model_info`),
    when it knows the model; a model it does not know keeps an unknown price."""
    models = []
    for model in registry.models:
        if model.input_cost_per_mtok is None or model.output_cost_per_mtok is None:
            try:
                info = model_info(model.litellm_params.model)
                model = dataclasses.replace(
                    model,
                    input_cost_per_mtok=model.input_cost_per_mtok
                    if model.input_cost_per_mtok is not None
                    else (info.get("input_cost_per_token") or 0.0) * 1e6,
                    output_cost_per_mtok=model.output_cost_per_mtok
                    if model.output_cost_per_mtok is not None
                    else (info.get("output_cost_per_token") or 0.0) * 1e6,
                )
            except Exception:  # noqa: BLE001 - LiteLLM raises several kinds for an unmapped model
                log.warning("no price for %s in the registry or LiteLLM's map: its cost is unknown", model.name)
        models.append(model)
    return registry.with_models(tuple(models))


__all__ = ["resolve_prices"]
