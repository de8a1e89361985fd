"""While the gateway starts it already listens: liveness 200, readiness and the API a 503 `starting`, until the config,
store and router are ready."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import REPO, STARTUP_TIMEOUT_S, Upstream, _env, _stop, free_port, registry_text


def _spawn(config: Path, data_dir: Path, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port),
             "--data-dir", str(data_dir)],
            cwd=REPO, env=_env({"E2E_UPSTREAM_KEY": "fake-secret"}), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return f"http://127.0.0.1:{port}", proc


def test_the_gateway_answers_starting_until_it_is_ready(tmp_path: Path, upstream: Upstream) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(registry_text(upstream))
    url, proc = _spawn(config, tmp_path / "data", tmp_path / "gateway.log")
    starting: list[tuple[int, int, dict]] = []
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
            try:
                readiness = httpx.get(f"{url}/health/readiness", timeout=2)
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            if readiness.status_code == 200:
                break
            liveness = httpx.get(f"{url}/health/liveness", timeout=2).status_code
            chat = httpx.post(f"{url}/v1/chat/completions", json={"model": "auto", "messages": []}, timeout=2)
            starting.append((liveness, chat.status_code, readiness.json() | {"chat": chat.json()}))
            time.sleep(0.05)
        else:
            raise AssertionError("never ready")
    finally:
        _stop(proc)

    assert starting, "the listener opened only once the gateway was ready"
    liveness, chat_status, body = starting[0]
    assert (liveness, chat_status, body["status"]) == (200, 503, "starting")
    assert body["chat"]["error"]["code"] == "starting"
