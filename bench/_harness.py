"""What the benchmark scripts share: starting and stopping servers on 127.0.0.1, CPU and memory of a process tree
read from /proc, the wrk load generator, and small table/percentile helpers.

Every wait here is bounded in time; every process started is stopped by the same script (see `Servers`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
BENCH_DATA = REPO / "autoroute-data-bench"
"""Kept between runs (git ignores /autoroute-data-*/): the static table and the fitted task model, so a rerun
does not pay their ~45 s of first-start set-up again. The database in it is removed at every start."""
TABLE_SOURCES = (REPO / "autoroute-data", REPO / ".pytest_cache" / "autoroute-data")
"""Data directories whose static table a bench data directory copies."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    out.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
        OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1", LITELLM_LOG="ERROR",
    )  # fmt: skip
    out.update(extra or {})
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1 only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: dict[str, Any], timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1 only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# --- processes --------------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Servers:
    """Starts servers and stops every one of them on exit (a `with` block), whatever happened in between."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="autoroute-bench-")))
    started: list[Server] = field(default_factory=list)
    keep: bool = False

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in reversed(self.started):
            stop(server)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(
        self, name: str, command: Sequence[str], port: int, ready_path: str, *, timeout_s: float = 180.0,
        extra_env: dict[str, str] | None = None, ready: Any = None,
    ) -> Server:  # fmt: skip
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            # A new session: stop() signals the whole group, so a server's own workers go too.
            proc = subprocess.Popen(
                list(command), cwd=REPO, env=env(extra_env), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        server = Server(name, f"http://127.0.0.1:{port}", proc, log)
        self.started.append(server)
        wait_ready(server, ready_path, timeout_s, ready)
        return server


def wait_ready(server: Server, path: str, timeout_s: float, ready: Any = None) -> None:
    """Poll `path` until it answers 200 (and `ready(body)` holds, when given)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            status, body = http_get(server.url + path, timeout=2.0)
            if status == 200 and (ready is None or ready(body)):
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready at {path} after {timeout_s:.0f} s:\n{server.tail()}")


def stop(server: Server, timeout_s: float = 15.0) -> None:
    proc = server.proc
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (LiteLLM's proxy, for one, may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its live descendants."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its descendants, in MiB."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/statm") as handle:
                total += int(handle.read().split()[1]) * PAGE
        except OSError:
            continue
    return total / 2**20


def peak_rss_mb(pid: int) -> float:
    """VmHWM (the kernel's own peak resident size) of `pid`, in MiB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- wrk -------------------------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
local bodies = {}
local next_body = 1
init = function(args)
  local f = assert(io.open(os.getenv("WRK_BODIES"), "r"))
  for line in f:lines() do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  f:close()
end
request = function()
  local body = bodies[next_body]
  next_body = next_body % #bodies + 1
  return wrk.format("POST", wrk.path, {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%f,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, bodies: Sequence[dict[str, Any]], *, connections: int, seconds: float, workdir: Path,
    timeout_s: float = 10.0,
) -> dict[str, Any]:  # fmt: skip
    """POST the bodies in turn (one per request, per wrk thread) for `seconds` over `connections` keep-alive
    connections; returns wrk's counts and latency percentiles (ms). wrk is one C thread: not the bottleneck."""
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    body_file = workdir / f"bodies-{os.getpid()}-{time.monotonic_ns()}.jsonl"
    body_file.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s:.0f}s",
               "-s", str(script), url]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + timeout_s + 30, env={**os.environ, "WRK_BODIES": str(body_file)}
    )  # fmt: skip
    body_file.unlink(missing_ok=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000, "mean_ms": raw["mean_us"] / 1000,
        "errors": errors, "non_2xx": raw["status"],
    }  # fmt: skip


# --- reporting -------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine() -> dict[str, Any]:
    import platform

    return {
        "cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_1m_at_start": os.getloadavg()[0],
        "kernel": platform.release(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {path}")


def prepare_data_dir(path: Path = BENCH_DATA) -> Path:
    """The bench data directory: the static table copied in once, any old database removed."""
    from router_plugins.classify.static_embedding import TABLE_FILE
    from router_plugins.datadir import DataDir

    data = DataDir(path).ensure()
    if not data.path(TABLE_FILE).exists():
        sources = (DataDir(s).path(TABLE_FILE) for s in TABLE_SOURCES)
        source = next((s for s in sources if s.exists()), None)
        if source is not None:
            shutil.copy2(source, data.path(TABLE_FILE))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data.db}{suffix}").unlink(missing_ok=True)
    return path


def readiness_complete(body: bytes) -> bool:
    """The gateway's readiness once the static table and the task model are both in use (the full cascade)."""
    try:
        checks = json.loads(body)["checks"]
    except (ValueError, KeyError):
        return False
    return bool(checks.get("embeddings") == "ok" and checks.get("task_model") in ("ok", "off"))
