"""Shutdown without loss, config edits while serving, and a failing store that never fails a chat."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from proxy.app import AppSettings, create_app
from router_plugins.classify import StaticEmbedder
from router_plugins.classify.static_embedding import TABLE_FILE

from .conftest import Gateway, Upstream, registry_text

CODING_PROMPT = [{"role": "user", "content": "Write a Python function that merges two sorted lists."}]


def test_clean_shutdown_writes_everything_acknowledged(start_gateway: Callable[..., Gateway], upstream: Upstream) -> None:
    # A writer that would not flush for a minute: only the shutdown drain can have written these rows.
    text = registry_text(upstream).replace("flush_interval_ms: 50", "flush_interval_ms: 60000\n  batch_size: 100000")
    gateway = start_gateway(text)

    async def send(n: int) -> list[str]:
        client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused")
        raws = await asyncio.gather(
            *(client.chat.completions.with_raw_response.create(model="auto", messages=CODING_PROMPT) for _ in range(n))
        )
        await client.close()
        return [r.headers["x-autoroute-request-id"] for r in raws]

    ids = asyncio.run(send(120))
    assert gateway.rows("SELECT count(*) AS n FROM routing_decisions")[0]["n"] == 0
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so the exit status says what ended it.
    assert gateway.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in gateway.log.read_text()
    decisions = {r["request_id"] for r in gateway.rows("SELECT request_id FROM routing_decisions")}
    performance = gateway.rows("SELECT count(*) AS n FROM model_performance")[0]["n"]
    assert decisions == set(ids)
    assert performance == len(ids)


def _routes_coding_to(gateway: Gateway, model: str, timeout: float = 10.0) -> bool:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.chat.completions.create(model="auto", messages=CODING_PROMPT).model == model:
            return True
        time.sleep(0.2)
    return False


def test_config_edits_are_picked_up_and_a_bad_edit_keeps_the_last_good(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(registry_text(upstream))
    assert _routes_coding_to(gateway, "coder", timeout=1)
    good = gateway.config.read_text()

    gateway.config.write_text(good.replace("{model: coder, priority: 1, is_specialized: true}", "{model: coder, enabled: false}"))
    assert _routes_coding_to(gateway, "frontier")

    gateway.config.write_text(good + "\nunexpected_section: {}\n")
    deadline = time.monotonic() + 10
    while "unexpected_section" not in httpx.get(f"{gateway.url}/health/readiness").json()["checks"]["config"]:
        assert time.monotonic() < deadline, "the bad edit was not reported"
        time.sleep(0.2)
    assert _routes_coding_to(gateway, "frontier", timeout=1), "the last good config keeps serving"
    bad_line = len(good.splitlines()) + 2
    assert f"unknown key 'unexpected_section' in the top level at {gateway.config}:{bad_line}" in gateway.log.read_text()

    gateway.config.write_text(good)
    assert _routes_coding_to(gateway, "coder")
    assert httpx.get(f"{gateway.url}/health/readiness").json()["checks"]["config"] == "ok"
    # The rules in force are recorded once per registry version: the edit that disabled coder, and the original.
    rows = gateway.rows("SELECT version, task, model, adjustment FROM model_routing_rules WHERE task = 'coding'")
    by_version: dict[str, dict[str, bool]] = {}
    for row in rows:
        by_version.setdefault(row["version"], {})[row["model"]] = json.loads(row["adjustment"]).get("enabled", True)
    assert len(by_version) == 2 and all("frontier" in models for models in by_version.values()), by_version
    assert sorted("coder" in models for models in by_version.values()) == [False, True], "the disabled coder is left out"


def test_a_failing_store_never_fails_a_chat(tmp_path: Path, upstream: Upstream, artifacts_dir: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(registry_text(upstream))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "artifacts").symlink_to(artifacts_dir)
    app = create_app(AppSettings(config, tmp_path / "data", watch_config=False))

    async def run() -> tuple[list[str], int, int]:
        async with app.router.lifespan_context(app):
            services = app.state.services

            def broken(records: object) -> None:
                raise OSError("disk on fire")

            services.store.write_batch = broken
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
            client = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key="unused", http_client=http)
            results = await asyncio.gather(
                *(client.chat.completions.create(model="auto", messages=CODING_PROMPT) for _ in range(5))
            )
            await services.recorder.flush()
            await http.aclose()
            return [r.model for r in results], services.recorder.stats.write_errors, services.recorder.stats.lost

    models, write_errors, lost = asyncio.run(run())
    assert models == ["coder"] * 5
    assert write_errors >= 1 and lost == 10, "the failure is counted, not hidden"


def test_first_start_serves_while_the_embedding_table_is_distilled(
    tmp_path: Path, upstream: Upstream, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    # The text model off: this is about the static layer, which serves registries no text model was fitted for.
    config.write_text(registry_text(upstream).replace("  classifier:\n", "  classifier:\n    text_model: {enabled: false}\n"))
    release = threading.Event()
    real_load = StaticEmbedder.load

    def slow_build(data_dir: Path) -> StaticEmbedder:
        assert release.wait(30), "the test never released the build"
        return real_load(artifacts_dir / TABLE_FILE)

    monkeypatch.setattr(StaticEmbedder, "load_or_build", staticmethod(slow_build))
    app = create_app(AppSettings(config, tmp_path / "data", watch_config=False))
    vague = [{"role": "user", "content": "Mount Everest height compared to K2?"}]

    async def layers(client: openai.AsyncOpenAI, http: httpx.AsyncClient) -> tuple[str, list[str]]:
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=vague)
        await app.state.services.recorder.flush()
        decision = app.state.services.store.decision(raw.headers["x-autoroute-request-id"])
        return (await http.get("/health/readiness")).json()["checks"]["embeddings"], [
            a["layer"] for a in decision["layer_attempts"]
        ]

    async def run() -> tuple[tuple[str, list[str]], tuple[str, list[str]]]:
        async with app.router.lifespan_context(app):
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
            client = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key="unused", http_client=http)
            while_building = await layers(client, http)
            release.set()
            for _ in range(300):
                if app.state.services.embeddings == "ok":
                    break
                await asyncio.sleep(0.05)
            after = await layers(client, http)
            await http.aclose()
            return while_building, after

    while_building, after = asyncio.run(run())
    assert while_building == ("building", ["keywords", "fallback"])
    assert after[0] == "ok" and after[1][:2] == ["keywords", "static_embedding"]


def test_a_trained_artifact_changes_routing_while_serving(start_gateway: Callable[..., Gateway], upstream: Upstream) -> None:
    gateway = start_gateway(registry_text(upstream))
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    math = [{"role": "user", "content": "Solve for x: 4x + 9 = 37. How many apples is that?"}]

    before = client.chat.completions.with_raw_response.create(model="auto", messages=math)
    assert before.headers["x-autoroute-model"] == "mathematician"
    (decision,) = gateway.wait_rows(
        "SELECT selection_reason FROM routing_decisions WHERE request_id = ?", (before.headers["x-autoroute-request-id"],)
    )
    assert "no learned-router artifact yet" in decision["selection_reason"]

    # The recorded outcomes say the specialist fails these and frontier solves them.
    fixture = Path(__file__).parent.parent / "fixtures" / "outcomes" / "e2e" / "train.jsonl"

    def train(*extra: str) -> dict:
        trained = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "train", "--config", str(gateway.config), "--data", str(fixture),
             "--data-dir", str(gateway.data_dir), "--folds", "0", *extra],
            capture_output=True, text=True, env=gateway.env, timeout=300,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr
        return json.loads(trained.stdout)

    # Offline outcomes alone are no evidence about live traffic: without logged decisions the gate keeps the champion.
    refused = train()
    assert refused["prompts"] == 84 and refused["gate"]["promoted"] is False
    assert not (gateway.data_dir / "artifacts" / "learned-current.json").exists()
    forced = train("--force")  # the operator's explicit choice, recorded as such
    assert forced["gate"]["promoted"] is True
    assert gateway.rows("SELECT kind FROM learning_events ORDER BY created_at")[-1]["kind"] == "forced-promotion"

    deadline = time.monotonic() + 15
    while True:
        after = client.chat.completions.with_raw_response.create(model="auto", messages=math)
        if after.headers["x-autoroute-router"].startswith("learned@") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert after.headers["x-autoroute-router"].startswith("learned@")
    assert after.headers["x-autoroute-model"] == "frontier"


def test_a_first_start_builds_the_table_then_fits_layers_3_and_4_and_uses_them(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    text = registry_text(upstream)
    start, end = text.index("  classifier:\n"), text.index("    torch_head: {enabled: false}\n")
    # Layers 3-4 inline on this CPU (a budget), and no text model: the vague prompts below reach them.
    text = (text[:start] + "  classifier:\n    text_model: {enabled: false}\n    transformer_budget_ms: 2000\n"
            + text[end + len("    torch_head: {enabled: false}\n") :])  # fmt: skip
    # A fresh data directory, as a new user has: the table build and the model fitting run one after the other
    # in the background (transformers' lazy imports are not safe from two threads at once).
    gateway = start_gateway(text, with_table=False)
    deadline = time.monotonic() + 300
    while (checks := httpx.get(f"{gateway.url}/health/readiness").json()["checks"])["task_model"] != "ok":
        assert checks["task_model"] == "fitting" and time.monotonic() < deadline, checks
        assert not checks["embeddings"].startswith("failed"), checks
        time.sleep(0.5)
    assert checks["embeddings"] == "ok"
    assert (gateway.data_dir / "artifacts" / "task-model-v1.npz").exists()

    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    # Vague prompts, with no keyword of any task: the cheap layers are unsure, the transformer layers are asked.
    seen = []
    for prompt in ("my cat keeps staring at the wall", "the vibes in this room are off today", "ugh mondays"):
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": prompt}])
        (decision,) = gateway.wait_rows(
            "SELECT layer_attempts FROM routing_decisions WHERE request_id = ?", (raw.headers["x-autoroute-request-id"],)
        )
        seen.append([a["layer"] for a in json.loads(decision["layer_attempts"])])
    assert any(layers[:3] == ["keywords", "static_embedding", "transformer_knn"] for layers in seen), seen

    # The registry's tasks change (an edited description): layers 3-4 are refitted while serving and swapped in.
    model_file = gateway.data_dir / "artifacts" / "task-model-v1.npz"
    before = np.load(model_file)["tasks_fingerprint"].item()
    tasks = resources.files("router_plugins").joinpath("data/default_tasks.yaml").read_text(encoding="utf-8")
    edited = tasks.replace("description: Write new code,", "description: Write brand new code,", 1)
    assert edited != tasks
    gateway.config.write_text(text + "\ntasks:\n" + edited.split("\ntasks:\n", 1)[1])
    deadline = time.monotonic() + 120
    while np.load(model_file)["tasks_fingerprint"].item() == before:
        assert time.monotonic() < deadline, "the task model was not refitted after the registry's tasks changed"
        time.sleep(1)

    # Feedback naming the right task of 20 requests refits them in too: the reference set now holds them.
    ids = []
    for i in range(20):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": f"zorblax quibble number {i}"}]
        )
        ids.append(raw.headers["x-autoroute-request-id"])
    for request_id in ids:
        assert httpx.post(f"{gateway.base_url}/feedback", json={"request_id": request_id, "task": "math"}).status_code == 200
    deadline = time.monotonic() + 120
    while "math/feedback" not in json.loads(str(np.load(model_file)["meta"]))["counts"]:
        assert time.monotonic() < deadline, "feedback task labels were not used"
        time.sleep(1)
