"""Request parsing: only OpenAI's chat parameters get in, anything else is a 400 that names the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from proxy.errors import ApiError
from proxy.validation import MAX_JSON_DEPTH, json_depth, load_json, parse_chat_request
from router_plugins.types import ChatRequest

USER = {"role": "user", "content": "hi"}


def parse(body: dict[str, Any] | bytes, default_preference: str = "balanced") -> ChatRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_chat_request(raw, "req-1", default_preference)  # type: ignore[arg-type]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [USER], **fields}


def rejected(body: dict[str, Any] | bytes) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body)
    return info.value


def test_minimal_request() -> None:
    request = parse(chat())

    assert request.request_id == "req-1"
    assert request.requested_model == "auto"
    assert request.messages == (USER,)
    assert (request.stream, request.preference, dict(request.params)) == (False, "balanced", {})
    assert (request.max_cost_per_1k, request.min_quality) == (None, None)


# -- the body --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe\xfa"])
def test_malformed_json(body: bytes) -> None:
    error = rejected(body)

    assert (error.status, error.code, error.type) == (400, "invalid_json", "invalid_request_error")


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null"])
def test_body_must_be_an_object(body: bytes) -> None:
    error = rejected(body)

    assert (error.status, error.code) == (400, "invalid_json")


# -- model -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [None, "", 7])
def test_missing_or_bad_model(model: Any) -> None:
    body = chat(model=model)
    if model is None:
        del body["model"]

    error = rejected(body)

    assert (error.status, error.code, error.param) == (400, "missing_model", "model")


@pytest.mark.parametrize(
    ("model", "preference"),
    [("auto", "latency"), ("auto:cost", "cost"), ("auto:quality", "quality"), ("gpt-4o", "latency")],
)
def test_model_sets_the_preference(model: str, preference: str) -> None:
    assert parse(chat(model=model), default_preference="latency").preference == preference


@pytest.mark.parametrize("model", ["auto:bogus", "auto:", "auto:Cost"])
def test_unknown_auto_variant_is_model_not_found(model: str) -> None:
    error = rejected(chat(model=model))

    assert (error.status, error.code, error.param) == (404, "model_not_found", "model")
    assert "auto:cost" in error.message


# -- messages --------------------------------------------------------------------------------------------------------


def test_missing_messages() -> None:
    error = rejected({"model": "auto"})

    assert (error.status, error.code, error.param) == (400, "missing_messages", "messages")


@pytest.mark.parametrize("messages", [[], "hi", {"role": "user", "content": "hi"}])
def test_messages_must_be_a_non_empty_array(messages: Any) -> None:
    error = rejected(chat(messages=messages))

    assert (error.status, error.param) == (400, "messages")


def test_message_must_be_an_object() -> None:
    error = rejected(chat(messages=[USER, "hello"]))

    assert (error.status, error.param) == (400, "messages[1]")


@pytest.mark.parametrize("role", ["robot", None, 3])
def test_unknown_role(role: Any) -> None:
    error = rejected(chat(messages=[{"role": role, "content": "hi"}]))

    assert (error.status, error.param) == (400, "messages[0].role")


@pytest.mark.parametrize("role", [["user"], {"name": "user"}])
def test_unhashable_role_is_a_400(role: Any) -> None:
    error = rejected(chat(messages=[{"role": role, "content": "hi"}]))

    assert (error.status, error.param) == (400, "messages[0].role")


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (5, "messages[0].content"),
        ({"text": "hi"}, "messages[0].content"),
        (None, "messages[0].content"),
        (["hi"], "messages[0].content[0]"),
        ([{"text": "no type"}], "messages[0].content[0]"),
    ],
)
def test_content_of_the_wrong_type(content: Any, param: str) -> None:
    error = rejected(chat(messages=[{"role": "user", "content": content}]))

    assert (error.status, error.param) == (400, param)


def test_content_as_typed_parts_is_accepted() -> None:
    parts = [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]

    assert parse(chat(messages=[{"role": "user", "content": parts}])).last_user_text() == "describe"


def test_tool_message_needs_tool_call_id() -> None:
    error = rejected(chat(messages=[USER, {"role": "tool", "content": "42"}]))

    assert (error.status, error.param) == (400, "messages[1].tool_call_id")


def test_assistant_with_tool_calls_and_null_content_is_accepted() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]

    assert parse(chat(messages=messages)).messages == tuple(messages)


def test_assistant_with_null_content_and_no_tool_calls_is_rejected() -> None:
    error = rejected(chat(messages=[USER, {"role": "assistant", "content": None}]))

    assert error.param == "messages[1].content"


# -- parameters ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param",
    [
        "api_base", "base_url", "api_key", "extra_headers", "custom_llm_provider", "mock_response",
        "litellm_anything", "aws_region_name", "extra_body", "num_retries",
    ],
)  # fmt: skip
def test_forbidden_parameter(param: str) -> None:
    error = rejected(chat(**{param: "http://evil.test"}))

    assert (error.status, error.code, error.param) == (400, "forbidden_parameter", param)
    assert f"'{param}' cannot be set" in error.message


def test_forbidden_parameter_is_refused_before_anything_else() -> None:
    error = rejected({"api_key": "sk-x"})

    assert error.code == "forbidden_parameter"


def test_unknown_parameter() -> None:
    error = rejected(chat(temprature=0.2))

    assert (error.status, error.code, error.param) == (400, "unknown_parameter", "temprature")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("temperature", 2.5), ("temperature", -0.1), ("temperature", "hot"), ("temperature", True),
        ("top_p", 1.5), ("presence_penalty", -3), ("max_tokens", 0), ("max_tokens", 1.5), ("n", True),
        ("stop", 5), ("stop", ["ok", 1]), ("tools", {"type": "function"}), ("response_format", "json"),
    ],
)  # fmt: skip
def test_parameter_out_of_range_or_of_the_wrong_type(param: str, value: Any) -> None:
    error = rejected(chat(**{param: value}))

    assert (error.status, error.param) == (400, param)


@pytest.mark.parametrize(("param", "value"), [("temperature", 0), ("temperature", 2), ("seed", -1), ("n", 1)])
def test_parameter_bounds_are_inclusive(param: str, value: Any) -> None:
    assert parse(chat(**{param: value})).params[param] == value


def test_stream_must_be_a_bool() -> None:
    error = rejected(chat(stream="yes"))

    assert (error.status, error.param) == (400, "stream")


def test_stream_options_need_stream() -> None:
    error = rejected(chat(stream_options={"include_usage": True}))

    assert (error.status, error.param) == (400, "stream_options")


def test_stream_options_must_hold_a_bool() -> None:
    assert rejected(chat(stream=True, stream_options={"include_usage": "yes"})).param == "stream_options"


def test_stream_with_stream_options() -> None:
    request = parse(chat(stream=True, stream_options={"include_usage": True}))

    assert request.stream is True
    assert request.params["stream_options"] == {"include_usage": True}


def test_passthrough_parameters_are_kept_untouched() -> None:
    passthrough = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
        "temperature": 0.3,
        "max_tokens": 128,
        "n": 2,
        "stop": ["\n\n", "END"],
        "seed": 7,
        "user": "user-42",
    }
    body = chat(**copy.deepcopy(passthrough))

    request = parse(body)

    assert dict(request.params) == passthrough
    assert request.uses_tools


def test_metadata_and_store_are_accepted_but_not_forwarded() -> None:
    request = parse(chat(metadata={"team": "a"}, store=True, temperature=0.1))

    assert dict(request.params) == {"temperature": 0.1}


# -- the `autoroute` extension ---------------------------------------------------------------------------------------


def test_autoroute_extension_is_parsed() -> None:
    extension = {"preference": "quality", "max_cost_per_1k": 1, "min_quality": 0.7}

    request = parse(chat(model="auto:cost", autoroute=extension))

    assert request.preference == "quality"
    assert request.max_cost_per_1k == 1.0 and isinstance(request.max_cost_per_1k, float)
    assert request.min_quality == 0.7
    assert "autoroute" not in request.params


@pytest.mark.parametrize(
    ("extension", "param"),
    [
        ({"preference": "fastest"}, "autoroute.preference"),
        ({"max_cost_per_1k": -1}, "autoroute.max_cost_per_1k"),
        ({"max_cost_per_1k": "cheap"}, "autoroute.max_cost_per_1k"),
        ({"max_cost_per_1k": True}, "autoroute.max_cost_per_1k"),
        ({"min_quality": 1.5}, "autoroute.min_quality"),
        ({"router": "mine"}, "autoroute.router"),
        ("quality", "autoroute"),
    ],
)
def test_autoroute_extension_is_validated(extension: Any, param: str) -> None:
    error = rejected(chat(autoroute=extension))

    assert (error.status, error.param) == (400, param)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity"])
def test_autoroute_extension_refuses_non_finite_numbers(number: bytes) -> None:
    body = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "autoroute": {"max_cost_per_1k": %s}}'

    assert rejected(body % number).param == "autoroute.max_cost_per_1k"


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    assert json_depth(b'{"a": [[1], {"b": []}]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{", "b": "\\\\", "c": "\\"[["}') == 1
    assert json_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_deep_nesting_is_a_400_naming_it(depth: int) -> None:
    body = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + b"[" * depth
    error = rejected(body + b"]" * depth + b"}")
    assert (error.status, error.code) == (400, "invalid_json") and "nested deeper than 64" in error.message
    with pytest.raises(ApiError):
        load_json(b"[" * depth + b"]" * depth)


def test_nesting_within_the_limit_is_parsed() -> None:
    depth = MAX_JSON_DEPTH - 5
    assert parse(chat(metadata={"x": json.loads("[" * depth + "]" * depth)})).request_id == "req-1"


# -- found by the schemathesis run (tests/e2e/test_openapi_fuzz.py) ----------------------------------------------------


def test_a_tool_type_that_is_not_a_string_is_a_400_not_a_500() -> None:
    assert rejected(chat(tools=[{"type": {}}])).param == "tools[0].type"


@pytest.mark.parametrize("text", [5, None, ["a"]])
def test_a_text_part_without_string_text_is_a_400_not_a_500(text: Any) -> None:
    body = chat(messages=[{"role": "user", "content": [{"type": "text", "text": text}]}])
    assert rejected(body).param == "messages[0].content[0].text"


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "foo"}, "messages[0].content[0]"),
        ({"type": "refusal", "refusal": "no"}, "messages[0].content[0]"),
        ({"type": "image_url"}, "messages[0].content[0].image_url"),
        ({"type": "image_url", "image_url": {}}, "messages[0].content[0].image_url"),
        ({"type": "file", "file_id": "f"}, "messages[0].content[0].file"),
    ],
)
def test_content_parts_are_openais_for_the_role(part: dict[str, Any], param: str) -> None:
    """LiteLLM refused these only after routing, as a failure of every backend (a 502 counting against them)."""
    assert rejected(chat(messages=[{"role": "user", "content": [part]}])).param == param
    image = {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}}
    assert parse(chat(messages=[{"role": "user", "content": [image]}])).messages[0]["content"] == [image]
    assert parse(chat(messages=[USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]))


@pytest.mark.parametrize("choice", ["sometimes", {}, {"type": "function"}, {"type": "function", "function": "f"}])
def test_tool_choice_is_openais(choice: Any) -> None:
    """LiteLLM refused `{}` only after routing, in its own words."""
    assert rejected(chat(tool_choice=choice)).param == "tool_choice"


def test_null_parameters_are_not_forwarded() -> None:
    """A null `web_search_options` broke LiteLLM for every backend (a 502); null means the default, as at OpenAI."""
    request = parse(chat(web_search_options=None, temperature=None, tools=None, stop="x"))
    assert dict(request.params) == {"stop": "x"}


def test_an_integral_float_count_is_an_integer() -> None:
    """2.0 is the integer 2 to JSON Schema and to JavaScript clients."""
    request = parse(chat(max_tokens=2.0, n=3.0))
    assert request.params["max_tokens"] == 2 and isinstance(request.params["max_tokens"], int)
    assert rejected(chat(max_tokens=2.5)).param == "max_tokens"


def test_n_is_at_most_openais_limit() -> None:
    assert rejected(chat(n=129)).param == "n"
    assert parse(chat(n=128)).params["n"] == 128
