"""The request bodies of the HTTP API as pydantic models, for the OpenAPI document only (`proxy/openapi.py`).

Nothing parses a request with these: the routes read bodies by hand (`proxy/validation.py`: bounded reads, a depth
limit before parsing). So every constraint here is one the gateway enforces, no more and no less: a parameter it only
passes on is declared with the JSON type it checks, and the rest of its OpenAI shape is in the description.
`tests/unit/test_openapi.py` and the schemathesis run of `tests/e2e/test_openapi_fuzz.py` keep the two in step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.json_schema import JsonDict

from .routes import MAX_COMMENT_CHARS, MAX_LABEL_CHARS
from .validation import MAX_CHOICES

ToolType = Literal["function", "custom"]
PreferenceName = Literal["quality", "balanced", "cost", "latency"]
_NULL: JsonDict = {"type": "null"}


def _not_null(schema: JsonDict) -> None:
    """For a field that may be left out but not be null (the gateway refuses a null there)."""
    branches = schema.pop("anyOf")
    assert isinstance(branches, list)
    schema.update(next(b for b in branches if isinstance(b, dict) and b != _NULL))


class Closed(BaseModel):
    """No other field: the gateway refuses one in a request, and sends none in an answer."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Other fields are allowed (in a request, passed on as they are)."""

    model_config = ConfigDict(extra="allow")


# -- chat completion request ---------------------------------------------------------------------------------------


class TextPart(Open):
    type: Literal["text"]
    text: str


class ImageUrl(Open):
    url: str = Field(description="An https URL or a `data:` URL.")
    detail: Any = Field(None, description="`auto`, `low` or `high`; passed on.")


class ImagePart(Open):
    type: Literal["image_url"]
    image_url: ImageUrl


class AudioPart(Open):
    type: Literal["input_audio"]
    input_audio: dict[str, Any] = Field(description="`{data: <base64>, format: wav | mp3}`; passed on.")


class FilePart(Open):
    type: Literal["file"]
    file: dict[str, Any] = Field(description="`{file_id}` or `{file_data, filename}`; passed on.")


class RefusalPart(Open):
    type: Literal["refusal"]
    refusal: str


# The parts each role may send, as OpenAI has them (the gateway reads only the text); other fields pass on.
UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class _Message(Open):
    """Fields the gateway checks on every message; other OpenAI fields (`refusal`, `audio`, ...) are passed on."""

    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description="On assistant messages: `[{id, type: function, function: {name, arguments}}]`."
    )
    function_call: dict[str, Any] | None = Field(None, description="Deprecated: `tool_calls`.")


class SystemMessage(_Message):
    role: Literal["system"]
    content: str | list[TextPart]


class DeveloperMessage(_Message):
    role: Literal["developer"]
    content: str | list[TextPart]


class UserMessage(_Message):
    role: Literal["user"]
    content: str | list[UserPart]


class AssistantRequestMessage(_Message):
    """An earlier answer. `content` may be left out (or null) when it made `tool_calls` or a `function_call`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "anyOf": [
                {"required": ["content"], "properties": {"content": {"not": _NULL}}},
                {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array", "minItems": 1}}},
                {"required": ["function_call"], "properties": {"function_call": {"type": "object",
                                                                                  "minProperties": 1}}},
            ]
        },
    )  # fmt: skip

    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None


class ToolMessage(_Message):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str = Field(description="The id of the tool call this answers.")


class FunctionMessage(_Message):
    """Deprecated: `tool`."""

    role: Literal["function"]
    content: str | list[TextPart]


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantRequestMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


class Tool(Open):
    """A tool the client runs itself: `{"type": "function", "function": {"name", "description", "parameters"}}` or
    `{"type": "custom", ...}`. Hosted and MCP tools are refused: they would make the gateway reach other servers."""

    type: ToolType


class FunctionName(Open):
    name: str


class NamedToolChoice(Open):
    """Call this function."""

    type: Literal["function"]
    function: FunctionName


class ResponseFormat(Open):
    """`{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {...}}`."""

    type: str


class StreamOptions(Open):
    include_usage: bool = Field(False, description="End with a chunk that has `usage` and no choices.")


class AutorouteOptions(Closed):
    """The gateway's own per-request options; OpenAI clients send them as `extra_body={"autoroute": {...}}`."""

    preference: PreferenceName | None = Field(
        None, description="Overrides the preference the model name gives.", json_schema_extra=_not_null
    )
    max_cost_per_1k: float | None = Field(
        None, ge=0, description="USD per 1000 tokens, at most; never relaxed.", json_schema_extra=_not_null
    )
    min_quality: float | None = Field(
        None, ge=0, le=1, description="The task's least prior quality; never relaxed.", json_schema_extra=_not_null
    )
    session: str | None = Field(
        None, min_length=1, max_length=200, json_schema_extra=_not_null,
        description="The session this request belongs to: its turns keep one model while it succeeds (also the "
        "`x-autoroute-session` header or `metadata.session_id`; without one, the conversation's opening is the key).",
    )  # fmt: skip


