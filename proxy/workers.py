"""`autoroute serve --workers N`: N processes serve one port, under a small supervisor.

**Mechanism.** The supervisor starts N workers with multiprocessing's `spawn` context and hands each its own listening
socket on the port, bound with SO_REUSEPORT; each worker is a fresh interpreter that imports LiteLLM, the classifier
and the rest itself and runs the usual `DrainingServer` (`proxy/server.py`) on that socket, so its drain on SIGTERM is
the single process's. The kernel spreads new connections over the workers' sockets by a hash of the client's address
and port, so the connections of a keep-alive pool (a load balancer's, an SDK's) land on every worker. On one socket
shared by all (uvicorn's `--workers`, gunicorn's default) whichever worker wakes first accepts a whole burst of new
connections, and keep-alive clients then stay on it: with 64 connections opened at once (`bench/workers.py` on a
first version of this module, with one shared socket, on this busy 2-core machine), every one went to the same worker
in 2 of 5 rounds. A worker's socket joins the port when it starts listening, which
is when the worker is ready, and leaves it when the worker dies: connections it had not accepted yet are reset (a
client retries; the others never see them), new ones go to the other workers. The supervisor holds the port in the
meantime with a socket that never listens, so nothing else takes it while all workers restart; before that, a plain
bind makes sure nothing listens there already (SO_REUSEPORT alone would join another server's group). Where
SO_REUSEPORT does not spread connections (not Linux) the workers share one socket instead.

`spawn` and not `fork`: forking a process that has imported torch or started LiteLLM's threads copies locks held by
threads that do not exist in the child; the supervisor imports none of it, and a spawned worker costs the same
start-up as `autoroute serve` itself (a few seconds, the workers starting side by side).

Not uvicorn's `Multiprocess` supervisor, because it restarts a dying worker forever, forwards no signal (a terminal's
Ctrl-C reaches the workers twice: directly and from it, and the second one cuts the drain short), exits 0 whatever its
workers did, and knows nothing of the metrics directory. This one:

- starts the workers; the first listens at once and answers 503 `starting` until it is ready, as one process does,
  the others (and every restarted worker) take connections only once ready, so no request meets a worker that is
  still starting while another one could answer it;
- restarts a worker that exits unasked, after 0, 1, 2, 4, ... seconds (at most `MAX_BACKOFF_S`), and gives up when
  `MAX_RESTARTS` restarts happen within `RESTART_WINDOW_S` (a crash loop): it then stops the others and exits 1;
- forwards SIGTERM and SIGINT to every worker (each drains); the workers have their own process group, so a
  terminal's Ctrl-C reaches them once, through it. A worker whose supervisor dies (even by SIGKILL) gets SIGTERM from
  the kernel (`PR_SET_PDEATHSIG`) and drains. The supervisor exits 0 when every worker did;
- owns `PROMETHEUS_MULTIPROC_DIR` (`proxy/metrics.py`): the one given, emptied, or a temporary one; it marks each
  worker that ends as dead there.

**What runs where** (`proxy/leadership.py` elects the leader through a lock in the data directory; the gateway's
jobs ask `Election.leading` at each step, `proxy/gateway.py`):

| work                                  | the leader                           | the other workers                   |
|---------------------------------------|--------------------------------------|-------------------------------------|
| win rates                             | aggregated from the store, published | read `winrate-current.json` (2 s)   |
| trainer and its rollback check        | trains; promotes by moving a pointer | swap the new artifact in (2 s)      |
| classifier refit (transformer inline) | fits layers 3-4, writes the model    | swap the model file in (2 s)        |
| static embedding table (first start)  | distilled and written                | loaded once the file is there       |
| routing rules (`model_routing_rules`) | written once per registry version    | -                                   |

Every worker reloads the config and the artifacts, refreshes the corrections from the store's feedback, keeps its own
circuit breakers and recorder, and loads the transformer when it runs inline.
A/B arms need nothing shared: a request's arm is a hash of its id. The store (SQLite in WAL mode) takes every worker's
writes; each worker batches its own.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the supervisor imports none of the gateway: it stays small, and its workers import it all
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .settings import AppSettings

log = logging.getLogger(__name__)

WORKER_HEADER = "x-autoroute-worker"
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
MAX_BACKOFF_S = 8.0
POLL_S = 0.5
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # proxy/metrics.py reads it (not imported here: it is not light)
REUSEPORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
"""Linux spreads connections over the sockets of a SO_REUSEPORT group; elsewhere the last one bound takes them all."""
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs, pickled to it: its settings and uvicorn's options (host and port are the socket's)."""

    settings: AppSettings
    options: dict[str, Any]
    supervisor: int


