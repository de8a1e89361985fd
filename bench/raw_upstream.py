"""A zero-latency OpenAI-compatible upstream as a bare ASGI app: the least work an upstream can do per call.

The project's fake upstream (proxy/fake_upstream.py) validates and echoes every request through Starlette; this one
answers a fixed completion (or a fixed 5-chunk stream when `"stream": true`), so the gateway being measured, not
the upstream, dominates the CPU of an overhead benchmark. Run: python bench/raw_upstream.py --port 4011
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _completion(model: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-raw", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the raw upstream."},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": USAGE,
    }).encode()  # fmt: skip


def _chunks(model: str, include_usage: bool) -> list[bytes]:
    base = {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    deltas = [{"role": "assistant", "content": ""}, {"content": "Hello "}, {"content": "from "}, {"content": "raw."}]
    frames = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    frames.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        frames.append({**base, "choices": [], "usage": USAGE})
    return [b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames] + [b"data: [DONE]\n\n"]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
        return
    try:
        request = json.loads(body)
    except ValueError:
        request = {}
    model = str(request.get("model", "raw"))
    if request.get("stream") is True:
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        for frame in _chunks(model, include_usage):
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    payload = _completion(model)
    await send({"type": "http.response.start", "status": 200, "headers": _JSON})
    await send({"type": "http.response.body", "body": payload})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4011)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False, lifespan="on", backlog=4096)  # fmt: skip


if __name__ == "__main__":
    main()