AUTO_MODELS: list[JsonValue] = ["auto", "auto:quality", "auto:balanced", "auto:cost", "auto:latency"]
MODEL_DESCRIPTION = (
    "`auto` (the router picks a backend with the registry's default preference), `auto:quality`, `auto:balanced`, "
    "`auto:cost`, `auto:latency`, or a model listed by GET /v1/models (called as named, not re-routed). Any other "
    "name is a 404 `model_not_found`."
)


class ChatCompletionRequest(Closed):
    """OpenAI's chat-completion request. An unknown field is a 400 `unknown_parameter`; one that would choose
    another upstream or credentials (`api_base`, `api_key`, `extra_headers`, ...) a 400 `forbidden_parameter`.
    A null parameter is the same as one left out. Everything but `model`, `messages`, `stream`, `autoroute`,
    `store` and `metadata` is passed to the backend."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"properties": {"stream_options": _NULL}},
                {"required": ["stream"], "properties": {"stream": {"const": True}}},
            ],
            "examples": [
                {"model": "auto", "messages": [{"role": "user", "content": "Merge two sorted lists in Python."}]},
                {"model": "auto:cost", "messages": [{"role": "user", "content": "Hi!"}], "stream": True,
                 "stream_options": {"include_usage": True}, "autoroute": {"min_quality": 0.5}},
            ],
        },
    )  # fmt: skip

    model: str = Field(
        min_length=1,
        description=MODEL_DESCRIPTION,
        json_schema_extra={"anyOf": [{"enum": AUTO_MODELS}, {"minLength": 1}]},
    )
    messages: list[Message] = Field(min_length=1)
    stream: bool = Field(False, description="Answer with server-sent `chat.completion.chunk` events.")
    stream_options: StreamOptions | None = Field(None, description="Only allowed when `stream` is true.")
    autoroute: AutorouteOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    max_tokens: int | None = Field(
        None, ge=1, description="A request no available model's context window can take is a 400."
    )
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    functions: list[dict[str, Any]] | None = Field(None, description="Deprecated: `tools`.")
    function_call: str | dict[str, Any] | None = Field(None, description="Deprecated: `tool_choice`.")
    logit_bias: dict[str, Any] | None = Field(None, description="Token id -> bias, -100 to 100.")
    user: str | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = Field(None, description="`minimal`, `low`, `medium` or `high`.")
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    store: bool | None = Field(None, description="Accepted, not forwarded (OpenAI's stored completions).")
    metadata: dict[str, Any] | None = Field(None, description="Accepted, not forwarded.")


# -- feedback request --------------------------------------------------------------------------------------------------


class FeedbackRequest(Closed):
    """How good a routed answer was: exactly one of `score` or `thumbs`, and/or the request's right `task`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "not": {"required": ["score", "thumbs"],
                    "properties": {"score": {"not": _NULL}, "thumbs": {"not": _NULL}}},
            "anyOf": [
                {"required": [name], "properties": {name: {"not": _NULL}}} for name in ("score", "thumbs", "task")
            ],
            "examples": [{"request_id": "ar-5f0c6a8e9b7d4e2f8a1c3b5d7e9f0a2c", "score": 0.9, "comment": "right"}],
        },
    )  # fmt: skip

    request_id: str = Field(min_length=1, description="The `x-autoroute-request-id` of the chat completion.")
    score: float | None = Field(None, ge=0, le=1)
    thumbs: Literal["up", "down"] | None = Field(None, description="`up` is score 1, `down` score 0.")
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    label: str | None = Field(None, max_length=MAX_LABEL_CHARS, description="With `thumbs`: `thumbs_<up|down>`.")
    task: str | None = Field(None, description="The task type the prompt really was: one of the registry's.")


REQUEST_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionRequest, FeedbackRequest)