def serve_workers(settings: AppSettings, workers: int, host: str, port: int, **uvicorn_options: Any) -> int:
    """Serve `settings`' gateway from `workers` processes on one port until SIGTERM or SIGINT; the exit status:
    0 when every worker drained and exited 0, 1 otherwise (the port taken, a crash loop, a worker that failed)."""
    try:
        sockets = Sockets(host, port, spread=REUSEPORT)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return 1
    metrics_dir, owned = _metrics_dir()
    try:
        spec = WorkerSpec(replace(settings, workers=workers), uvicorn_options, os.getpid())
        log.info("autoroute supervisor %d: %d workers on http://%s:%d, %s (metrics merged in %s)", os.getpid(),
                 workers, host, sockets.port, "a socket each (SO_REUSEPORT)" if sockets.spread else "one socket",
                 metrics_dir)  # fmt: skip
        return Supervisor(spec, workers, sockets, metrics_dir).run()
    finally:
        sockets.close()
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


class Sockets:
    """The port's sockets: with `spread`, a new SO_REUSEPORT socket for each worker (the supervisor keeps the port
    with one that never listens); without, one socket all workers share."""

    def __init__(self, host: str, port: int, spread: bool) -> None:
        self.host = host
        self.spread = spread
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._anchor = self._bind(port, reuse_port=False)  # fails when anything is bound there already
        self.port = int(self._anchor.getsockname()[1])
        if spread:
            self._anchor.close()
            self._anchor = self._bind(self.port, reuse_port=True)

    def for_worker(self) -> socket.socket:
        return self._bind(self.port, reuse_port=True) if self.spread else self._anchor

    def handed_over(self, sock: socket.socket) -> None:
        """The worker has its copy: the supervisor's goes, so that the socket leaves the port with the worker."""
        if sock is not self._anchor:
            sock.close()

    def close(self) -> None:
        self._anchor.close()

    def _bind(self, port: int, reuse_port: bool) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        return sock


