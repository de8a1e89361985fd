"""A deterministic fake OpenAI-compatible upstream for tests, demos and benchmarks.

Behaviour is picked by substrings of the requested `model` name, so a provider
prefix (`openai/coder-slow-300`) or a descriptive name still triggers it
(checked in this order):

- ``require-key``: 401 unless ``Authorization: Bearer fake-secret``
- ``echo-auth``: 400 whose message quotes the ``Authorization`` header and the key it carried (a careless provider)
- ``timeout``: waits 300 s first (cancellable; ends early if the client leaves)
- ``error-500`` / ``error-429`` / ``error-400`` / ``error-401``: OpenAI error body; a 429 says ``retry-after: 1``,
  or ``retry-after: <s>`` with ``retry-after-<s>``, or carries no retry hint at all with ``no-retry-after``
- ``garbage``: 200 whose body is an HTML page, not JSON (streaming too)
- ``not-a-completion``: 200 JSON that is no chat completion (``{"status": "ok"}``; streaming: one such SSE frame)
- ``flaky``: 500 on the 1st, 3rd, ... call for that exact model name, 200 otherwise
- ``err-in-stream``: streaming sends 2 content chunks then the body raises; non-streaming 500
- ``slow`` / ``slow-<ms>``: delays the answer, errors included (default 1000 ms); a successful
  stream waits that long before its first chunk, then spreads ~10 chunks over as long again
- ``stream-<ms>``: a stream sends its first chunk at once, then spreads ~20 content chunks over ``<ms>``
  (a long generation with a fast first token; non-streaming calls answer at once)
- ``stall``: a stream sends its first chunk, then waits 300 s (cancellable) before the rest
- ``no-done``: a stream ends without ``data: [DONE]`` (its content, finish and usage sent; some providers do this)
- ``reports-cost``: usage also carries ``cost = total_tokens * 1e-6``
- anything else: 200 with content ``"[<model>] " + <last user text[:200]>``

A streamed request's log entry carries ``stream_end``: ``open`` while it runs, then ``complete``, ``broken``
(``err-in-stream``) or ``cancelled`` (the client hung up first), so a test sees whether, and when, the gateway
closed its upstream stream.

Request parameters honoured: ``n``, ``max_tokens`` / ``max_completion_tokens``
(4 chars per token), ``stop``, ``response_format`` (json_object/json_schema),
``tools`` + forcing ``tool_choice``, ``stream`` and ``stream_options.include_usage``.
Run standalone with ``python -m proxy.fake_upstream --port 4010``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import openai_wire as wire
from .openai_wire import CHARS_PER_TOKEN, Choice

LOG_LIMIT = 50
ECHO_CHARS = 200
DEFAULT_SLOW_MS = 1000
TIMEOUT_SECONDS = 300.0
REQUIRED_KEY = "fake-secret"
SAMPLE_MODELS = (
    "fake-model",
    "fake-model-slow-200",
    "fake-model-reports-cost",
    "fake-model-flaky",
    "fake-model-error-500",
    "fake-model-err-in-stream",
)
# Fixed so /v1/models is byte-for-byte reproducible.
_MODELS_CREATED = 1_700_000_000
_INJECTED_ERRORS = {
    500: "server_error",
    429: "rate_limit_error",
    400: "invalid_request_error",
    401: "authentication_error",
}
_SLOW_RE = re.compile(r"slow-(\d+)")
_RETRY_AFTER_RE = re.compile(r"retry-after-(\d+)")
GARBAGE_BODY = "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
NOT_A_COMPLETION = {"status": "ok"}
_STREAM_RE = re.compile(r"stream-(\d+)")
STREAM_PIECES = 20
_FINGERPRINT = "fake"


class InjectedStreamError(RuntimeError):
    """Raised inside the `err-in-stream` body generator to cut the response short."""


@dataclass
class _State:
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    calls: Counter[str] = field(default_factory=Counter)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))


def _slow_ms(model: str) -> int:
    if "slow" not in model:
        return 0
    match = _SLOW_RE.search(model)
    return int(match.group(1)) if match else DEFAULT_SLOW_MS


def _stream_ms(model: str) -> int:
    match = _STREAM_RE.search(model)
    return int(match.group(1)) if match else 0


def _injected_failure(state: _State, model: str, stream: bool) -> Response | None:
    for status, type_ in _INJECTED_ERRORS.items():
        if f"error-{status}" in model:
            message = f"Injected error-{status} for model {model!r}."
            if status == 429 and "no-retry-after" in model:
                # No retry hint at all (error_response would add the gateway's own defaults).
                body = {"error": {"message": message, "type": type_, "param": None, "code": None}}
                return JSONResponse(body, status_code=429)
            match = _RETRY_AFTER_RE.search(model)
            headers = {"retry-after": match.group(1) if match else "1"} if status == 429 else None
            return wire.error_response(status, message, type_, headers=headers)
    if "garbage" in model:
        return Response(GARBAGE_BODY, status_code=200, media_type="text/html")
    if "not-a-completion" in model:
        if stream:
            frame = b"data: " + json.dumps(NOT_A_COMPLETION).encode() + b"\n\n"
            return Response(frame + wire.SSE_DONE, media_type="text/event-stream")
        return JSONResponse(NOT_A_COMPLETION)
    if "flaky" in model:
        state.calls[model] += 1
        if state.calls[model] % 2 == 1:
            message = f"Injected flaky failure #{state.calls[model]} for {model!r}."
            return wire.error_response(500, message, "server_error")
    if "err-in-stream" in model and not stream:
        return wire.error_response(500, f"Injected failure for non-streaming {model!r}.", "server_error")
    return None


async def _sleep_unless_disconnected(request: Request, seconds: float) -> bool:
    """Sleep, returning False early if the client hangs up first.

    A client whose own timeout fired has left; without this race the handler
    would hold the connection for the full delay and stall uvicorn's shutdown.
    """
    disconnected = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal disconnected
            while (await request.receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await anyio.sleep(seconds)
        group.cancel_scope.cancel()
    return not disconnected


def _forced_tool(body: dict[str, Any]) -> str | None:
    """Name of the tool the request forces, or None when the model may answer in text."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
    elif choice == "required":
        first = tools[0] if isinstance(tools[0], dict) else {}
        name = (first.get("function") or {}).get("name")
    else:
        return None
    return name if isinstance(name, str) and name else "tool"


