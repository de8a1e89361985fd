"""The supervisor's parts that need no worker process: the port's sockets and the restart bound."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest

from proxy import workers
from proxy.settings import AppSettings
from proxy.workers import MAX_RESTARTS, Sockets, Supervisor, WorkerSpec


def _accept_all(listeners: dict[str, socket.socket]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for name, sock in listeners.items():
        sock.setblocking(False)
        while True:
            try:
                sock.accept()[0].close()
            except BlockingIOError:
                break
            counts[name] += 1
    return counts


@pytest.mark.skipif(not workers.REUSEPORT, reason="SO_REUSEPORT spreads connections on Linux only")
def test_each_worker_socket_gets_a_share_of_new_connections_and_leaves_with_its_worker() -> None:
    sockets = Sockets("127.0.0.1", 0, spread=True)
    first, second = sockets.for_worker(), sockets.for_worker()
    first.listen(128)
    second.listen(128)
    clients = [socket.create_connection(("127.0.0.1", sockets.port), timeout=5) for _ in range(64)]
    spread = _accept_all({"first": first, "second": second})
    first.close()  # its worker died
    clients += [socket.create_connection(("127.0.0.1", sockets.port), timeout=5) for _ in range(16)]
    after = _accept_all({"second": second})
    for sock in (second, *clients):
        sock.close()
    sockets.close()

    assert sum(spread.values()) == 64 and min(spread.values()) >= 16, spread
    assert after == {"second": 16}, "the supervisor's own socket never listens, so it takes none"


def test_a_port_something_listens_on_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError):
            Sockets("127.0.0.1", taken.getsockname()[1], spread=workers.REUSEPORT)


def test_a_crash_loop_stops_the_restarts_and_the_supervisor_exits_1(tmp_path: Path) -> None:
    spec = WorkerSpec(AppSettings(tmp_path / "config.yaml"), {}, 0)
    sockets = Sockets("127.0.0.1", 0, spread=False)
    supervisor = Supervisor(spec, 2, sockets, tmp_path)
    for _ in range(MAX_RESTARTS):
        supervisor._restart_later(0, 123, 1)
    assert supervisor.status == 0 and 0 in supervisor._due, "restarts within the bound are scheduled"
    supervisor._restart_later(0, 123, 1)
    sockets.close()
    assert supervisor.status == 1 and not supervisor._due and supervisor._stopping
