"""Why a request cannot be routed: domain errors that the routing library raises and each host maps.

The gateway turns them into OpenAI-style HTTP errors (`proxy/errors.py`); the LiteLLM plugin leaves such a request
to LiteLLM. Nothing here knows about HTTP.
"""

from __future__ import annotations


class RoutingError(Exception):
    """A request the router cannot route."""

    retryable = False
    code = "no_backend_available"
    """The error code the client is answered with (OpenAI's `error.code`), also recorded with the refusal."""


class ModelNotFound(RoutingError):
    """A named model the registry does not have (or has disabled)."""

    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"no model named {model!r}")
        self.model = model


class ModelUnavailable(RoutingError):
    """A named model the gateway has no credentials for."""

    retryable = True
    code = "model_unavailable"

    def __init__(self, model: str, api_key_env: str | None) -> None:
        super().__init__(f"the model {model!r} is not usable: {api_key_env} is not set")
        self.model = model
        self.api_key_env = api_key_env


class ConstraintsUnmet(RoutingError):
    """No available model meets the request's own `max_cost_per_1k` / `min_quality`."""

    code = "no_model_satisfies_constraints"

    def __init__(self, task: str, max_cost_per_1k: float | None, min_quality: float | None) -> None:
        super().__init__(f"no model meets the constraints for task {task!r}")
        self.task = task
        self.max_cost_per_1k = max_cost_per_1k
        self.min_quality = min_quality


class NoBackendAvailable(RoutingError):
    """Every model is disabled, lacks credentials, or cannot serve the request (tools, context window)."""

    retryable = True

    def __init__(self) -> None:
        super().__init__("no backend is available for this request")


class CapabilityMissing(RoutingError):
    """No model (or not the named one) can take what the request needs: tools, images, a JSON response format."""

    code = "unsupported_capability"
    PARAMS = {"tools": "tools", "vision": "messages", "json": "response_format"}
    NAMES = {"tools": "tool calls", "vision": "images", "json": "a JSON response_format"}

    def __init__(self, needs: tuple[str, ...], model: str | None = None) -> None:
        what = " and ".join(self.NAMES[n] for n in needs)
        where = f"the model {model!r} does not take {what}" if model else f"no available model takes {what}"
        super().__init__(f"{where} (registry: {', '.join(f'supports_{n}' for n in needs)})")
        self.needs = needs
        self.model = model
        self.param = self.PARAMS[needs[0]]


class RequestTooLarge(RoutingError):
    """No model could take the request whatever the routing: its prompt, or the prompt and the answer it asks room
    for (`param`: `messages`, or `max_tokens` / `max_completion_tokens`), exceed every context window."""

    code = "context_length_exceeded"

    def __init__(self, param: str, needed_tokens: int, largest_window: int) -> None:
        super().__init__(f"{param}: about {needed_tokens} tokens, but the largest context window is {largest_window}")
        self.param = param
        self.needed_tokens = needed_tokens
        self.largest_window = largest_window


__all__ = [
    "CapabilityMissing", "ConstraintsUnmet", "ModelNotFound", "ModelUnavailable", "NoBackendAvailable",
    "RequestTooLarge", "RoutingError",
]  # fmt: skip
