"""What a follower worker does instead of the leader's once-only work: it waits for the leader's static table (or
builds it once it leads), and it never records the routing rules."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from proxy import gateway as gateway_module
from proxy.gateway import Gateway
from proxy.leadership import Election, FileLeadership
from proxy.settings import AppSettings
from router_plugins.classify.static_embedding import TABLE_FILE
from router_plugins.datadir import DataDir


def _follower(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Gateway, FileLeadership, list[str]]:
    monkeypatch.setattr(gateway_module, "FOLLOW_S", 0.01)
    calls: list[str] = []
    monkeypatch.setattr(gateway_module.StaticEmbedder, "load", staticmethod(lambda path: calls.append("load") or "t"))
    monkeypatch.setattr(gateway_module.StaticEmbedder, "load_or_build",
                        staticmethod(lambda data: calls.append("build") or "t"))  # fmt: skip
    gateway = Gateway(AppSettings(tmp_path / "config.yaml", tmp_path, workers=2))
    gateway.data = DataDir(tmp_path).ensure()
    leader = FileLeadership(gateway.data.leader_lock)
    assert leader.try_acquire()
    gateway.election = Election(FileLeadership(gateway.data.leader_lock), retry_s=0.01)
    return gateway, leader, calls


def test_a_follower_loads_the_table_the_leader_wrote_even_before_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, leader, calls = _follower(tmp_path, monkeypatch)
    gateway.data.path(TABLE_FILE).write_bytes(b"written by the leader")
    assert asyncio.run(gateway._static_table()) == "t"
    assert calls == ["load"]
    leader.release()


def test_a_follower_builds_the_table_once_it_takes_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, leader, calls = _follower(tmp_path, monkeypatch)

    async def run() -> Any:
        waiting = asyncio.create_task(gateway._static_table())
        election = asyncio.create_task(gateway.election.run())
        await asyncio.sleep(0.1)
        assert not waiting.done(), "no table yet, and the leader is alive: the follower waits"
        leader.release()  # the leader died before writing it
        table = await asyncio.wait_for(waiting, 5)
        election.cancel()
        await asyncio.gather(election, return_exceptions=True)
        return table

    assert asyncio.run(run()) == "t"
    assert calls == ["build"]
    gateway.election.release()


def test_a_follower_records_no_routing_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, leader, _ = _follower(tmp_path, monkeypatch)
    written: list[str] = []

    class Store:
        def save_routing_rules(self, version: str, rows: object) -> None:
            written.append(version)

    gateway.store = Store()  # type: ignore[assignment]
    registry: Any = type("R", (), {"version": "v1", "routing_rules": (), "models": ()})()
    monkeypatch.setattr(gateway_module, "routing_rule_rows", lambda registry: [])
    gateway._record_rules(registry)
    assert written == []
    leader.release()
    assert asyncio.run(gateway.election.attempt())
    gateway._record_rules(registry)
    assert written == ["v1"]
    gateway.election.release()