class Supervisor:
    def __init__(self, spec: WorkerSpec, workers: int, sockets: Sockets, metrics_dir: Path) -> None:
        self._spec = spec
        self._sockets = sockets
        self._metrics_dir = metrics_dir
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess | None] = [None] * workers
        self._due: dict[int, float] = {}
        """Workers to (re)start, and when."""
        self._restarts: deque[float] = deque()
        self._signals: list[int] = []
        self._stopping = False
        self.status = 0

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(len(self._workers)):
                self._start(index, answer_while_starting=index == 0)
            while not self._stopping or any(p is not None for p in self._workers):
                self._handle_signals()
                self._reap()
                self._start_due()
                sentinels = [p.sentinel for p in self._workers if p is not None]
                wait(sentinels, timeout=POLL_S) if sentinels else time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("autoroute supervisor %d: every worker has exited; status %d", os.getpid(), self.status)
        return self.status

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals.append(sig)  # handled by the loop: a handler only sets state

    def _handle_signals(self) -> None:
        while self._signals:
            sig = self._signals.pop(0)
            if not self._stopping:
                log.info("%s: each worker drains, then exits", signal.Signals(sig).name)
            self._stop_all(signal.SIGTERM if not self._stopping else sig)

    def _stop_all(self, sig: int) -> None:
        """Signal every live worker (SIGTERM: drain; a second signal: end the requests in flight at once)."""
        self._stopping = True
        self._due.clear()
        for process in self._workers:
            if process is not None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)

    def _start(self, index: int, answer_while_starting: bool) -> None:
        settings = replace(self._spec.settings, answer_while_starting=answer_while_starting)
        sock = self._sockets.for_worker()
        process = self._context.Process(target=_worker_main, args=(replace(self._spec, settings=settings), sock),
                                        name=f"autoroute-worker-{index}")  # fmt: skip
        try:
            process.start()
        finally:
            self._sockets.handed_over(sock)
        self._workers[index] = process
        log.info("worker %d started (pid %s)", index, process.pid)

    def _reap(self) -> None:
        for index, process in enumerate(self._workers):
            if process is None or process.is_alive():
                continue
            process.join()
            self._workers[index] = None
            if process.pid is not None:
                _mark_dead(process.pid, self._metrics_dir)
            code = process.exitcode
            if self._stopping:
                log.info("worker %d (pid %s) exited with status %s", index, process.pid, code)
                # -SIGTERM: the signal came before the worker could drain, so it had taken no request yet.
                self.status = self.status or (0 if code in (0, -signal.SIGTERM) else 1)
                continue
            self._restart_later(index, process.pid, code)

    def _restart_later(self, index: int, pid: int | None, code: int | None) -> None:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        if len(self._restarts) >= MAX_RESTARTS:
            log.error("worker %d (pid %s) exited with status %s: %d restarts within %g s already; giving up, the "
                      "others drain", index, pid, code, MAX_RESTARTS, RESTART_WINDOW_S)  # fmt: skip
            self.status = 1
            self._stop_all(signal.SIGTERM)
            return
        delay = min(MAX_BACKOFF_S, 2.0 ** (len(self._restarts) - 1)) if self._restarts else 0.0
        self._restarts.append(now)
        self._due[index] = now + delay
        log.error("worker %d (pid %s) exited with status %s unasked; restarting it in %g s (%d of %d restarts "
                  "allowed within %g s)", index, pid, code, delay, len(self._restarts), MAX_RESTARTS,
                  RESTART_WINDOW_S)  # fmt: skip

    def _start_due(self) -> None:
        now = time.monotonic()
        for index, due in list(self._due.items()):
            if due <= now:
                del self._due[index]
                self._start(index, answer_while_starting=False)


def _worker_main(spec: WorkerSpec, sock: socket.socket) -> None:
    """A worker process: `autoroute serve` on the supervisor's socket."""
    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the supervisor alone, which forwards it once
    _end_with_parent(spec.supervisor)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    from .app import create_app
    from .server import serve

    code = serve(create_app(spec.settings), sockets=[sock], **spec.options)
    # Everything is written and closed by now (the gateway's stop). The interpreter's own teardown would spend seconds
    # collecting a heap of several hundred MB, holding the supervisor's exit up for nothing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _end_with_parent(supervisor: int) -> None:
    """SIGTERM (a drain) when the supervisor dies, however it dies (Linux); exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        raise SystemExit(1)


def _metrics_dir() -> tuple[Path, bool]:
    """The multiprocess metrics directory, set in the environment the workers inherit; emptied of an earlier run's
    files (they would be summed in). Returns it and whether it is this run's own (removed at the end)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="autoroute-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


def _mark_dead(pid: int, metrics_dir: Path) -> None:
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, str(metrics_dir))


class WorkerHeader:
    """Names the worker that answered in every response (`x-autoroute-worker: <pid>`), with several workers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._header = (WORKER_HEADER.encode(), str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self._header]
            await send(message)

        await self.app(scope, receive, send_with_header)


__all__ = ["WORKER_HEADER", "WorkerHeader", "serve_workers"]
