"""The LiteLLM plugin at parity: its calls land in the store as the gateway's do, feedback for them is accepted by
`autoroute feedback`, and the learning loop runs in its process."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import litellm
import pytest

from proxy.app import AppSettings, create_app
from proxy.cli import main
from proxy.litellm_plugin import StoreSink
from proxy.store import open_store
from router_plugins.litellm_plugin import AutorouteCallback

CONFIG = (Path(__file__).parent.parent / "fixtures" / "litellm_plugin" / "registry.yaml").read_text()
CODING = "Implement a regex in a code snippet that parses dates."
START = datetime.datetime(2026, 1, 1, 12, 0, 0)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG + f"storage: {{data_dir: {tmp_path / 'data'}, flush_interval_ms: 10}}\n")
    return path


def _event(data: dict, model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "litellm_params": {"metadata": {**data["metadata"], "model_group": model}}, **extra}


async def _serve(callback: AutorouteCallback) -> None:
    """What LiteLLM does for three calls: one served after a fallback, one every backend failed, one refused."""
    data = {"model": "auto", "messages": [{"role": "user", "content": CODING}], "litellm_call_id": "call-1"}
    await callback.async_pre_call_hook(None, None, data, "acompletion")
    error = litellm.InternalServerError("Injected error-500 for sk-secret-0123456789abcdef", "openai", "coder")
    await callback.async_log_failure_event(_event(data, "coder", exception=error), None, START,
                                           START + datetime.timedelta(seconds=2))  # fmt: skip
    usage = SimpleNamespace(usage=SimpleNamespace(prompt_tokens=10, completion_tokens=20))
    await callback.async_log_success_event(_event(data, "mini"), usage, START, START + datetime.timedelta(seconds=1))
    failing = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}], "litellm_call_id": "call-2"}
    await callback.async_pre_call_hook(None, None, failing, "acompletion")
    rejected = litellm.BadRequestError("no such thing", "mini", "openai")
    await callback.async_log_failure_event(_event(failing, "mini", exception=rejected), None, START, START)
    await callback.async_post_call_failure_hook(failing, rejected, None)
    huge = {"model": "auto", "messages": [{"role": "user", "content": "x" * 4_000_000}], "litellm_call_id": "call-3"}
    with pytest.raises(litellm.BadRequestError):
        await callback.async_pre_call_hook(None, None, huge, "acompletion")
    sink = callback.sink
    assert isinstance(sink, StoreSink)
    await sink.recorder.flush()
    if sink.learning_on:
        snapshot = sink.engines.data.path("winrate-current.json")
        for _ in range(100):  # the aggregator's first step runs at once, in a worker thread
            if snapshot.exists():
                break
            await asyncio.sleep(0.05)
    await sink.stop()


def test_the_plugins_calls_are_recorded_as_the_gateways(config: Path, tmp_path: Path) -> None:
    callback = AutorouteCallback(config, sink=StoreSink(learning=True))
    asyncio.run(_serve(callback))
    store = open_store(str(tmp_path / "data" / "autoroute.db"))
    served = store.decision("call-1")
    assert served is not None
    assert (served["status"], served["routed_model"], served["selected_model"], served["attempts"]) == (
        "success", "coder", "mini", 2)  # fmt: skip
    assert (served["task"], served["router_name"], served["requested_model"]) == ("coding", "static-rules", "auto")
    assert served["prompt_text"] == CODING and [a["model"] for a in served["alternatives"]] == ["coder", "mini"]
    attempts = store.performance("call-1")
    assert [(a["attempt"], a["model"], a["outcome"]) for a in attempts] == [(1, "coder", "failure"),
                                                                           (2, "mini", "success")]  # fmt: skip
    assert "sk-secret" not in attempts[0]["error_message"] and "[redacted]" in attempts[0]["error_message"]
    assert attempts[1]["cost_usd"] == pytest.approx((10 * 0.1 + 20 * 0.2) / 1e6)
    failed = store.decision("call-2")
    assert failed is not None and (failed["status"], failed["error_code"]) == ("failure", "upstream_rejected")
    refused = store.decision("call-3")
    assert refused is not None and (refused["status"], refused["error_code"]) == ("rejected", "context_length_exceeded")
    snapshot = json.loads((tmp_path / "data" / "artifacts" / "winrate-current.json").read_text())
    assert "cells" in snapshot, "the aggregator ran in the plugin's process"
    store.close()


def test_feedback_for_a_plugin_request_is_written_by_the_cli(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_serve(AutorouteCallback(config, sink=StoreSink(learning=False))))
    assert main(["feedback", "call-1", "--score", "0.9", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "recorded"
    assert main(["feedback", "call-1", "--thumbs", "down", "--task", "chat", "--config", str(config)]) == 0
    store = open_store(str(tmp_path / "data" / "autoroute.db"))
    rows = store.feedback("call-1")
    assert [(r["score"], r["label"], r["source"], r["extra"]) for r in rows] == [
        (0.9, None, "cli", {}), (0.0, "thumbs_down", "cli", {"task": "chat"})]  # fmt: skip
    store.close()
    assert main(["feedback", "nobody", "--score", "1", "--config", str(config)]) == 1
    assert "no request with id 'nobody'" in capsys.readouterr().err
    assert main(["feedback", "call-1", "--score", "2", "--config", str(config)]) == 1
    assert main(["feedback", "call-1", "--task", "astrology", "--config", str(config)]) == 1
    assert main(["feedback", "call-1", "--config", str(config)]) == 1


def test_a_gateway_on_the_same_store_accepts_feedback_for_plugin_requests(config: Path, tmp_path: Path) -> None:
    asyncio.run(_serve(AutorouteCallback(config, sink=StoreSink(learning=False))))
    app = create_app(AppSettings(config, watch_config=False))

    async def post() -> tuple[int, list[float]]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                answer = await client.post("/v1/feedback", json={"request_id": "call-1", "score": 1})
            return answer.status_code, [row["score"] for row in app.state.services.store.feedback("call-1")]

    assert asyncio.run(post()) == (200, [1.0])
