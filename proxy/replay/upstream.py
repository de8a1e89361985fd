"""The replay upstream: an OpenAI-compatible server that answers with a routing-outcome set's recorded responses.

A request for model M is answered from the record whose last user message is the request's last user
message: M's recorded `response`, or a marked placeholder when the set has none (quality-only sets).
Usage is deterministic (4 characters a token, 4 more per message); when the record has M's real or
estimated cost, it is also reported in `usage.cost`, so the gateway books the set's cost, not a price
list's guess. Model names are matched exactly: LiteLLM strips its `openai/` prefix before calling, and
a set's own names may hold a '/' (`meta/llama-2-70b-chat`). Sampling parameters (`temperature`, `n`,
`max_tokens`, ...) are accepted and ignored: a recorded answer is what it is, one choice.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from router_plugins.outcomes import prompt_text

from .. import openai_wire as wire
from ..openai_wire import Choice
from .dataset import Outcome, ReplaySet

log = logging.getLogger(__name__)

DEFAULT_PORT = 4020
STREAM_PIECES = 5
RECORD_HEADER = "x-replay-record-id"
PROMPT_SNIPPET_CHARS = 80
_FINGERPRINT = "replay"
_MODELS_CREATED = 1_700_000_000


def placeholder(model: str, outcome: Outcome) -> str:
    return f"[replay placeholder: {model} has no recorded response; recorded quality {outcome.quality}]"


def _list(names: tuple[str, ...], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


async def _chat_completions(request: Request) -> Response:
    replay: ReplaySet = request.app.state.replay
    body = await wire.read_json_object(request)
    if isinstance(body, Response):
        return body
    invalid = wire.validate_chat(body)
    if invalid is not None:
        return invalid
    model: str = body["model"]
    messages: list[Any] = body["messages"]
    if not replay.has_model(model):
        return wire.error_response(
            404, f"The model '{model}' is not in the replay set {replay.name}; its models: {_list(replay.models)}.",
            param="model", code="model_not_found",
        )  # fmt: skip
    record = replay.find(messages)
    if record is None:
        snippet = prompt_text(messages)[:PROMPT_SNIPPET_CHARS]
        return wire.error_response(
            404, f"Unknown prompt: no record of {replay.name} has this last user message ({snippet!r}).",
            param="messages", code="prompt_not_found",
        )  # fmt: skip
    outcome = record.outcome(model)
    if outcome is None:
        return wire.error_response(
            404, f"Record {record.id} of {replay.name} has no outcome for the model '{model}'.",
            param="model", code="outcome_not_found",
        )  # fmt: skip
    choice = Choice(outcome.response if outcome.response is not None else placeholder(model, outcome))
    usage = wire.usage(messages, [choice], outcome.cost_usd)
    cid = f"chatcmpl-replay-{next(request.app.state.ids)}"
    headers = {RECORD_HEADER: record.id}
    if body.get("stream") is True:
        frames = wire.ChunkWriter(cid, model, wire.wants_usage(body), _FINGERPRINT)
        return StreamingResponse(
            _stream(frames, choice, usage), media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )  # fmt: skip
    return JSONResponse(wire.completion(cid, model, [choice], usage, _FINGERPRINT), headers=headers)


async def _stream(frames: wire.ChunkWriter, choice: Choice, usage: dict[str, Any]) -> AsyncIterator[bytes]:
    yield frames.role(0)
    for piece in wire.split_words(choice.content or "", STREAM_PIECES):
        yield frames.content(0, piece)
    yield frames.finish(0, choice.finish_reason)
    if frames.include_usage:
        yield frames.usage(usage)
    yield wire.SSE_DONE


async def _models(request: Request) -> Response:
    replay: ReplaySet = request.app.state.replay
    return JSONResponse(wire.model_list(replay.models, "replay", _MODELS_CREATED))


async def _health(request: Request) -> Response:
    replay: ReplaySet = request.app.state.replay
    return JSONResponse({"status": "ok", "set": replay.name, "records": replay.records, "models": len(replay.models)})


def create_app(replay: ReplaySet) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/models", _models, methods=["GET"]),
            Route("/v1/chat/completions", _chat_completions, methods=["POST"]),
            Route("/health", _health, methods=["GET"]),
        ]
    )
    app.state.replay = replay
    app.state.ids = itertools.count(1)
    return app


def serve(data: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Load and index the set once, then serve it with uvicorn until interrupted."""
    import uvicorn

    started = time.perf_counter()
    replay = ReplaySet.load(data)
    log.info(
        "replay upstream: %d records (%d distinct prompts), %d models from %s in %.2f s; http://%s:%d/v1",
        replay.records, replay.records - replay.duplicates, len(replay.models), data,
        time.perf_counter() - started, host, port,
    )  # fmt: skip
    uvicorn.run(create_app(replay), host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
