"""autoroute's routing library: task classification and routers over a model registry.

A plain library (no web framework, no SQL), usable from the autoroute gateway and from inside a LiteLLM proxy.
"""

from .registry import ModelEntry, Registry, load_registry, parse_registry
from .schema import ConfigError
from .types import ChatRequest, Classification, LayerAttempt, RouteDecision, ScoredCandidate

__all__ = [
    "ChatRequest",
    "Classification",
    "ConfigError",
    "LayerAttempt",
    "ModelEntry",
    "Registry",
    "RouteDecision",
    "ScoredCandidate",
    "load_registry",
    "parse_registry",
]
