"""No acknowledged feedback is lost: 20 times, clients post feedback concurrently and the gateway is killed with
SIGKILL in the middle, then restarted on the same data directory. Every post answered 200 must be in the store."""

from __future__ import annotations

import random
import shutil
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai

from .conftest import REPO, Upstream, _env, free_port, registry_text
from .launcher import Launcher

CYCLES = 20
CLIENTS = 4
ACKED_BEFORE_KILL = (8, 20)
"""Posts acknowledged in a cycle before its kill, drawn per cycle: the kill lands mid-traffic however fast or loaded
the machine is."""
KILL_JITTER_S = (0.0, 0.1)
CYCLE_CAP_S = 20.0
PROMPTS = ["Write a Python function that merges two sorted lists.", "What is 17 * 23?", "Say hello to my friend."]


def _post_until_killed(url: str, ids: list[str], tag: str, acked: list[str], outcomes: Counter[str]) -> None:
    """Post feedback until the gateway is gone; `acked` gets the comment of every post answered 200."""
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for i in range(100_000):
            comment = f"{tag}-{i}"
            try:
                response = client.post("/v1/feedback", json={"request_id": ids[i % len(ids)], "score": 0.5,
                                                              "comment": comment})  # fmt: skip
            except httpx.TransportError as exc:
                outcomes[type(exc).__name__] += 1
                return
            outcomes[str(response.status_code)] += 1
            if response.status_code == 200:
                acked.append(comment)


def test_acknowledged_feedback_survives_kill_9(tmp_path: Path, upstream: Upstream, artifacts_dir: Path) -> None:
    started = time.monotonic()
    config = tmp_path / "config.yaml"
    config.write_text(registry_text(upstream))
    data_dir = tmp_path / "data"
    shutil.copytree(artifacts_dir, data_dir / "artifacts")
    argv = ["serve", "--config", str(config), "--data-dir", str(data_dir), "--no-reload", "--log-level", "warning"]
    launcher = Launcher(REPO, _env(), tmp_path / "gateway.log")
    rng = random.Random(12)
    acked: list[str] = []
    outcomes: Counter[str] = Counter()
    exit_codes = []
    try:
        gateway = launcher.start(argv, free_port())
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused")
        ids = [
            client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": prompt}]
            ).headers["x-autoroute-request-id"]
            for prompt in PROMPTS
        ]
        client.close()
        db = data_dir / "autoroute.db"
        deadline = time.monotonic() + 10
        while _count(db, "SELECT count(*) FROM routing_decisions") < len(ids):  # decisions are written off the path
            assert time.monotonic() < deadline, "the decisions were not written"
            time.sleep(0.05)
        for cycle in range(CYCLES):
            if cycle:
                gateway = launcher.start(argv, free_port())
            threads = [
                threading.Thread(target=_post_until_killed, args=(gateway.url, ids, f"{cycle}.{n}", acked, outcomes))
                for n in range(CLIENTS)
            ]
            before, wanted = len(acked), rng.randint(*ACKED_BEFORE_KILL)
            for thread in threads:
                thread.start()
            cap = time.monotonic() + CYCLE_CAP_S
            while len(acked) - before < wanted and time.monotonic() < cap:
                time.sleep(0.005)
            time.sleep(rng.uniform(*KILL_JITTER_S))
            exit_codes.append(launcher.kill(gateway))
            for thread in threads:
                thread.join(timeout=15)
                assert not thread.is_alive()
    finally:
        launcher.close()

    with sqlite3.connect(data_dir / "autoroute.db") as conn:  # read-write: recovers the WAL the last kill left
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {row[0] for row in conn.execute("SELECT comment FROM feedback")}
    conn.close()
    missing = [comment for comment in acked if comment not in stored]
    elapsed = time.monotonic() - started
    print(f"{len(acked)} posts acknowledged over {CYCLES} kills, {len(missing)} missing; {dict(outcomes)}; "
          f"{elapsed:.1f} s")  # fmt: skip
    assert exit_codes == [-9] * CYCLES
    assert len(acked) >= CYCLES * ACKED_BEFORE_KILL[0], f"too few posts to say anything: {dict(outcomes)}"
    assert set(outcomes) <= {"200", "ReadError", "RemoteProtocolError", "ConnectError", "WriteError"}, outcomes
    assert missing == [], f"{len(missing)} of {len(acked)} acknowledged posts are not stored"


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()
