"""OpenAI's chat-completions wire format, server side: what the fake and the replay upstreams send back.

One place for the shapes an OpenAI client (and LiteLLM in front of it) parses: `chat.completion` bodies,
`chat.completion.chunk` SSE frames ending in `data: [DONE]`, the error envelope, the model list, and the
deterministic token counts both test upstreams report (4 characters a token, 4 more per message).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from router_plugins.types import content_text

from .errors import ApiError

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
SSE_DONE = b"data: [DONE]\n\n"
# Split just before each word, so joining the pieces gives back the exact text.
_WORD_BOUNDARY_RE = re.compile(r"(?<=\s)(?=\S)")


@dataclass(frozen=True)
class Choice:
    """One answer of a completion: text, or a single tool call."""

    content: str | None
    tool_call: dict[str, Any] | None = None
    finish_reason: str = "stop"


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def message_text(message: Any) -> str:
    return content_text(message.get("content")) if isinstance(message, dict) else ""


def prompt_tokens(messages: Iterable[Any]) -> int:
    return sum(tokens(message_text(m)) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def completion_tokens(choices: Iterable[Choice]) -> int:
    total = 0
    for choice in choices:
        if choice.tool_call is not None:
            fn = choice.tool_call["function"]
            total += tokens(fn["name"] + fn["arguments"])
        else:
            total += tokens(choice.content or "")
    return total


def usage(messages: Sequence[Any], choices: Sequence[Choice], cost: float | None = None) -> dict[str, Any]:
    """Deterministic usage; `cost` (USD) is reported the way providers that bill per call do, in `usage.cost`."""
    prompt, completion = prompt_tokens(messages), completion_tokens(choices)
    total = prompt + completion
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    if cost is not None:
        out["cost"] = cost
    return out


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    error = ApiError(status, message, type=type_, param=param, code=code, headers=dict(headers or {}))
    return error.to_response()


async def read_json_object(request: Request) -> dict[str, Any] | Response:
    """The request body as a JSON object, or the 400 to send back."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        return error_response(400, "Request body is not valid JSON.")
    if not isinstance(body, dict):
        return error_response(400, "Request body must be a JSON object.")
    return body


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `"n": true` is a client bug worth a 400.
    return isinstance(value, int) and not isinstance(value, bool)


def validate_chat(body: Mapping[str, Any]) -> Response | None:
    """The 400 for a chat request an upstream cannot answer, or None when it is well-formed."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_response(400, "`model` must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(400, "`messages` must be a non-empty list.", param="messages")
    if not all(isinstance(m, dict) for m in messages):
        return error_response(400, "Every item of `messages` must be an object.", param="messages")
    n = body.get("n")
    if n is not None and not (_is_int(n) and 1 <= n <= 128):
        return error_response(400, "`n` must be an integer between 1 and 128.", param="n")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and not (_is_int(value) and value >= 1):
            return error_response(400, f"`{key}` must be a positive integer.", param=key)
    return None


def wants_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def completion(
    cid: str, model: str, choices: Sequence[Choice], usage_value: Mapping[str, Any], fingerprint: str
) -> dict[str, Any]:
    out = []
    for index, choice in enumerate(choices):
        message: dict[str, Any] = {"role": "assistant", "content": choice.content}
        if choice.tool_call is not None:
            message["tool_calls"] = [choice.tool_call]
        out.append({"index": index, "message": message, "finish_reason": choice.finish_reason, "logprobs": None})
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": out,
        "usage": dict(usage_value),
        "system_fingerprint": fingerprint,
    }


class ChunkWriter:
    """The SSE frames of one streamed completion, each a `chat.completion.chunk` with the same id and time."""

    def __init__(self, cid: str, model: str, include_usage: bool, fingerprint: str) -> None:
        self._base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": fingerprint,
        }
        self.include_usage = include_usage

    def _frame(self, choices: list[dict[str, Any]], usage_value: Mapping[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {**self._base, "choices": choices}
        # OpenAI puts `usage: null` on every chunk once include_usage is on; clients key off it.
        if self.include_usage:
            chunk["usage"] = dict(usage_value) if usage_value is not None else None
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def _delta(self, index: int, payload: dict[str, Any], finish: str | None = None) -> bytes:
        return self._frame([{"index": index, "delta": payload, "finish_reason": finish, "logprobs": None}])

    def role(self, index: int) -> bytes:
        return self._delta(index, {"role": "assistant", "content": ""})

    def content(self, index: int, text: str) -> bytes:
        return self._delta(index, {"content": text})

    def tool_call(self, index: int, call: Mapping[str, Any]) -> bytes:
        return self._delta(index, {"tool_calls": [{"index": 0, **call}]})

    def finish(self, index: int, reason: str) -> bytes:
        return self._delta(index, {}, reason)

    def usage(self, usage_value: Mapping[str, Any]) -> bytes:
        """The final usage chunk (no choices); only sent when the client asked for it."""
        return self._frame([], usage_value)


def split_words(text: str, parts: int) -> list[str]:
    """`text` in about `parts` pieces cut at word starts; empty text gives no pieces."""
    if not text:
        return []
    words = _WORD_BOUNDARY_RE.split(text)
    size = max(1, math.ceil(len(words) / parts))
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def model_list(ids: Iterable[str], owned_by: str, created: int) -> dict[str, Any]:
    entry = {"object": "model", "created": created, "owned_by": owned_by}
    return {"object": "list", "data": [{"id": m, **entry} for m in ids]}
