"""SIGTERM drains the gateway: readiness says so at once, new chats are refused, streams in flight get the grace
period, then end with one error frame and are recorded `cancelled`; everything is written and the exit status is 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable

import httpx
import openai

from .conftest import Gateway, Upstream, registry_text

GRACE_S = 3.0
STREAMERS = """models:
  - name: long-stream
    litellm_params: {model: openai/long-stream-60000, api_base: "{UPSTREAM}", timeout_s: 120}
    input_cost_per_mtok: 1.0
    output_cost_per_mtok: 1.0
  - name: short-stream
    litellm_params: {model: openai/short-stream-1000, api_base: "{UPSTREAM}", timeout_s: 120}
    input_cost_per_mtok: 1.0
    output_cost_per_mtok: 1.0
"""
PROMPT = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and the sea, in many words."}]


def _read_stream(url: str, model: str, frames: list[str], started: threading.Event) -> None:
    body = {"model": model, "stream": True, "messages": PROMPT}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
        frames.append(response.headers["x-autoroute-request-id"])
        for line in response.iter_lines():
            if line:
                frames.append(line)
                started.set()


def test_sigterm_drains_then_cuts_long_streams_with_one_error_frame(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    text = registry_text(upstream).replace("models:\n", STREAMERS.replace("{UPSTREAM}", f"{upstream.url}/v1"), 1)
    gateway = start_gateway(text, args=("--graceful-timeout", str(GRACE_S), "--no-reload"))
    long_frames: list[str] = []
    long_started = threading.Event()
    reader = threading.Thread(target=_read_stream, args=(gateway.url, "long-stream", long_frames, long_started))
    reader.start()
    assert long_started.wait(30), "the long stream never started"

    short: list[str] = []
    short_started = threading.Event()

    def short_stream() -> None:  # the real client: it must see a whole, ordinary stream
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
        raw = client.chat.completions.with_raw_response.create(model="short-stream", messages=PROMPT, stream=True)
        short.append(raw.headers["x-autoroute-request-id"])
        for chunk in raw.parse():
            short.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
            short_started.set()
        client.close()

    short_reader = threading.Thread(target=short_stream)
    short_reader.start()
    assert short_started.wait(30), "the short stream never started"

    signalled = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    ready = httpx.get(f"{gateway.url}/health/readiness", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["status"] == "shutting_down" and "draining" in ready.json()["checks"]["shutdown"]
    refused = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "auto", "messages": PROMPT}, timeout=5)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "shutting_down" and refused.json()["error"]["type"] == "server_error"
    assert refused.headers["retry-after"] == "1"

    short_reader.join(timeout=30)
    assert "".join(short[1:]).startswith("[short-stream-1000]"), "a stream shorter than the grace ends normally"
    reader.join(timeout=30)
    cut_after = time.monotonic() - signalled
    assert GRACE_S - 0.5 < cut_after < GRACE_S + 3, f"the long stream ended {cut_after:.1f} s after SIGTERM"
    request_id, *lines = long_frames
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines]
    errors = [p for p in payloads if "error" in p]
    assert len(payloads) >= 2 and errors == [payloads[-1]], "content first, then exactly one error frame, last"
    assert errors[0]["error"]["code"] == "shutting_down"
    assert "data: [DONE]" not in lines

    assert gateway.proc.wait(timeout=30) == 0
    log = gateway.log.read_text()
    assert "Application shutdown complete" in log and "0 dropped, 0 lost" in log
    statuses = {r["request_id"]: r["status"] for r in gateway.rows("SELECT request_id, status FROM routing_decisions")}
    assert statuses[request_id] == "cancelled" and statuses[short[0]] == "success"
    (attempt,) = gateway.rows("SELECT outcome, error_class FROM model_performance WHERE request_id = ?", (request_id,))
    assert (attempt["outcome"], attempt["error_class"]) == ("cancelled", "ShuttingDown")
