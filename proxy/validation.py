"""Request parsing and validation: raw bytes -> a frozen ChatRequest, or a 400 that names the bad field.

Only OpenAI's own chat parameters are accepted. Anything LiteLLM would obey to pick another upstream or
credentials (api_base, api_key, extra_headers, custom_llm_provider, mock_response, ...) is refused: the
gateway calls registry backends only, with registry credentials.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from router_plugins.sessions import explicit_key
from router_plugins.types import PREFERENCES, ChatRequest, Preference

from .errors import ApiError, bad_request

AUTO_PREFIX = "auto"
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PASSTHROUGH = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "max_completion_tokens",
        "max_tokens", "modalities", "n", "parallel_tool_calls", "prediction", "presence_penalty", "reasoning_effort",
        "response_format", "seed", "service_tier", "stop", "temperature", "tool_choice", "tools", "top_logprobs",
        "top_p", "user", "web_search_options",
    }
)  # fmt: skip
ACCEPTED_NOT_FORWARDED = frozenset({"store", "metadata"})
"""OpenAI's stored-completion fields: harmless to accept, and not ours to send to another provider."""
FORBIDDEN = frozenset(
    {
        "api_base", "base_url", "api_key", "api_version", "api_type", "extra_headers", "headers", "custom_llm_provider",
        "organization", "deployment_id", "model_list", "mock_response", "mock_testing_fallbacks", "fallbacks",
        "num_retries", "timeout", "input_cost_per_token", "output_cost_per_token", "litellm_params", "client",
        "aws_access_key_id", "aws_secret_access_key", "aws_region_name", "vertex_credentials", "vertex_project",
        "azure_ad_token", "extra_body", "proxy", "callbacks", "cache", "caching",
    }
)  # fmt: skip
TOOL_TYPES = frozenset({"function", "custom"})
OUR_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "autoroute"})
MAX_JSON_DEPTH = 64
MAX_CHOICES = 128
"""OpenAI's limit on `n`: past it the backend would refuse the request, after routing, as a backend failure."""
_PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "logprobs": (bool,), "parallel_tool_calls": (bool,), "store": (bool,), "user": (str,), "service_tier": (str,),
    "reasoning_effort": (str,), "tool_choice": (str, dict), "function_call": (str, dict), "logit_bias": (dict,),
    "audio": (dict,), "prediction": (dict,), "web_search_options": (dict,), "metadata": (dict,), "functions": (list,),
    "modalities": (list,),
}  # fmt: skip
"""The JSON type of each parameter not checked further: a wrong one is the client's 400 here, not a backend failure
(or a crash in LiteLLM) after routing."""
_TYPE_NAMES = {bool: "a boolean", str: "a string", dict: "an object", list: "an array"}
TEXT_PARTS = frozenset({"text"})
PART_TYPES: dict[str, frozenset[str]] = {
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
}
"""OpenAI's content parts by role (the other roles: text only). LiteLLM refuses other ones (or parts without their
field) only after routing, as a backend failure: a 502 that counted against healthy backends' circuit breakers."""
_PART_FIELDS: dict[str, type] = {"text": str, "refusal": str, "image_url": dict, "input_audio": dict, "file": dict}
"""The field each part type carries (named as the type), and its JSON type."""
TOOL_CHOICES = frozenset({"none", "auto", "required"})
_DEPTH_SLICE = 1 << 20
_NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}


def load_json(body: bytes) -> Any:
    """The body's JSON, or a 400: not JSON, or nested deeper than MAX_JSON_DEPTH (checked before parsing, which
    would otherwise recurse once per level)."""
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        raise bad_request(f"The body's JSON is nested deeper than {MAX_JSON_DEPTH} levels.", code="invalid_json")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The body is not valid JSON: {exc}", code="invalid_json") from exc


def json_depth(body: bytes) -> int:
    """How deep `body` nests arrays and objects, found without parsing or recursing: a bracket counts outside
    strings only (escaped quotes and backslashes are cut out first). Vectorised over 1 MB slices, so a body of a
    million brackets costs milliseconds and its slices' arrays, not a list per bracket."""
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    depth = deepest = in_string = 0
    for start in range(0, len(text), _DEPTH_SLICE):
        chars = np.frombuffer(text, np.uint8, min(_DEPTH_SLICE, len(text) - start), start)
        # The parity of the quotes so far says which characters are inside a string (uint8 wraps evenly).
        inside = (np.cumsum(chars == ord('"'), dtype=np.uint8) + in_string) & 1
        steps = ((chars == ord("[")) | (chars == ord("{"))).astype(np.int32) - (
            (chars == ord("]")) | (chars == ord("}"))
        )
        levels = np.cumsum(steps * (inside == 0)) + depth
        deepest, depth, in_string = max(deepest, int(levels.max())), int(levels[-1]), int(inside[-1])
    return deepest


