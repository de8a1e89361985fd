"""The models an `auto` request may go to, narrowed by the prompt's language (shared by the gateway and the plugin)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CapabilityMissing
from .language import UNKNOWN
from .registry import ModelEntry


@dataclass(frozen=True)
class Candidates:
    """The models an `auto` request may be routed to, and why the set is what it is (for the decision's reason)."""

    models: tuple[ModelEntry, ...]
    note: str = ""
    fallback: Candidates | None = None
    """Asked when no router can decide among `models` (say none of them takes tools): every available model."""


def serving(available: tuple[ModelEntry, ...], language: str) -> Candidates:
    """The available models that serve `language` (a model without `languages:` serves any). When none does, or
    none can take the request, all of them, saying so: a language must narrow the choice, never fail the request."""
    if language == UNKNOWN:
        return Candidates(available)
    models = tuple(m for m in available if m.serves(language))
    if not models:
        return Candidates(available, f"no available model lists language '{language}', so all were candidates")
    if len(models) == len(available):
        return Candidates(available)
    return Candidates(
        models,
        f"language '{language}': {len(models)} of {len(available)} models serve it",
        Candidates(available, f"no model that serves language '{language}' could take this request"),
    )


def capable(available: tuple[ModelEntry, ...], needs: tuple[str, ...]) -> tuple[ModelEntry, ...]:
    """The available models that have every capability the request needs (`ChatRequest.needs`); raises
    CapabilityMissing, naming what none has, when there is none."""
    if not needs:
        return available
    models = tuple(m for m in available if not m.lacks(needs))
    if not models and available:
        missing = tuple(n for n in needs if all(n in m.lacks(needs) for m in available)) or needs
        raise CapabilityMissing(missing)
    return models
