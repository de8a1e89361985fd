"""Store: several gateway processes on one database, a database locked by someone else, a data directory deleted
under a running gateway. Chats never wait for the store; readiness tells the truth within about a second.
Every request that passes auth leaves a decision row, refused ones included.

(Acknowledged feedback surviving kill -9 is tests/e2e/test_feedback_durability.py.)"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import REPO, _env
from tests.e2e.conftest import registry_text as e2e_registry
from tests.e2e.launcher import Launcher

from .conftest import (
    Figures,
    Gateway,
    Upstream,
    chat_body,
    client,
    free_port,
    readiness,
    registry_text,
    wait_until,
)

PROCESSES = 4
CHATS_PER_PROCESS = 200
FEEDBACK_PER_PROCESS = 50


def _traffic(url: str, outcomes: Counter[str]) -> None:
    """CHATS_PER_PROCESS chats, and feedback on the first FEEDBACK_PER_PROCESS of them, one after the other."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for i in range(CHATS_PER_PROCESS):
            chat = http.post("/v1/chat/completions", json=chat_body("hello!"))
            outcomes[f"chat {chat.status_code}"] += 1
            if i < FEEDBACK_PER_PROCESS:
                request_id = chat.headers["x-autoroute-request-id"]
                feedback = http.post("/v1/feedback", json={"request_id": request_id, "score": 1.0})
                outcomes[f"feedback {feedback.status_code}"] += 1


def _counts(data_dir: Path) -> tuple[int, int, int]:
    """Decision, attempt and feedback rows in the store."""
    conn = sqlite3.connect(f"file:{data_dir / 'autoroute.db'}?mode=ro", uri=True, timeout=5)
    try:
        return tuple(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[return-value]
                     for table in ("routing_decisions", "model_performance", "feedback"))  # fmt: skip
    finally:
        conn.close()


def test_store_multi_process(tmp_path: Path, upstream: Upstream, artifacts_dir: Path, figures: Figures) -> None:
    """4 gateway processes on one data directory, each serving 200 chats and 50 feedback posts at once: every chat
    and post answered 200, every decision and feedback row written, no "database is locked", nothing dropped."""
    config = tmp_path / "config.yaml"
    config.write_text(registry_text(upstream))
    data_dir = tmp_path / "data"
    shutil.copytree(artifacts_dir, data_dir / "artifacts")
    argv = ["serve", "--config", str(config), "--data-dir", str(data_dir), "--no-reload", "--log-level", "warning"]
    log = tmp_path / "gateways.log"
    launcher = Launcher(REPO, _env(), log)
    try:
        children = [launcher.start(argv, free_port()) for _ in range(PROCESSES)]
        tallies: list[Counter[str]] = [Counter() for _ in children]
        threads = [threading.Thread(target=_traffic, args=(c.url, t)) for c, t in zip(children, tallies)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        elapsed = time.monotonic() - started
        chats, posts = PROCESSES * CHATS_PER_PROCESS, PROCESSES * FEEDBACK_PER_PROCESS
        written = wait_until(lambda: _counts(data_dir) == (chats, chats, posts) and _counts(data_dir), timeout=20)
        recorders = [httpx.get(f"{child.url}/health/readiness", timeout=10).json()["recorder"] for child in children]
    finally:
        launcher.close()
    outcomes = sum(tallies, Counter())
    assert outcomes == Counter({"chat 200": chats, "feedback 200": posts}), outcomes
    assert all(r["dropped"] == r["lost"] == 0 for r in recorders), recorders
    assert written == (chats, chats, posts), f"decisions, attempts, feedback: {_counts(data_dir)}"
    locked = log.read_text().count("database is locked")
    assert locked == 0
    figures.values.update(processes=PROCESSES, chats=chats, posts=posts, locked=locked, elapsed_s=elapsed)
    figures.summary = ("{processes} processes, {chats} chats + {posts} feedback in {elapsed_s:.1f} s: all rows "
                       "written, {locked} \"database is locked\"")  # fmt: skip


def test_store_locked_database(faults_gateway: Gateway, figures: Figures) -> None:
    """A database another process holds an exclusive lock on: readiness answers within about a second with 503
    (its probe would wait 5 s), chats are served as fast as ever, and their rows are written once the lock goes."""
    assert readiness(faults_gateway).status_code == 200
    client(faults_gateway).chat.completions.create(**chat_body("hello!"))  # a gateway's first chat is slower
    lock = sqlite3.connect(faults_gateway.data_dir / "autoroute.db", isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        locked = readiness(faults_gateway)
        answered_in = time.perf_counter() - started
        assert answered_in < 1.8 and locked.status_code == 503, answered_in
        assert "not answering" in locked.json()["checks"]["store"]
        started = time.perf_counter()
        raw = client(faults_gateway).chat.completions.with_raw_response.create(**chat_body("hello!"))
        chat_s = time.perf_counter() - started
        assert raw.http_response.status_code == 200 and chat_s < 2.5, f"{chat_s:.2f} s: held by the lock (5 s)?"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    request_id = raw.headers["x-autoroute-request-id"]
    assert faults_gateway.wait_rows("SELECT 1 FROM routing_decisions WHERE request_id = ?", (request_id,))
    deadline = time.monotonic() + 10
    while readiness(faults_gateway).status_code != 200:
        assert time.monotonic() < deadline, "ready again once the lock is gone"
        time.sleep(0.2)
    figures["readiness_s"], figures["chat_s"] = answered_in, chat_s
    figures.summary = "readiness 503 in {readiness_s:.2f} s; a chat served in {chat_s:.2f} s; its row written after"


def test_store_data_dir_deleted(faults_gateway: Gateway, figures: Figures) -> None:
    """The data directory deleted (moved away) under a running gateway: readiness says 503 at once, naming it; chats
    are still served; once it is back, readiness is 200 again."""
    data_dir = faults_gateway.data_dir
    assert readiness(faults_gateway).status_code == 200
    shutil.move(data_dir, data_dir.with_name("moved-away"))
    try:
        started = time.perf_counter()
        gone = readiness(faults_gateway)
        answered_in = time.perf_counter() - started
        assert gone.status_code == 503 and "is gone" in gone.json()["checks"]["store"]
        assert client(faults_gateway).chat.completions.create(**chat_body("hello!")).model == "steady"
    finally:
        shutil.move(data_dir.with_name("moved-away"), data_dir)
    assert wait_until(lambda: readiness(faults_gateway).status_code == 200, timeout=10)
    figures["readiness_s"] = answered_in
    figures.summary = "readiness 503 in {readiness_s:.2f} s; chats still served; 200 again once it is back"


def _decision_row(gateway: Gateway, request_id: str) -> dict:
    rows = gateway.wait_rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))
    assert len(rows) == 1, f"no decision row for {request_id}"
    return dict(rows[0])


