"""Checking a real answer of the gateway against its OpenAPI document: status, media type, required headers, body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema


def validator(document: Mapping[str, Any], schema: Mapping[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for `schema`, a part of `document`, whose `#/components/...` references resolve in `document`."""
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def component(document: Mapping[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return validator(document, {"$ref": f"#/components/schemas/{name}"})


def documented_response(document: Mapping[str, Any], method: str, path: str, status: int) -> Mapping[str, Any]:
    responses = document["paths"][path][method.lower()]["responses"]
    response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
    assert response is not None, f"{method} {path} does not document a {status}"
    return response  # type: ignore[no-any-return]


def check_response(
    document: Mapping[str, Any],
    method: str,
    path: str,
    status: int,
    headers: Mapping[str, str],
    text: str,
) -> None:
    """That `method path` (a path of the document, e.g. `/v1/models/{model}`) may answer `status`, with these
    `headers` and this body. An event stream is checked event by event."""
    response = documented_response(document, method, path, status)
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [name for name, header in response.get("headers", {}).items() if header["required"]
               and name not in lowered]  # fmt: skip
    assert not missing, f"{method} {path} {status} lacks the headers {missing}"
    media_type = lowered["content-type"].split(";")[0].strip()
    assert media_type in response["content"], f"{method} {path} {status} does not document {media_type}"
    schema = response["content"][media_type]["schema"]
    if media_type == "text/event-stream":
        check_events(document, schema, text)
    else:
        validator(document, schema).validate(json.loads(text))


def check_events(document: Mapping[str, Any], event_schema: Mapping[str, Any], text: str) -> list[str]:
    """Each `data:` event of `text` against the document's event schema; returns the events' data."""
    data = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert data, "no events"
    events = validator(document, event_schema)
    payloads = validator(document, event_schema["properties"]["data"]["else"]["contentSchema"])
    for item in data:
        events.validate({"data": item})
        if item != "[DONE]":
            payloads.validate(json.loads(item))  # the event schema's contentSchema, which validators may not assert
    return data