def _build_choices(body: dict[str, Any]) -> list[Choice]:
    model: str = body["model"]
    n: int = body.get("n") or 1
    tool = _forced_tool(body)
    if tool is not None:
        call = {"id": "call_fake_1", "type": "function", "function": {"name": tool, "arguments": "{}"}}
        return [Choice(None, call, "tool_calls") for _ in range(n)]
    messages = body["messages"]
    user_texts = [wire.message_text(m) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    reply = user_texts[-1][:ECHO_CHARS] if user_texts else ""
    fmt = body.get("response_format")
    json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    stop = body.get("stop")
    stop_list = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stop_list if isinstance(s, str) and s]
    limits = [body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None]
    limit = min(limits) if limits else None
    choices = []
    for i in range(n):
        suffix = f" #{i}" if i else ""
        # In JSON mode the suffix goes inside the object so the content stays parseable.
        if json_mode:
            text = json.dumps({"model": model, "echo": reply + suffix})
        else:
            text = f"[{model}] {reply}{suffix}"
        cuts = [text.find(s) for s in stops if s in text]
        if cuts:
            text = text[: min(cuts)]
        finish = "stop"
        if limit is not None and len(text) > limit * CHARS_PER_TOKEN:
            text, finish = text[: limit * CHARS_PER_TOKEN], "length"
        choices.append(Choice(text, None, finish))
    return choices


def _usage(body: dict[str, Any], choices: list[Choice]) -> dict[str, Any]:
    usage = wire.usage(body["messages"], choices)
    if "reports-cost" in body["model"]:
        usage["cost"] = usage["total_tokens"] * 1e-6
    return usage


async def _stream(
    cid: str, body: dict[str, Any], choices: list[Choice], usage: dict[str, Any], slow_ms: int, entry: dict[str, Any]
) -> AsyncIterator[bytes]:
    entry["stream_end"] = "open"
    try:
        async with contextlib.aclosing(_frames(cid, body, choices, usage, slow_ms)) as frames:
            async for frame in frames:
                yield frame
    except InjectedStreamError:
        entry["stream_end"] = "broken"
        raise
    except BaseException:  # cancelled, or closed by the server: the client hung up first
        entry["stream_end"] = "cancelled"
        raise
    entry["stream_end"] = "complete"


