"""Plain data passed between the gateway and the routing library.

Everything here is frozen: a request, a classification and a decision are facts about one call,
recorded as they were made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Preference = Literal["quality", "balanced", "cost", "latency"]
PREFERENCES: tuple[Preference, ...] = ("quality", "balanced", "cost", "latency")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One validated chat-completion request, as the router sees it."""

    request_id: str
    requested_model: str
    messages: tuple[Mapping[str, Any], ...]
    stream: bool = False
    preference: Preference = "balanced"
    params: Mapping[str, Any] = field(default_factory=dict)
    """OpenAI parameters passed to the backend untouched (temperature, tools, stop, ...)."""
    max_cost_per_1k: float | None = None
    min_quality: float | None = None
    session: str | None = None
    """The client's explicit session key (`router_plugins/sessions.py`); None: the conversation's opening is."""

    @property
    def is_auto(self) -> bool:
        return self.requested_model == "auto" or self.requested_model.startswith("auto:")

    @property
    def uses_tools(self) -> bool:
        return bool(self.params.get("tools") or self.params.get("functions"))

    @property
    def needs(self) -> tuple[str, ...]:
        """The capabilities a model must have to take this request: `tools`, `vision` (an image part in a message),
        `json` (a `response_format` asking for JSON)."""
        needs = []
        if self.uses_tools:
            needs.append("tools")
        if any(_has_image(m.get("content")) for m in self.messages):
            needs.append("vision")
        fmt = self.params.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
            needs.append("json")
        return tuple(needs)

    def last_user_text(self) -> str:
        """The text of the last user message: what the task classifier reads."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return content_text(self.messages[-1].get("content")) if self.messages else ""

    def prompt_chars(self) -> int:
        return sum(len(content_text(m.get("content"))) for m in self.messages)


def _has_image(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(part, Mapping) and part.get("type") in ("image_url", "input_image", "image") for part in content
    )


def content_text(content: Any) -> str:
    """The plain text of a message's content (a string or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


@dataclass(frozen=True, slots=True)
class LayerAttempt:
    """What one classifier layer said, whether it decided, and what it cost."""

    layer: str
    task: str | None
    confidence: float
    threshold: float
    accepted: bool
    latency_ms: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "task": self.task,
            "confidence": round(self.confidence, 4),
            "threshold": self.threshold,
            "accepted": self.accepted,
            "latency_ms": round(self.latency_ms, 4),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Classification:
    task: str
    confidence: float
    layer: str
    attempts: tuple[LayerAttempt, ...] = ()
    needs_clarification: bool = False


COST_PER_1K_TOKENS = "usd_per_1k_tokens"
"""The unit of a candidate's cost when a router ranks by price (static rules, win rates, a named model)."""
COST_PER_REQUEST = "usd_per_request"
"""The unit when a router predicts each request's cost (the learned and the predictive routers)."""


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    model: str
    score: float
    """The utility under the request's preference (`routers/ranking.py`)."""
    quality: float
    """The predicted quality: the probability of a successful answer, 0..1."""
    cost_per_1k: float | None
    """The predicted cost, in `cost_unit` (the name is historical: stored rows carry this key)."""
    latency_ms: float | None
    note: str = ""
    cost_unit: str = COST_PER_1K_TOKENS

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "score": round(self.score, 6),
            "quality": round(self.quality, 4),
            "cost_per_1k": self.cost_per_1k,
            "latency_ms": self.latency_ms,
            "note": self.note,
            "cost_unit": self.cost_unit,
        }


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The chosen model, why, and every candidate considered in rank order (the fallback order)."""

    model: str
    reason: str
    router: str
    router_version: str
    alternatives: tuple[ScoredCandidate, ...] = ()
    propensity: float = 1.0
    choice_probabilities: tuple[tuple[str, float], ...] = ()
    """Each candidate's probability of being chosen by the policy that decided (exploration, an A/B split), as
    (model, probability) pairs summing to 1; empty when the model was chosen with certainty."""

    @property
    def fallback_order(self) -> tuple[str, ...]:
        """The chosen model first, then the other candidates by rank."""
        rest = tuple(c.model for c in self.alternatives if c.model != self.model)
        return (self.model, *rest)
