"""The fake upstream's `stream-<ms>` mode, which the concurrency benchmark relies on: first chunk at once, the rest spread
over <ms>, the same content as without it. The body generator is timed directly (an in-process transport buffers)."""

from __future__ import annotations

import asyncio
import json
import time

from proxy import fake_upstream

TEXT = " ".join(f"w{i}" for i in range(40))  # 150 chars: the fake echoes up to 200


async def _timed_frames(model: str) -> tuple[list[float], str, bool]:
    """Arrival time of each content frame (s after the start), the joined content, and whether [DONE] came."""
    body = {"model": model, "messages": [{"role": "user", "content": TEXT}], "stream": True}
    choices = fake_upstream._build_choices(body)
    frames = fake_upstream._stream("c-1", body, choices, fake_upstream._usage(body, choices), fake_upstream._slow_ms(model), {})
    arrivals, content, done = [], "", False
    started = time.perf_counter()
    async for frame in frames:
        payload = frame.decode().removeprefix("data: ").strip()
        if payload == "[DONE]":
            done = True
            continue
        delta = json.loads(payload)["choices"][0]["delta"]
        if delta.get("content"):
            arrivals.append(time.perf_counter() - started)
            content += delta["content"]
    return arrivals, content, done


def test_stream_mode_spreads_chunks_over_the_given_time_after_a_prompt_first_chunk() -> None:
    arrivals, content, done = asyncio.run(_timed_frames("m-stream-400"))
    plain_arrivals, plain_content, _ = asyncio.run(_timed_frames("m"))
    assert done and content == f"[m-stream-400] {TEXT}"
    assert plain_content == f"[m] {TEXT}"
    assert 10 <= len(arrivals) <= fake_upstream.STREAM_PIECES
    # The first content frame after one gap (~400 ms / pieces), the last after about the whole spread...
    assert arrivals[0] < 0.4 / 2
    assert arrivals[-1] >= 0.4 * 0.9
    # ...while without the mode the whole answer is there at once.
    assert plain_arrivals[-1] < arrivals[-1] / 10
