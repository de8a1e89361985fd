"""The app in process: feedback is answered 200 only once its row is stored, a store that refuses it gets a retryable
503, and a draining gateway says so in readiness and refuses new chats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from proxy.app import AppSettings, create_app
from proxy.events import DecisionRecord, Record

CONFIG = """
models:
  - {name: a, litellm_params: {model: openai/a, api_base: "http://127.0.0.1:9/v1"}, input_cost_per_mtok: 1,
     output_cost_per_mtok: 1}
router:
  classifier: {static_embedding: {enabled: false}}
"""


def _decision(request_id: str) -> DecisionRecord:
    return DecisionRecord(request_id, time.time(), "auto", "balanced", "chat", 0.5, "rules", False, [], "a", "a",
                          "only one", [], "static-rules", "1", 1.0, False, "success", 1, 5)  # fmt: skip


def test_feedback_is_stored_before_its_200_and_refused_with_503_when_it_cannot_be(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    app = create_app(AppSettings(config, tmp_path / "data", watch_config=False))

    async def go() -> list[Any]:
        async with app.router.lifespan_context(app):
            services = app.state.services
            services.recorder.record(_decision("r-1"))
            seen: list[Any] = []
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
                ok = await client.post("/v1/feedback", json={"request_id": "r-1", "score": 0.75, "comment": "good"})
                seen.append((ok.status_code, [row["comment"] for row in services.store.feedback("r-1")]))

                def refuse(records: Sequence[Record]) -> None:
                    raise OSError("disk full")

                services.store.write_durable = refuse
                refused = await client.post("/v1/feedback", json={"request_id": "r-1", "score": 0.1})
                seen.append((refused.status_code, refused.json(), refused.headers.get("retry-after")))

                app.state.drain.draining = True  # as the SIGTERM handler sets it
                ready = await client.get("/health/readiness")
                chat = await client.post("/v1/chat/completions", json={"model": "auto", "messages": []})
                seen.append((ready.status_code, ready.json()["status"], ready.json()["feedback"]))
                seen.append((chat.status_code, chat.json()["error"]["code"], chat.headers.get("connection")))
            return seen

    stored, refused, ready, chat = asyncio.run(go())
    assert stored == (200, ["good"]), "the row is in the store when the 200 is sent"
    status, body, retry_after = refused
    assert status == 503 and retry_after == "1"
    assert body["error"]["code"] == "feedback_not_recorded" and body["error"]["type"] == "server_error"
    assert ready == (503, "shutting_down", {"written": 1, "failed": 1, "commits": 1})
    assert chat == (503, "shutting_down", "close")
