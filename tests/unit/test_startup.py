"""A start that fails after the server already listens ends the server with status 1 (it never serves half-built)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from proxy import app as app_module
from proxy.app import AppSettings, create_app
from proxy.server import serve


def test_a_failed_start_ends_the_server_with_status_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_start(self: object) -> None:
        raise RuntimeError("the store exploded")

    monkeypatch.setattr(app_module.Gateway, "start", broken_start)
    settings = AppSettings(tmp_path / "config.yaml", tmp_path / "data", answer_while_starting=True)

    statuses: list[int] = []
    app = create_app(settings)
    server = threading.Thread(
        target=lambda: statuses.append(serve(app, host="127.0.0.1", port=0, log_level="warning")), daemon=True
    )
    server.start()
    server.join(timeout=30)

    assert not server.is_alive(), "the server kept listening after its start failed"
    assert statuses == [1]
