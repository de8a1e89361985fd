"""Load: bodies too large to hold, 200 streams at once, and a shutdown with streams in flight."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai

from .conftest import CLIENT_KEY, Figures, Gateway, Upstream, auth_headers, chat_body, readiness, registry_text

UPLOAD_MB = 100
STREAMS = 200
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


def _peak_rss_kb(gateway: Gateway) -> int:
    status = Path(f"/proc/{gateway.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def test_load_chunked_upload(faults_gateway: Gateway, figures: Figures) -> None:
    """A 100 MB body sent chunked (no Content-Length) is refused with a 413 once it passes the 20 MB limit, holding
    at most the limit, not the body; a body declaring 1 GB is refused before it is read."""

    def body() -> Iterator[bytes]:
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(UPLOAD_MB):
            yield b"x" * (1 << 20)

    before = _peak_rss_kb(faults_gateway)
    headers = {**auth_headers(), "content-type": "application/json"}
    response = httpx.post(f"{faults_gateway.base_url}/chat/completions", content=body(), headers=headers, timeout=60)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert "content-length" not in response.request.headers, "sent chunked"
    grown_mb = (_peak_rss_kb(faults_gateway) - before) / 1024
    assert grown_mb < 40, "at most the 20 MB limit is held, not the 100 MB sent"

    # A declared length over the limit: answered from the headers, while the client has sent only its first bytes.
    with socket.create_connection(("127.0.0.1", int(faults_gateway.url.rsplit(":", 1)[1])), timeout=10) as sock:
        started = time.perf_counter()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer " + CLIENT_KEY.encode() + b"\r\ncontent-length: 1073741824\r\n\r\n{"
        )
        answer = sock.recv(4096).decode(errors="replace")
        declared_s = time.perf_counter() - started
        while "request_too_large" not in answer and (more := sock.recv(4096)):
            answer += more.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413") and "request_too_large" in answer, answer
    figures["upload_mb"], figures["grown_mb"], figures["declared_s"] = UPLOAD_MB, max(grown_mb, 0.0), declared_s
    figures.summary = ("peak RSS +{grown_mb:.1f} MB for a {upload_mb} MB chunked upload (413); a declared 1 GB "
                       "refused in {declared_s:.3f} s")  # fmt: skip


def test_load_concurrent_streams(faults_gateway: Gateway, figures: Figures) -> None:
    """200 streams of 5 s at once through the real async client: every one whole, in OpenAI's shape, and recorded a
    success."""

    async def run() -> tuple[list[str | BaseException], list[str]]:
        sdk = openai.AsyncOpenAI(base_url=faults_gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=120)
        ids: list[str] = []

        async def one(i: int) -> str:
            raw = await sdk.chat.completions.with_raw_response.create(
                **chat_body(f"story number {i} about the sea", "long-stream"), stream=True
            )
            ids.append(raw.headers["x-autoroute-request-id"])
            return "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])

        texts = await asyncio.gather(*(one(i) for i in range(STREAMS)), return_exceptions=True)
        await sdk.close()
        return texts, ids

    started = time.monotonic()
    texts, ids = asyncio.run(run())
    elapsed = time.monotonic() - started
    whole = [t for i, t in enumerate(texts) if t == f"[long-stream-5000] story number {i} about the sea"]
    assert len(whole) == STREAMS, [t for t in texts if not isinstance(t, str)][:3]
    marks = ",".join("?" * len(ids))
    rows = faults_gateway.wait_rows(f"SELECT outcome FROM model_performance WHERE request_id IN ({marks})",
                                    tuple(ids), count=STREAMS)  # fmt: skip
    assert [r["outcome"] for r in rows] == ["success"] * STREAMS
    figures["streams"], figures["elapsed_s"] = STREAMS, elapsed
    figures.summary = "{streams} concurrent 5 s streams: all whole and recorded, in {elapsed_s:.1f} s"


def _read_stream(url: str, model: str, frames: list[str], started: threading.Event) -> None:
    body = {"model": model, "stream": True, "messages": PROMPT}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
        frames.append(response.headers["x-autoroute-request-id"])
        for line in response.iter_lines():
            if line:
                frames.append(line)
                started.set()


def test_load_shutdown_drain(start_gateway: Callable[..., Gateway], upstream: Upstream, figures: Figures) -> None:
    """SIGTERM with streams in flight: readiness says `shutting_down` (503) at once and new chats are refused with a
    retryable 503; a stream shorter than the grace period (3 s) ends normally, a longer one gets one error frame at
    the grace period and is recorded `cancelled`; everything is written and the exit status is 0."""
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
        sdk = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
        raw = sdk.chat.completions.with_raw_response.create(model="short-stream", messages=PROMPT, stream=True)
        short.append(raw.headers["x-autoroute-request-id"])
        for chunk in raw.parse():
            short.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
            short_started.set()
        sdk.close()

    short_reader = threading.Thread(target=short_stream)
    short_reader.start()
    assert short_started.wait(30), "the short stream never started"

    signalled = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    ready = readiness(gateway, timeout=5)
    answered_after = time.monotonic() - signalled
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
    exited_after = time.monotonic() - signalled
    log = gateway.log.read_text()
    assert "Application shutdown complete" in log and "0 dropped, 0 lost" in log
    statuses = {r["request_id"]: r["status"] for r in gateway.rows("SELECT request_id, status FROM routing_decisions")}
    assert statuses[request_id] == "cancelled" and statuses[short[0]] == "success"
    (attempt,) = gateway.rows("SELECT outcome, error_class FROM model_performance WHERE request_id = ?", (request_id,))
    assert (attempt["outcome"], attempt["error_class"]) == ("cancelled", "ShuttingDown")
    figures.values.update(ready_s=answered_after, grace_s=GRACE_S, cut_s=cut_after, exit_s=exited_after)
    figures.summary = ("readiness 503 shutting_down {ready_s:.2f} s after SIGTERM; the long stream cut at "
                       "{cut_s:.1f} s (grace {grace_s:g} s); exit 0 at {exit_s:.1f} s, nothing lost")  # fmt: skip