def parse_chat_request(
    body: bytes, request_id: str, default_preference: Preference, session_header: str | None = None
) -> ChatRequest:
    data = load_json(body)
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object.", code="invalid_json")
    for key in data:
        if key in FORBIDDEN or key.startswith(("litellm", "aws_", "vertex_", "azure_")):
            raise bad_request(
                f"'{key}' cannot be set by a request: the gateway only calls the backends in its registry, "
                "with the registry's credentials.",
                param=key,
                code="forbidden_parameter",
            )
        if key not in PASSTHROUGH and key not in OUR_FIELDS and key not in ACCEPTED_NOT_FORWARDED:
            raise bad_request(f"Unrecognized request argument supplied: {key}", param=key, code="unknown_parameter")

    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string.", param="model", code="missing_model")
    preference = _preference(model, default_preference)
    messages = _messages(data.get("messages"))
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    stream_options = data.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict) or not all(
            isinstance(v, bool) for k, v in stream_options.items() if k == "include_usage"
        ):
            raise bad_request("'stream_options' must be an object like {\"include_usage\": true}.", "stream_options")
        if not stream:
            raise bad_request("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    # A null parameter means "the default", as at OpenAI; forwarded, some break LiteLLM (`web_search_options`).
    params = {k: v for k, v in data.items() if k in PASSTHROUGH and v is not None}
    _check_types(data)
    _check_params(params)
    if stream_options is not None:
        params["stream_options"] = stream_options
    extension = _extension(data.get("autoroute"))
    return ChatRequest(
        request_id=request_id,
        requested_model=model,
        messages=messages,
        stream=stream,
        preference=extension.get("preference", preference),
        params=params,
        max_cost_per_1k=extension.get("max_cost_per_1k"),
        min_quality=extension.get("min_quality"),
        session=explicit_key({"x-autoroute-session": session_header or ""}, extension, data.get("metadata")),
    )


def _preference(model: str, default: Preference) -> Preference:
    if model == AUTO_PREFIX:
        return default
    if model.startswith(AUTO_PREFIX + ":"):
        suffix = model.split(":", 1)[1]
        if suffix not in PREFERENCES:
            raise ApiError(
                404,
                f"The model '{model}' does not exist; the auto variants are "
                + ", ".join(f"auto:{p}" for p in PREFERENCES),
                param="model",
                code="model_not_found",
            )
        return suffix
    return default


def _messages(raw: Any) -> tuple[Mapping[str, Any], ...]:
    if raw is None:
        raise bad_request("'messages' is required.", param="messages", code="missing_messages")
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(raw):
        _message(f"messages[{i}]", message)
    return tuple(raw)


def _message(where: str, message: Any) -> None:
    if not isinstance(message, dict):
        raise bad_request(f"{where} must be an object.", param=where)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise bad_request(
            f"{where}.role must be one of {', '.join(sorted(ROLES))}; got {role!r}.", param=f"{where}.role"
        )
    content = message.get("content")
    if content is None:
        if role != "assistant" or not (message.get("tool_calls") or message.get("function_call")):
            raise bad_request(f"{where}.content is required.", param=f"{where}.content")
    elif isinstance(content, list):
        _parts(f"{where}.content", role, content)
    elif not isinstance(content, str):
        raise bad_request(f"{where}.content must be a string or an array of parts.", param=f"{where}.content")
    for key, types in (("name", (str,)), ("tool_calls", (list,)), ("function_call", (dict,))):
        if message.get(key) is not None and not isinstance(message[key], types):
            raise bad_request(f"{where}.{key} must be {_TYPE_NAMES[types[0]]}.", param=f"{where}.{key}")
    if not all(isinstance(call, dict) for call in message.get("tool_calls") or ()):
        raise bad_request(f"{where}.tool_calls must be an array of objects.", param=f"{where}.tool_calls")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise bad_request(f"{where}.tool_call_id is required for tool messages.", param=f"{where}.tool_call_id")


def _parts(where: str, role: str, parts: list[Any]) -> None:
    allowed = PART_TYPES.get(role, TEXT_PARTS)
    for j, part in enumerate(parts):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in allowed:
            raise bad_request(f"{at} must be an object whose 'type' is {' or '.join(sorted(allowed))}.", param=at)
        value = part.get(kind)
        if kind == "image_url":
            valid = isinstance(value, dict) and isinstance(value.get("url"), str)
        else:
            valid = isinstance(value, _PART_FIELDS[kind])
        if not valid:
            shape = "an object with a 'url'" if kind == "image_url" else _TYPE_NAMES[_PART_FIELDS[kind]]
            raise bad_request(f"{at}.{kind} must be {shape}.", param=f"{at}.{kind}")


def _check_types(data: dict[str, Any]) -> None:
    for key, types in _PARAM_TYPES.items():
        value = data.get(key)
        if value is not None and not isinstance(value, types):
            raise bad_request(f"'{key}' must be {' or '.join(_TYPE_NAMES[t] for t in types)}.", param=key)
    for key, item_type in (("functions", dict), ("modalities", str)):
        if not all(isinstance(item, item_type) for item in data.get(key) or ()):
            raise bad_request(f"'{key}' must be an array of {_TYPE_NAMES[item_type].split()[1]}s.", param=key)


def _check_params(params: dict[str, Any]) -> None:
    for key, (low, high) in _NUMBER_RANGES.items():
        if key in params and params[key] is not None:
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise bad_request(f"'{key}' must be a number from {low:g} to {high:g}.", param=key)
    for key in ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs"):
        if key in params and params[key] is not None:
            value = params[key]
            # JSON has one number type: 2.0 is the integer 2 to JSON Schema (and to a JavaScript client).
            if isinstance(value, float) and value.is_integer():
                value = params[key] = int(value)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or (key != "seed" and value < (0 if key == "top_logprobs" else 1))
            ):
                raise bad_request(f"'{key}' must be a positive integer.", param=key)
    if isinstance(params.get("n"), int) and params["n"] > MAX_CHOICES:
        raise bad_request(f"'n' must be at most {MAX_CHOICES}.", param="n")
    stop = params.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise bad_request("'stop' must be a string or an array of strings.", param="stop")
    tools = params.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise bad_request("'tools' must be an array of tool objects.", param="tools")
    for i, tool in enumerate(tools or ()):
        # Only tools the client runs itself: an MCP or hosted tool would make the gateway reach other servers.
        if not isinstance(tool.get("type"), str) or tool["type"] not in TOOL_TYPES:
            raise bad_request(
                f"tools[{i}].type must be one of {', '.join(sorted(TOOL_TYPES))}.", param=f"tools[{i}].type"
            )
    if not _is_tool_choice(params.get("tool_choice", "auto")):
        raise bad_request(
            '\'tool_choice\' must be none, auto, required or {"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
        )
    response_format = params.get("response_format")
    if response_format is not None and not (
        isinstance(response_format, dict) and isinstance(response_format.get("type"), str)
    ):
        raise bad_request("'response_format' must be an object with a 'type'.", param="response_format")


