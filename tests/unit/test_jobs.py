"""Background jobs and reloads: named, stoppable, reporting their state; a rebuild never blocks the event loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from proxy.jobs import Job, periodic
from proxy.runtime import Runtime, RuntimeHolder, build_runtime
from router_plugins.registry import Registry, parse_registry

CONFIG = "models:\n  - name: m\n    litellm_params: {model: openai/m}\n"


def test_a_job_reports_its_state_from_start_to_stop() -> None:
    async def run() -> list[str]:
        started = asyncio.Event()

        async def forever() -> None:
            started.set()
            await asyncio.sleep(3600)

        job = Job("forever", forever)
        states = [job.state]
        job.start()
        await started.wait()
        states.append(job.state)
        await job.stop()
        states.append(job.state)
        return states

    assert asyncio.run(run()) == ["idle", "running", "stopped"]


def test_a_failing_job_is_reported_and_a_periodic_one_goes_on() -> None:
    async def run() -> tuple[str, int]:
        async def broken() -> None:
            raise ValueError("bad file")

        job = Job("broken", broken)
        job.start()
        await asyncio.sleep(0.05)
        calls = 0

        async def flaky() -> None:
            nonlocal calls
            calls += 1
            raise OSError("disk")

        ticker = Job("ticker", periodic(flaky, lambda: 0.01, "flaky step", at_once=True))
        ticker.start()
        await asyncio.sleep(0.2)
        await ticker.stop()
        return job.state, calls

    state, calls = asyncio.run(run())
    assert state == "failed: ValueError"
    assert calls >= 5, "every failed step is logged and the next one runs"


def test_a_config_reload_runs_off_the_event_loop(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    built: list[str] = []

    def slow_build(registry: Registry) -> Runtime:
        time.sleep(0.6)  # a rebuild that loads models from disk
        built.append(registry.version)
        return build_runtime(registry)

    holder = RuntimeHolder(config, build_runtime(parse_registry(CONFIG)), slow_build)

    async def run() -> float:
        watcher = Job("config-reload", lambda: holder.watch(interval_s=0.05))
        watcher.start()
        config.write_text(CONFIG + "  - name: n\n    litellm_params: {model: openai/n}\n")
        longest, last = 0.0, time.perf_counter()
        deadline = time.monotonic() + 10
        while not built and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now
        await watcher.stop()
        return longest

    longest = asyncio.run(run())
    assert built and [m.name for m in holder.current.registry.models] == ["m", "n"]
    assert longest < 0.3, f"the event loop stalled {longest:.2f} s during a 0.6 s rebuild"
