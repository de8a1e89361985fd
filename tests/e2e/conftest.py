"""End-to-end fixtures: the fake upstream and the gateway as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from router_plugins.classify.static_embedding import TABLE_FILE

HERE = Path(__file__).parent
REPO = HERE.parent.parent
STARTUP_TIMEOUT_S = 120.0
UPSTREAM_KEY = "fake-secret"

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e is an e2e test (a `pytestmark` in a conftest marks nothing): `-m "not e2e"` runs
    the unit tests alone, without starting a server."""
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{url} not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distilled static embedding table, built once (reused from .pytest_cache across local runs)."""
    cache = REPO / ".pytest_cache" / "autoroute-data"
    if not (cache / "artifacts" / TABLE_FILE).exists():
        subprocess.run(
            [sys.executable, "-m", "proxy.cli", "build-embeddings", "--data-dir", str(cache)],
            check=True, cwd=REPO, env=_env(), capture_output=True, timeout=600,
        )  # fmt: skip
    return cache / "artifacts"


@dataclass
class Upstream:
    url: str
    proc: subprocess.Popen[bytes]

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/_fake/requests").json()  # type: ignore[no-any-return]

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_fake/requests")


def start_server(command: list[str], log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """Run `autoroute COMMAND --port P` on a free port and wait for its /health; returns its URL and process."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", *command, "--port", str(port)],
            cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_ready(f"{url}/health", proc, log)
    return url, proc


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    url, proc = start_server(["fake-upstream"], tmp_path_factory.mktemp("upstream") / "upstream.log")
    yield Upstream(url, proc)
    _stop(proc)


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[bytes]
    config: Path
    data_dir: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{self.data_dir / 'autoroute.db'}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def wait_rows(self, sql: str, params: tuple[Any, ...] = (), count: int = 1, timeout: float = 10.0) -> list[sqlite3.Row]:
        """Rows are written off the request path; poll until `count` of them are there."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(sql, params)
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def stop(self) -> int:
        return _stop(self.proc)


def registry_text(upstream: Upstream, source: Path = HERE / "registry.yaml") -> str:
    return source.read_text().replace("{UPSTREAM}", f"{upstream.url}/v1")


@pytest.fixture(scope="session")
def start_gateway(
    tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(
        config_text: str, env: dict[str, str] | None = None, args: tuple[str, ...] = (), with_table: bool = True
    ) -> Gateway:
        workdir = tmp_path_factory.mktemp("gateway")
        config = workdir / "config.yaml"
        config.write_text(config_text)
        data_dir = workdir / "data"
        if with_table:
            shutil.copytree(artifacts_dir, data_dir / "artifacts")
        port = free_port()
        log = workdir / "gateway.log"
        full_env = _env(env)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port),
                 "--data-dir", str(data_dir), *args],
                cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        gateway = Gateway(f"http://127.0.0.1:{port}", proc, config, data_dir, log, full_env)
        _wait_ready(f"{gateway.url}/health/readiness", proc, log)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    """The shared gateway over the e2e registry, with no client auth."""
    return start_gateway(registry_text(upstream), env={"E2E_UPSTREAM_KEY": UPSTREAM_KEY})