def _is_tool_choice(choice: Any) -> bool:
    # LiteLLM refuses any other object, but only after routing, and in its own words.
    if isinstance(choice, dict):
        function = choice.get("function")
        return choice.get("type") == "function" and isinstance(function, dict) and isinstance(function.get("name"), str)
    return isinstance(choice, str) and choice in TOOL_CHOICES


def _extension(raw: Any) -> dict[str, Any]:
    """Our own per-request options, sent by OpenAI clients as `extra_body={"autoroute": {...}}`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad_request("'autoroute' must be an object.", param="autoroute")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        param = f"autoroute.{key}"
        if key == "preference":
            if value not in PREFERENCES:
                raise bad_request(f"{param} must be one of {', '.join(PREFERENCES)}.", param=param)
            out[key] = value
        elif key in ("max_cost_per_1k", "min_quality"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise bad_request(f"{param} must be a number >= 0.", param=param)
            if key == "min_quality" and value > 1:
                raise bad_request(f"{param} must be in [0, 1].", param=param)
            out[key] = float(value)
        elif key == "session":
            if not isinstance(value, str) or not 0 < len(value) <= 200:
                raise bad_request(f"{param} must be a string of 1 to 200 characters.", param=param)
            out[key] = value
        else:
            raise bad_request(
                f"Unknown option {param}; allowed: preference, max_cost_per_1k, min_quality, session.", param=param
            )
    return out
