"""Leader election for the once-only background jobs: one holder of the data directory's lock at a time, a takeover
as soon as the holder's process dies (SIGKILL included), and an `Election` that notices both."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from proxy.leadership import Election, FileLeadership, Solo
from proxy.learning import WINRATE_SNAPSHOT, LearningLoop
from router_plugins.registry import parse_registry
from router_plugins.routers.winrate import Cell, WinRateState

HOLD = """
import sys, time
from pathlib import Path
from proxy.leadership import FileLeadership
lock = FileLeadership(Path(sys.argv[1]))
print("held" if lock.try_acquire() else "refused", flush=True)
time.sleep(600)
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_one_holder_at_a_time_and_the_next_takes_over_on_release(tmp_path: Path) -> None:
    first, second = FileLeadership(tmp_path / "leader.lock"), FileLeadership(tmp_path / "leader.lock")

    assert first.try_acquire() and first.held
    assert first.try_acquire(), "asking again while holding it keeps it"
    assert not second.try_acquire() and not second.held
    assert second.holder() == os.getpid() == first.holder()

    first.release()
    first.release()  # idempotent
    assert not first.held
    assert second.try_acquire()
    assert not first.try_acquire()
    second.release()


def test_the_lock_is_free_as_soon_as_its_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    proc = _holder(path)
    try:
        follower = FileLeadership(path)
        assert not follower.try_acquire()
        assert follower.holder() == proc.pid, "the lock file names the leader"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        started = time.monotonic()
        assert follower.try_acquire(), "the kernel released the dead holder's lock"
        assert time.monotonic() - started < 0.1
        assert follower.holder() == os.getpid()
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_an_election_follows_then_takes_over_within_its_retry_interval(tmp_path: Path) -> None:
    async def run() -> tuple[bool, bool, list[str], float]:
        leader = FileLeadership(tmp_path / "leader.lock")
        assert leader.try_acquire()
        led: list[str] = []

        async def on_lead() -> None:
            led.append("rules recorded")

        election = Election(FileLeadership(tmp_path / "leader.lock"), on_lead=on_lead, retry_s=0.05)
        first = await election.attempt()
        job = asyncio.create_task(election.run())
        await asyncio.sleep(0.2)
        still_following = election.leading
        leader.release()
        released = time.monotonic()
        while not election.leading and time.monotonic() - released < 5:
            await asyncio.sleep(0.01)
        took = time.monotonic() - released
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        election.release()
        return first, still_following, led, took

    first, still_following, led, took = asyncio.run(run())
    assert not first and not still_following
    assert led == ["rules recorded"], "taking over calls on_lead once"
    assert took < 1.0


def test_one_worker_alone_always_leads() -> None:
    election = Election(Solo())
    assert asyncio.run(election.attempt()) and election.leading and election.leader_pid() == os.getpid()


def test_a_follower_takes_the_win_rates_the_leader_published(tmp_path: Path) -> None:
    registry = parse_registry("models:\n  - name: m\n    litellm_params: {model: openai/m}\n")
    published = WinRateState({("coding", "m"): Cell(3.0, 1.0, 4)}, "v-leader", 123.0)
    (tmp_path / WINRATE_SNAPSHOT).write_text(published.to_json())

    async def run() -> tuple[bool, bool, WinRateState]:
        follower = LearningLoop(lambda: registry, None, tmp_path, lambda: None)  # type: ignore[arg-type]
        return await follower.follow_snapshot(), await follower.follow_snapshot(), follower.current()

    taken, again, state = asyncio.run(run())
    assert taken and not again, "read once, then again only when the file changes"
    assert state.version == "v-leader" and state.cell("coding", "m").successes == 3.0
