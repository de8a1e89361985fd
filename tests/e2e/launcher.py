"""Starting many gateway processes quickly: import once, fork each gateway from the warm interpreter.

A cold `autoroute serve` spends most of its start importing LiteLLM (about 4 of its 6-8 s on a CI-sized machine), so a
test that restarts the gateway 20 times would take minutes. This launcher imports everything the gateway needs once,
then each `spawn` forks a child that runs `proxy.cli.main(["serve", ...])`: the real command, in its own process
with its own sockets and its own SQLite connection (the store is opened in the child's lifespan, after the fork), which
the test may SIGKILL. Nothing here runs threads or an event loop before forking.

Protocol, one line each way: `spawn {"argv": [...], "log": PATH}` -> the child's pid; `reap PID` -> its exit code
(negative: the signal that ended it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx


def _serve_child(argv: list[str], log: str) -> None:
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    code = 1
    try:
        import proxy.cli

        code = proxy.cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    import gc

    # Imported for the children, which find them loaded.
    import httptools  # noqa: F401 - for the children
    import litellm  # noqa: F401 - for the children
    import uvicorn  # noqa: F401 - for the children
    import uvloop  # noqa: F401 - for the children

    import proxy.app  # noqa: F401 - for the children
    import proxy.cli  # noqa: F401 - for the children
    import proxy.forward  # noqa: F401 - for the children
    import proxy.server  # noqa: F401 - for the children

    gc.freeze()  # the children share these pages instead of copying them on the first collection
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        if command == "spawn":
            spec = json.loads(rest)
            pid = os.fork()
            if pid == 0:
                _serve_child(spec["argv"], spec["log"])
            print(pid, flush=True)
        elif command == "reap":
            _, status = os.waitpid(int(rest), 0)
            print(os.waitstatus_to_exitcode(status), flush=True)


@dataclass
class Child:
    url: str
    pid: int


class Launcher:
    """The test side: `start()` a gateway and wait until it is ready, `kill()` it with SIGKILL and reap it."""

    def __init__(self, repo: Path, env: dict[str, str], log: Path) -> None:
        self._log = log
        self._live: set[int] = set()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.launcher"], cwd=repo, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self._read() == "ready"

    def _read(self) -> str:
        stdout: IO[str] | None = self._proc.stdout
        assert stdout is not None
        line = stdout.readline().strip()
        if not line:
            raise RuntimeError(f"the launcher exited with {self._proc.wait()}")
        return line

    def _send(self, line: str) -> str:
        assert self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        return self._read()

    def start(self, argv: list[str], port: int, timeout: float = 60.0) -> Child:
        pid = int(self._send("spawn " + json.dumps({"argv": [*argv, "--port", str(port)], "log": str(self._log)})))
        self._live.add(pid)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health/readiness", timeout=1.0).status_code == 200:
                    return Child(url, pid)
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill(Child(url, pid))
        raise RuntimeError(f"the gateway was not ready after {timeout} s:\n{self._log.read_text()[-4000:]}")

    def kill(self, child: Child) -> int:
        os.kill(child.pid, signal.SIGKILL)
        self._live.discard(child.pid)
        return int(self._send(f"reap {child.pid}"))

    def close(self) -> None:
        for pid in list(self._live):
            self.kill(Child("", pid))
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=10)
        self._proc.stdout.close()


if __name__ == "__main__":
    main()