async def _frames(
    cid: str, body: dict[str, Any], choices: list[Choice], usage: dict[str, Any], slow_ms: int
) -> AsyncGenerator[bytes]:
    model: str = body["model"]
    include_usage = wire.wants_usage(body)
    frames = wire.ChunkWriter(cid, model, include_usage, _FINGERPRINT)
    break_stream = "err-in-stream" in model
    stall = "stall" in model

    stream_ms = _stream_ms(model)
    spread_ms = stream_ms or slow_ms
    parts = STREAM_PIECES if stream_ms else 10 if slow_ms else 5
    if slow_ms:
        await anyio.sleep(slow_ms / 1000)
    for index, choice in enumerate(choices):
        yield frames.role(index)
        if choice.tool_call is not None:
            yield frames.tool_call(index, choice.tool_call)
        else:
            pieces = wire.split_words(choice.content or "", parts)
            if break_stream:
                pieces = pieces[:2]
            gap = spread_ms / 1000 / max(1, len(pieces))
            for piece in pieces:
                if gap:
                    await anyio.sleep(gap)
                elif stall:
                    await anyio.sleep(TIMEOUT_SECONDS)  # cancelled when the client hangs up
                yield frames.content(index, piece)
        if break_stream:
            # Raising (rather than returning) makes the server drop the connection
            # mid-body, which is what a crashed upstream looks like to the gateway.
            raise InjectedStreamError(f"injected stream failure for {model!r}")
        yield frames.finish(index, choice.finish_reason)
    if include_usage:
        yield frames.usage(usage)
    if "no-done" not in model:
        yield wire.SSE_DONE


async def _chat_completions(request: Request) -> Response:
    state: _State = request.app.state.fake
    body = await wire.read_json_object(request)
    if isinstance(body, Response):
        return body
    has_auth = "authorization" in request.headers
    entry = {"model": body.get("model"), "body": body, "headers": {"authorization": has_auth}}
    state.log.append(entry)
    invalid = wire.validate_chat(body)
    if invalid is not None:
        return invalid
    model: str = body["model"]
    stream = body.get("stream") is True

    if "require-key" in model and request.headers.get("authorization") != f"Bearer {REQUIRED_KEY}":
        return wire.error_response(401, "Incorrect API key provided.", "authentication_error")
    if "echo-auth" in model:
        auth = request.headers.get("authorization", "")
        message = f"Invalid request sent with Authorization: {auth} (key {auth.removeprefix('Bearer ')} is fine)."
        return wire.error_response(400, message, "invalid_request_error")
    if "timeout" in model and not await _sleep_unless_disconnected(request, TIMEOUT_SECONDS):
        # Nobody is listening any more; the status only shows up in server logs.
        return Response(status_code=499)
    slow_ms = _slow_ms(model)
    failure = _injected_failure(state, model, stream)
    # A streaming success does its slow part inside the body, after the headers.
    if slow_ms and (failure is not None or not stream):
        if not await _sleep_unless_disconnected(request, slow_ms / 1000):
            return Response(status_code=499)
    if failure is not None:
        return failure

    cid = f"chatcmpl-fake-{next(state.ids)}"
    choices = _build_choices(body)
    usage = _usage(body, choices)
    if stream:
        return StreamingResponse(
            _stream(cid, body, choices, usage, slow_ms, entry),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    return JSONResponse(wire.completion(cid, model, choices, usage, _FINGERPRINT))


async def _models(request: Request) -> Response:
    return JSONResponse(wire.model_list(SAMPLE_MODELS, "fake", _MODELS_CREATED))


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _requests_log(request: Request) -> Response:
    state: _State = request.app.state.fake
    if request.method == "DELETE":
        cleared = len(state.log)
        state.log.clear()
        return JSONResponse({"cleared": cleared})
    return JSONResponse(list(state.log))


def create_app() -> Starlette:
    """Build a fresh app; request log, id and flaky counters live on this instance."""
    app = Starlette(
        routes=[
            Route("/v1/models", _models, methods=["GET"]),
            Route("/v1/chat/completions", _chat_completions, methods=["POST"]),
            Route("/health", _health, methods=["GET"]),
            Route("/_fake/requests", _requests_log, methods=["GET", "DELETE"]),
        ]
    )
    app.state.fake = _State()
    return app


def serve(host: str = "127.0.0.1", port: int = 4010) -> None:
    """Run the fake upstream with uvicorn until interrupted."""
    # Without a graceful-shutdown limit, Ctrl+C waits for any client still
    # connected to a `timeout` model (300 s); with it, uvicorn cancels the sleep.
    app = create_app()
    uvicorn.run(app, host=host, port=port, loop="auto", http="auto", log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description="Deterministic fake OpenAI-compatible upstream.")
    _parser.add_argument("--host", default="127.0.0.1")
    _parser.add_argument("--port", type=int, default=4010)
    _args = _parser.parse_args()
    serve(_args.host, _args.port)
