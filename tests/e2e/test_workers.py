"""`autoroute serve --workers 2`: both workers serve the port, exactly one leads the once-only jobs, `/metrics` on
either counts both, a SIGKILLed leader is replaced as leader within seconds and restarted by the supervisor while the
other worker answers every request, and SIGTERM to the supervisor drains both: exit 0, every acknowledged row written.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx

from .conftest import UPSTREAM_KEY, Gateway, Upstream, registry_text

TAKEOVER_S = 10.0
"""The follower retries every 2 s; the rest is slack for a loaded machine."""
RESTART_S = 120.0
BOTH_SERVE_S = 120.0
PROMPT = "Write a Python function that merges two sorted lists."


def _chat(gateway: Gateway, served: dict[str, list[str]]) -> httpx.Response:
    """One chat on a new connection (the kernel hands each connection to one worker); 200s are kept by worker."""
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=30)
    if response.status_code == 200:
        served.setdefault(response.headers["x-autoroute-worker"], []).append(response.headers["x-autoroute-request-id"])
    return response


def _until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def _workers_seen(gateway: Gateway, count: int) -> dict[int, dict[str, Any]]:
    """Readiness from `count` distinct workers (each on a new connection): pid -> its `worker` entry."""
    seen: dict[int, dict[str, Any]] = {}

    def poll() -> bool:
        response = httpx.get(f"{gateway.url}/health/readiness", timeout=10)
        if response.status_code == 200:
            worker = response.json()["worker"]
            seen[worker["pid"]] = worker
        return len(seen) >= count

    _until(f"readiness from {count} workers", poll, BOTH_SERVE_S, every=0.05)
    return seen


def _metric(text: str, name: str) -> dict[str, float]:
    return {labels: float(value) for labels, value in re.findall(rf"^{name}(\{{.*?\}})? (\S+)$", text, re.M)}


def test_two_workers_one_leader_a_takeover_a_restart_and_a_drain(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(registry_text(upstream), env={"E2E_UPSTREAM_KEY": UPSTREAM_KEY}, args=("--workers", "2"))
    served: dict[str, list[str]] = {}
    _until("chats answered by both workers", lambda: _chat(gateway, served).status_code == 200 and len(served) == 2,
           BOTH_SERVE_S, every=0.05)  # fmt: skip
    assert str(gateway.proc.pid) not in served, "the supervisor serves nothing itself"

    workers = _workers_seen(gateway, 2)
    leaders = [pid for pid, w in workers.items() if w["leader"]]
    assert len(leaders) == 1, workers
    (leader,) = leaders
    assert all(w["leader_pid"] == leader for w in workers.values()), "both name the same leader"

    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert _metric(metrics, "autoroute_worker_leader") == {f'{{pid="{pid}"}}': float(pid == leader) for pid in workers}
    chats = sum(len(ids) for ids in served.values())
    assert sum(_metric(metrics, "autoroute_requests_total").values()) == chats, "either worker counts both"

    feedback = []
    for ids in served.values():  # acknowledged feedback on each worker's requests, whichever worker takes it
        response = httpx.post(f"{gateway.base_url}/feedback", json={"request_id": ids[0], "score": 1.0}, timeout=30)
        assert response.status_code == 200, response.text
        feedback.append(ids[0])

    os.kill(leader, signal.SIGKILL)
    killed = time.monotonic()
    (survivor,) = set(workers) - {leader}
    statuses = []

    def survivor_leads() -> bool:
        statuses.append(_chat(gateway, served).status_code)
        worker = httpx.get(f"{gateway.url}/health/readiness", timeout=10).json()["worker"]
        return bool(worker["pid"] == survivor and worker["leader"])

    _until("the surviving worker takes the leadership", survivor_leads, TAKEOVER_S)
    assert time.monotonic() - killed < TAKEOVER_S

    def restarted() -> bool:
        statuses.append(_chat(gateway, served).status_code)
        return bool(set(map(int, served)) - {leader, survivor})

    _until("the supervisor restarts the killed worker", restarted, RESTART_S, every=0.1)
    assert set(statuses) == {200}, "no request failed or met a starting worker meanwhile"
    (replacement,) = set(map(int, served)) - {leader, survivor}
    new = _workers_seen(gateway, 2)
    assert set(new) == {survivor, replacement} and [p for p, w in new.items() if w["leader"]] == [survivor]

    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(timeout=60) == 0
    log = gateway.log.read_text()
    assert f"worker 1 (pid {leader}) exited with status -9 unasked; restarting it" in log or (
        f"worker 0 (pid {leader}) exited with status -9 unasked; restarting it" in log
    )
    assert log.count("0 dropped, 0 lost") == 2, "the survivor and the replacement wrote everything"
    acknowledged = [i for ids in served.values() for i in ids]
    recorded = {r["request_id"] for r in gateway.rows("SELECT request_id FROM routing_decisions")}
    assert set(acknowledged) <= recorded
    scored = {r["request_id"] for r in gateway.rows("SELECT request_id FROM feedback")}
    assert set(feedback) <= scored
    assert len(gateway.rows("SELECT DISTINCT version FROM model_routing_rules")) == 1, "the leader recorded the rules"
