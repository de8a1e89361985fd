"""The fault suite's fixtures: the e2e processes (imported from tests/e2e/conftest.py), the faults' own gateway, a
host no request may make the gateway reach, and `figures`, what each case measured.

Set AUTOROUTE_FIGURES=PATH to write the figures as JSON when the run ends; `python -m tests.faults.report` does that
and rewrites the table of docs/RELIABILITY.md from it.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.fake_upstream import REQUIRED_KEY
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Gateway, Upstream, free_port, registry_text

# The e2e fixtures, registered for tests/faults too (a conftest's fixtures reach only the tests below it).
artifacts_dir = e2e.artifacts_dir
upstream = e2e.upstream
start_gateway = e2e.start_gateway

HERE = Path(__file__).parent
FIGURES_ENV = "AUTOROUTE_FIGURES"
CLIENT_KEY = "faults-client-key-7731"
SECOND_CLIENT_KEY = REQUIRED_KEY
"""A client key that happens to be the key the fake upstream's `require-key` models want: were the gateway to forward
a client's key, those backends would accept it."""
CARELESS_KEY = "careless-key-0042"
"""Shaped like no known key: only the gateway's knowledge of its configured keys can redact it."""
GROUPS = ("auth", "ssrf", "upstream", "streaming", "store", "config", "contract", "load")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every fault case starts real processes: `-m "not e2e"` leaves them out, as it does tests/e2e."""
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


# -- the faults' gateway --------------------------------------------------------------------------------------------


def faults_registry(upstream: Upstream) -> str:
    """tests/faults/registry.yaml for this run: the fake upstream's address, and a port nothing listens on."""
    return registry_text(upstream, HERE / "registry.yaml").replace("{CLOSED}", str(free_port()))


@pytest.fixture(scope="session")
def faults_gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    """The gateway most cases share: client auth on, every misbehaving backend of the registry, no breaker."""
    keys = {
        "FAULTS_CLIENT_KEY": CLIENT_KEY,
        "FAULTS_CLIENT_KEY_2": SECOND_CLIENT_KEY,
        "FAULTS_CARELESS_KEY": CARELESS_KEY,
    }
    return start_gateway(faults_registry(upstream), env=keys)


def auth_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {CLIENT_KEY}"}


def client(gateway: Gateway, max_retries: int = 0, key: str = CLIENT_KEY) -> openai.OpenAI:
    """The real OpenAI client, as a user of the gateway has it."""
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=max_retries)


def chat_body(content: str, model: str = "auto", **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **params}


def calls_to(upstream: Upstream, upstream_model: str) -> int:
    return sum(1 for r in upstream.requests() if r["model"] == upstream_model)


def wait_until(condition: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy (returned) or `timeout` passes (its last value)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(step)
    return value


def readiness(gateway: Gateway, timeout: float = 10) -> httpx.Response:
    return httpx.get(f"{gateway.url}/health/readiness", timeout=timeout)


# -- a host outside the registry --------------------------------------------------------------------------------------


@dataclass
class Trap:
    """A TCP listener no registry entry names: every connection it accepts is a request the gateway should not have
    made."""

    port: int
    connections: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def trap() -> Iterator[Trap]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    found = Trap(listener.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            found.connections += 1
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield found
    stop.set()
    thread.join(timeout=2)
    listener.close()


# -- figures ---------------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one case measured: named values, and the sentence the reliability table shows (`{name}` placeholders,
    with format specs: "{calls} upstream calls for {requests} requests")."""

    summary: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, name: str, value: Any) -> None:
        self.values[name] = value

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def text(self) -> str:
        return self.summary.format(**self.values) if self.summary else ""


_measured: dict[str, dict[str, Any]] = {}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    measured = Figures()
    node = request.node
    doc = (getattr(node.function, "__doc__", None) or "").strip()
    _measured[node.nodeid] = {"test": node.name, "file": str(Path(str(node.fspath)).relative_to(HERE.parent.parent)),
                              "checks": " ".join(doc.split()), "figures": measured}  # fmt: skip
    return measured


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _measured.get(report.nodeid)
    if entry is None:
        return
    if report.when == "call":
        entry["duration_s"] = round(report.duration, 2)
    if report.failed or report.when == "call":
        entry["outcome"] = "failed" if report.failed else report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(FIGURES_ENV)
    if not path or not _measured:
        return
    cases = []
    for entry in _measured.values():
        measured: Figures = entry["figures"]
        group, _, case = entry["test"].removeprefix("test_").partition("_")
        cases.append({**entry, "group": group, "case": case, "figures": measured.values, "summary": measured.summary,
                      "figure": measured.text()})  # fmt: skip
    cases.sort(key=lambda c: GROUPS.index(c["group"]) if c["group"] in GROUPS else len(GROUPS))
    out = {
        "command": "python -m tests.faults.report",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },  # fmt: skip
        "cases": cases,
    }
    Path(path).write_text(json.dumps(out, indent=2, default=str) + "\n")
