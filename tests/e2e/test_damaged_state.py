"""Damaged state never stops serving: corrupt artifacts at start are moved aside and reported; a store that cannot be
opened leaves chats served and readiness not_ready, unless `storage.required` makes the gateway refuse to start."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from router_plugins.classify.static_embedding import TABLE_FILE
from router_plugins.classify.text_model import ARTIFACT_FILE

from .conftest import REPO, Upstream, _env, _stop, free_port, registry_text

CHAT = [{"role": "user", "content": "Write a Python function that reverses a linked list."}]


class Started:
    def __init__(self, config: Path, data_dir: Path, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.config, self.data_dir, self.proc, self.log = config, data_dir, proc, log
        self.url = f"http://127.0.0.1:{port}"

    def alive(self, timeout: float = 120.0) -> bool:
        """Waits until the gateway has started (readiness may say not_ready, but no longer `starting`); False when it
        exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/health/readiness", timeout=2).json()["status"] != "starting":
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the gateway did not come up:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[object]:
    started: list[Started] = []

    def start(config_text: str, prepare: object = None) -> Started:
        config, data_dir, log, port = tmp_path / "config.yaml", tmp_path / "data", tmp_path / "gateway.log", free_port()
        config.write_text(config_text)
        if callable(prepare):
            prepare(data_dir)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port),
                 "--data-dir", str(data_dir)],
                cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        gateway = Started(config, data_dir, port, proc, log)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        _stop(gateway.proc)


def test_corrupt_artifacts_at_start_are_moved_aside_and_the_gateway_serves(
    launch: object, upstream: Upstream, artifacts_dir: Path
) -> None:
    def damage(data_dir: Path) -> None:
        artifacts = data_dir / "artifacts"
        shutil.copytree(artifacts_dir, artifacts)
        table = (artifacts / TABLE_FILE).read_bytes()
        (artifacts / TABLE_FILE).write_bytes(table[: len(table) // 3])  # a copy cut short
        (artifacts / "learned-20260101000000-n500.npz").write_bytes(b"PK\x03\x04" + b"\0" * 64)
        (artifacts / "learned-current.json").write_text(json.dumps({"artifact": "learned-20260101000000-n500.npz",
                                                                    "version": "20260101000000-n500"}))  # fmt: skip
        (artifacts / "thresholds-current.json").write_text('{"artifact": "thresh')  # garbled pointer
        (artifacts / ARTIFACT_FILE).write_bytes(b"not a text model")

    gateway = launch(registry_text(upstream), damage)  # type: ignore[operator]
    assert gateway.alive(), gateway.log.read_text()[-3000:]
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.with_raw_response.create(model="auto", messages=CHAT)
    assert reply.http_response.status_code == 200
    assert not reply.headers["x-autoroute-router"].startswith("learned@"), "the damaged learned router is not used"

    expected = {TABLE_FILE, "learned-20260101000000-n500.npz", "thresholds-current.json", ARTIFACT_FILE}
    deadline = time.monotonic() + 30
    while True:
        readiness = httpx.get(f"{gateway.url}/health/readiness", timeout=5)
        reported = readiness.json()["checks"].get("artifacts", "")
        if all(name in reported for name in expected) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert readiness.status_code == 200, "serving on the fallbacks is ready, not broken"
    assert all(name in reported for name in expected), reported
    artifacts = gateway.data_dir / "artifacts"
    assert {p.name.removesuffix(".corrupt") for p in artifacts.glob("*.corrupt")} == expected
    assert (artifacts / "learned-20260101000000-n500.npz.corrupt").read_bytes().startswith(b"PK")


def test_a_store_that_cannot_be_opened_leaves_chats_served_and_readiness_not_ready(
    launch: object, upstream: Upstream
) -> None:
    def block_the_store(data_dir: Path) -> None:
        (data_dir / "autoroute.db").mkdir(parents=True)  # a directory where the database file should be

    gateway = launch(registry_text(upstream), block_the_store)  # type: ignore[operator]
    assert gateway.alive(), gateway.log.read_text()[-3000:]
    readiness = httpx.get(f"{gateway.url}/health/readiness", timeout=5)
    assert readiness.status_code == 503 and readiness.json()["status"] == "not_ready"
    assert "cannot be opened" in readiness.json()["checks"]["store"]
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.with_raw_response.create(model="auto", messages=CHAT)
    assert reply.http_response.status_code == 200, "chats are still served"
    feedback = httpx.post(f"{gateway.url}/v1/feedback", json={"request_id": reply.headers["x-autoroute-request-id"],
                                                              "score": 1.0}, timeout=5)  # fmt: skip
    assert feedback.status_code == 503 and feedback.json()["error"]["code"] == "store_unavailable", "never a false 200"


def test_storage_required_refuses_to_start_with_a_clear_message(launch: object, upstream: Upstream) -> None:
    text = registry_text(upstream).replace("\nstorage:\n", "\nstorage:\n  required: true\n")
    assert "required: true" in text
    gateway = launch(text, lambda d: (d / "autoroute.db").mkdir(parents=True))  # type: ignore[operator]
    assert not gateway.alive(), "it must not serve"
    assert gateway.proc.wait(timeout=30) != 0
    log = gateway.log.read_text()
    assert "cannot be opened" in log and "storage.required is true" in log
