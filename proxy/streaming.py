"""Relaying an upstream stream to the client as server-sent events, and saying how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from .drain import SHUTTING_DOWN, Drain, ShuttingDown
from .events import Outcome
from .forward import StreamHandle, Usage, classify_error, clean_chunk, usage_chunk

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
_UNBOUNDED = contextlib.nullcontext()


class ClientDisconnected(Exception):
    """The client went away before the stream ended."""


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def relay_stream(
    handle: StreamHandle,
    *,
    include_usage: bool,
    on_end: Callable[[Outcome, Usage, BaseException | None], None],
    drain: Drain | None = None,
) -> AsyncIterator[bytes]:
    """Yield the upstream chunks in OpenAI's shape, then usage (if asked) and [DONE].

    After the first byte an HTTP status can no longer change, so a failure becomes one `data: {"error": ...}`
    frame and the stream ends without [DONE], which OpenAI clients report as an error. So does a stream the
    gateway's shutdown cuts (`drain`: its grace period ran out): code `shutting_down`, outcome `cancelled`.
    """
    usage, raw_usage, template = Usage(), None, None
    outcome: Outcome = "success"
    error: BaseException | None = None
    bound = drain.bound if drain is not None else lambda: _UNBOUNDED
    try:
        raw: Any = handle.first
        while True:
            dumped = raw if isinstance(raw, dict) else raw.model_dump()
            chunk, chunk_usage = clean_chunk(dumped, handle.model)
            if chunk_usage is not None:
                usage, raw_usage = chunk_usage, dumped.get("usage")
            if chunk is not None:
                template = chunk
                yield sse(chunk)
            try:
                async with bound():
                    raw = await handle.rest.__anext__()
            except StopAsyncIteration:
                break
        if include_usage and template is not None:
            yield sse(usage_chunk(template, usage, raw_usage))
        yield DONE
    except (GeneratorExit, asyncio.CancelledError):
        if drain is not None and drain.expired:  # the server's shutdown timeout ended what the drain could not
            outcome, error = "cancelled", ShuttingDown("cancelled by the server's shutdown")
        else:
            outcome, error = "partial", ClientDisconnected("the client closed the stream")
        raise
    except ShuttingDown as exc:
        outcome, error = "cancelled", exc
        log.warning("stream from %s cut: the shutdown grace period ran out", handle.model)
        yield sse(
            {
                "error": {
                    "message": "The gateway is shutting down and this stream outlived its grace period; retry the "
                    "request.",
                    "type": "server_error",
                    "param": None,
                    "code": SHUTTING_DOWN,
                }
            }
        )
    except Exception as exc:  # noqa: BLE001 - any upstream failure mid-stream ends in one error frame
        upstream = classify_error(exc, handle.secrets)
        outcome, error = "partial", upstream
        log.warning("stream from %s broke after the first byte: %s", handle.model, upstream.error_class)
        yield sse(
            {
                "error": {
                    "message": f"The backend '{handle.model}' failed mid-stream: {upstream.message}",
                    "type": "server_error",
                    "param": None,
                    "code": "upstream_stream_error",
                }
            }
        )
    finally:
        handle.usage = usage
        closer = getattr(handle.rest, "aclose", None)
        if closer is not None and outcome != "success":
            try:
                await closer()
            except Exception:  # noqa: BLE001 - closing a broken stream may fail again; nothing to do
                pass
        try:
            on_end(outcome, usage, error)
        except Exception:  # noqa: BLE001 - recording must never break the response
            log.exception("recording the end of a stream failed")
