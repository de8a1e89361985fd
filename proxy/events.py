"""The records the gateway writes about each call; the store turns them into rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["success", "failure", "partial", "cancelled", "rejected"]
"""How a call ended: `partial` when a stream broke or its client left after the first byte; `cancelled` when the
gateway cut it because its shutdown grace period ran out (`proxy/drain.py`); `rejected` when it was refused before
any backend was called (a bad body, or no model could be routed to). A plain TEXT column: no migration."""


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One row of `routing_decisions`: how an incoming request was classified and routed."""

    request_id: str
    created_at: float
    """Unix time, seconds."""
    requested_model: str | None
    """None (like every field the request never reached) when the body was refused before it was understood."""
    preference: str | None
    task: str | None
    task_confidence: float | None
    classification_layer: str | None
    needs_clarification: bool
    layer_attempts: list[dict[str, Any]]
    selected_model: str | None
    """The model that finally served the request (after any fallback); the router's choice when all failed."""
    routed_model: str | None
    """The router's first choice."""
    selection_reason: str | None
    alternatives: list[dict[str, Any]]
    router_name: str | None
    router_version: str | None
    propensity: float | None
    stream: bool
    status: Outcome
    attempts: int
    prompt_chars: int
    prompt_text: str | None = None
    ab_arm: str | None = None
    """`control` or `treatment` in an A/B split, `shadow` when the chain only decided beside static rules."""
    counterfactual_model: str | None = None
    """In an A/B test, the model the other side (or the shadow chain) would have chosen."""
    counterfactual_router: str | None = None
    language: str | None = "und"
    """The language of the last user message (ISO 639-1, `und` when unknown); `auto` routes among the models that
    serve it."""
    choice_probabilities: dict[str, float] = field(default_factory=dict)
    """Each candidate's probability of being chosen by the logging policy (exploration, an A/B split); empty when the
    routed model was chosen for certain. With `alternatives` (each candidate's predictions and utility) and
    `layer_attempts`, what the routing receipt (`GET /v1/decisions/{id}`) shows."""
    error_code: str | None = None
    """Why no answer came back (`status` rejected or failure): the error's code as the client got it."""
    error_message: str | None = None
    session_id: str | None = None
    """The session this request belongs to (`router_plugins/sessions.py`): an explicit key or `c-<hash>`."""
    session_origin: str | None = None
    """The request id of the decision that chose this turn's model: the request itself for a session's first turn
    or an escalation, an earlier one for a turn that kept its model. Learning counts one choice per origin."""

    @classmethod
    def refused(
        cls, request_id: str, created_at: float, error_code: str | None, error_message: str, prompt_chars: int = 0
    ) -> DecisionRecord:
        """A request refused before it was understood (a bad or oversized body): only the refusal is known."""
        return cls(
            request_id, created_at, None, None, None, None, None, False, [], None, None, None, [], None, None, None,
            False, "rejected", 0, prompt_chars, language=None, error_code=error_code, error_message=error_message,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PerformanceRecord:
    """One row of `model_performance`: one attempt at one backend."""

    request_id: str
    created_at: float
    attempt: int
    """1 for the first backend tried, 2 for the first fallback, ..."""
    model: str
    task: str
    outcome: Outcome
    latency_ms: float
    ttft_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    cost_source: str | None
    """`provider` (reported in the response), `litellm` (LiteLLM's cost function), or None."""
    error_class: str | None = None
    error_message: str | None = None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One row of `feedback`: an explicit score sent after the call, and/or the task the request really was."""

    request_id: str
    created_at: float
    score: float | None
    label: str | None = None
    comment: str | None = None
    source: str = "api"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LearningEvent:
    """One row of `learning_events`: a champion/challenger decision of the trainer (or of `autoroute train`)."""

    created_at: float
    kind: str
    """`promotion` or `rejection`."""
    router: str
    version: str
    champion_version: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


Record = DecisionRecord | PerformanceRecord | FeedbackRecord | LearningEvent
