"""relay_stream: OpenAI's SSE framing, usage on request, one error frame mid-stream, disconnects recorded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from proxy.forward import StreamHandle, Usage
from proxy.streaming import ClientDisconnected, relay_stream

FIRST = {"id": "c1", "created": 1, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
CONTENT = {"id": "c1", "created": 1, "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]}
FINISH = {"id": "c1", "created": 1, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
USAGE = {"id": "c1", "created": 1, "choices": [{"index": 0, "delta": {}}], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


async def _chunks(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


def _relay(items: list[Any], include_usage: bool, take: int | None = None) -> tuple[list[bytes], list[tuple[str, Usage, BaseException | None]]]:
    ended: list[tuple[str, Usage, BaseException | None]] = []

    async def go() -> list[bytes]:
        handle = StreamHandle(FIRST, _chunks(items).__aiter__(), "served")
        out: list[bytes] = []
        stream = relay_stream(handle, include_usage=include_usage, on_end=lambda *a: ended.append(a))
        async for frame in stream:
            out.append(frame)
            if take is not None and len(out) >= take:
                await stream.aclose()  # type: ignore[attr-defined]
                break
        return out

    return asyncio.run(go()), ended


def _payloads(frames: list[bytes]) -> list[Any]:
    return [json.loads(f.removeprefix(b"data: ")) for f in frames if f != b"data: [DONE]\n\n"]


def test_chunks_are_renamed_and_end_with_done() -> None:
    frames, ended = _relay([CONTENT, FINISH, USAGE], include_usage=False)
    assert frames[-1] == b"data: [DONE]\n\n"
    payloads = _payloads(frames)
    assert [p["choices"][0]["delta"] for p in payloads] == [{"role": "assistant", "content": ""}, {"content": "hello"}, {}]
    assert all(p["model"] == "served" and p["object"] == "chat.completion.chunk" for p in payloads)
    assert ended == [("success", Usage(5, 2, None), None)], "usage recorded though the client did not ask for it"


def test_usage_chunk_only_when_asked() -> None:
    frames, _ = _relay([CONTENT, FINISH, USAGE], include_usage=True)
    last = _payloads(frames)[-1]
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def test_failure_mid_stream_is_one_error_frame_without_done() -> None:
    frames, ended = _relay([CONTENT, ConnectionError("upstream vanished")], include_usage=True)
    assert b"data: [DONE]\n\n" not in frames
    payloads = _payloads(frames)
    assert [p for p in payloads if "error" in p] == [payloads[-1]]
    assert set(payloads[-1]["error"]) == {"message", "type", "param", "code"}
    (outcome, _, error), = ended
    assert outcome == "partial" and error is not None


def test_client_going_away_is_recorded_as_partial() -> None:
    frames, ended = _relay([CONTENT, CONTENT, CONTENT, FINISH], include_usage=False, take=2)
    assert len(frames) == 2
    (outcome, _, error), = ended
    assert outcome == "partial" and isinstance(error, ClientDisconnected)
