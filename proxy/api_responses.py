"""The response bodies of the HTTP API as pydantic models, for the OpenAPI document only (`proxy/openapi.py`).

What the routes send, as `proxy/forward.py` cleans the backends' answers and `proxy/routes.py` builds the rest. A
closed model is a promise that no other key appears; `tests/unit/test_openapi.py` and `tests/e2e/test_openapi.py`
check real answers against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .api_requests import Closed, Open

# -- chat completion response --------------------------------------------------------------------------------------


class Usage(Open):
    """Token counts; providers may add details (`prompt_tokens_details`, ...)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(Open):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description="`[{id, type: function, function: {name, arguments}}]`."
    )
    function_call: dict[str, Any] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    audio: dict[str, Any] | None = None


class Choice(Closed):
    index: int
    message: AssistantMessage
    finish_reason: str | None = Field(description="`stop`, `length`, `tool_calls`, `content_filter`, ...")
    logprobs: dict[str, Any] | None


class ChatCompletion(Closed):
    """OpenAI's `chat.completion`; `model` is the registry model that answered (also in `x-autoroute-model`)."""

    id: str | None
    object: Literal["chat.completion"]
    created: int | None
    model: str
    choices: list[Choice]
    usage: Usage | None
    system_fingerprint: str | None = None


class Delta(Open):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(None, description="Pieces of calls, each with its `index`.")


class ChunkChoice(Closed):
    index: int
    delta: Delta
    finish_reason: str | None
    logprobs: dict[str, Any] | None


class ChatCompletionChunk(Closed):
    """One `data:` event of a stream. The stream ends with `data: [DONE]`; with `stream_options.include_usage` the
    chunk before it has no choices and carries `usage`. A failure after the first event is one `StreamError` event
    instead, and no `[DONE]`."""

    id: str | None
    object: Literal["chat.completion.chunk"]
    created: int | None
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# -- errors --------------------------------------------------------------------------------------------------------


class ErrorBody(Closed):
    message: str
    type: str = Field(
        description="`invalid_request_error`, `authentication_error`, `rate_limit_error` or `server_error`."
    )
    param: str | None = Field(description="The request field at fault, when one is.")
    code: str | None = Field(
        description="Machine-readable: `invalid_value`, `unknown_parameter`, `model_not_found`, "
        "`context_length_exceeded`, `upstream_unavailable`, `shutting_down`, ..."
    )


class ErrorResponse(Closed):
    """OpenAI's error envelope: every error of the gateway has this shape."""

    error: ErrorBody


class StreamError(Closed):
    """The last event of a stream that failed after its first byte."""

    error: ErrorBody


# -- models, feedback, health --------------------------------------------------------------------------------------


class Model(Closed):
    """OpenAI's model object. The auto variants are `owned_by: autoroute`; a registry model is owned by its LiteLLM
    provider and says whether the gateway has its credentials (`available`)."""

    id: str
    object: Literal["model"]
    created: int = Field(description="When the serving configuration was loaded (Unix seconds).")
    owned_by: str
    available: bool | None = Field(None, description="Registry models only.")


class ModelList(Closed):
    object: Literal["list"]
    data: list[Model]


class FeedbackResponse(Closed):
    """Sent once the feedback is committed to disk."""

    object: Literal["feedback"]
    request_id: str
    score: float | None
    task: str | None = None
    status: Literal["recorded"]


class Liveness(Closed):
    status: Literal["alive"]


class Readiness(Open):
    """Whether the gateway can serve (200) or not (503), and why; more keys may come."""

    status: Literal["ready", "not_ready", "shutting_down"]
    checks: dict[str, str] = Field(
        description="`config`, `store`, `embeddings`, `task_model`; `shutdown` and `artifacts` when they apply."
    )
    models_available: int
    registry_version: str
    recorder: dict[str, int] = Field(description="`written`, `dropped`, `lost`, `queue_depth`, `pending`.")
    feedback: dict[str, int] = Field(description="`written`, `failed`, `commits`.")
    circuit_breaker: dict[str, Literal["closed", "open", "half_open"]]


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletion, ChatCompletionChunk, StreamError, ErrorResponse, Model, ModelList, FeedbackResponse, Liveness,
    Readiness,
)  # fmt: skip