def test_store_rejected_requests_recorded(start_gateway: Callable[..., Gateway], upstream: Upstream,
                                          figures: Figures) -> None:  # fmt: skip
    """Requests refused before any backend (a body that is not JSON, an unknown model, constraints no model meets)
    each leave a decision row with status `rejected`, the error code the client got and its message, and their
    receipt says so; a request refused by auth leaves none (a stranger cannot fill the store)."""
    text = e2e_registry(upstream).replace("storage:", "auth: {api_key_envs: [E2E_CLIENT_KEY]}\nstorage:", 1)
    gateway = start_gateway(text, env={"E2E_UPSTREAM_KEY": "fake-secret", "E2E_CLIENT_KEY": "right-key"})
    right = openai.OpenAI(base_url=gateway.base_url, api_key="right-key", max_retries=0)
    messages = [{"role": "user", "content": "Write a haiku about rivers."}]
    headers = {"authorization": "Bearer right-key", "content-type": "application/json"}

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.base_url, api_key="wrong", max_retries=0).chat.completions.create(
            model="auto",
            messages=messages,  # type: ignore[arg-type]
        )
    with pytest.raises(openai.NotFoundError) as missing:
        right.chat.completions.create(model="no-such-model", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as unmet:
        right.chat.completions.create(model="auto", messages=messages,  # type: ignore[arg-type]
                                      extra_body={"autoroute": {"max_cost_per_1k": 0.0000001}})  # fmt: skip
    bad_json = httpx.post(f"{gateway.base_url}/chat/completions", content=b'{"model": "auto", "messages": [',
                          headers=headers)  # fmt: skip
    served = right.chat.completions.with_raw_response.create(model="auto", messages=messages)  # type: ignore[arg-type]

    row = _decision_row(gateway, missing.value.response.headers["x-autoroute-request-id"])
    assert (row["status"], row["error_code"], row["requested_model"]) == ("rejected", "model_not_found",
                                                                          "no-such-model")  # fmt: skip
    assert row["selected_model"] is None and row["attempts"] == 0
    row = _decision_row(gateway, unmet.value.response.headers["x-autoroute-request-id"])
    assert (row["status"], row["error_code"]) == ("rejected", "no_model_satisfies_constraints")
    assert row["task"] and row["classification_layer"], "how it was classified is kept"
    receipt = httpx.get(f"{gateway.base_url}/decisions/{row['request_id']}", headers=headers).json()
    assert (receipt["status"], receipt["error"]["code"]) == ("rejected", "no_model_satisfies_constraints")
    assert bad_json.status_code == 400
    row = _decision_row(gateway, bad_json.headers["x-autoroute-request-id"])
    assert (row["status"], row["error_code"], row["task"]) == ("rejected", bad_json.json()["error"]["code"], None)
    _decision_row(gateway, served.headers["x-autoroute-request-id"])
    statuses = Counter(r["status"] for r in gateway.rows("SELECT status FROM routing_decisions"))
    assert statuses == {"rejected": 3, "success": 1}, "the request refused by auth left no row"
    figures["sent"], figures["rows"] = 5, sum(statuses.values())
    figures.summary = (
        "{sent} requests (1 wrong key, 3 refused, 1 served): {rows} decision rows, the 3 refusals "
        "with status rejected and their error code"
    )
