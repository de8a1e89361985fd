"""Which process runs the background work that must run once among the processes sharing one store.

With `autoroute serve --workers N` every worker serves requests and keeps its own copy of the learned state, but the
work that writes shared state (win-rate aggregation, the trainer and its rollbacks, the classifier refit, building the
static embedding table, the routing-rules record) runs in one of them: the **leader**. The others follow: they read
what the leader publishes in the data directory (`proxy/gateway.py` says what each job does in each role).

`Leadership` is the small contract an election needs; `FileLeadership` implements it with `fcntl.flock` on a lock file
in the data directory. The kernel releases the lock when its holder dies, however it dies (SIGKILL included), so a
follower's next attempt (every `RETRY_S`) takes over: no lease, no heartbeat, no clock. `flock` only works between
processes of one machine, on a local file system; replicas on several machines sharing one Postgres need a lock the
database holds instead. A Postgres implementation fits the same contract with a session advisory lock on a connection
of its own: `try_acquire` runs `SELECT pg_try_advisory_lock(key)` (and, while held, checks that the connection is
alive: a lock held by a session is lost with it), `release` runs `pg_advisory_unlock(key)`.

`Election` is the background job that asks: the leader's jobs check `Election.leading` at each step, so a process that
takes over needs no restart of anything, and one that loses a lock (a dropped database connection) stops at its next
step.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

RETRY_S = 2.0
"""How often a follower tries to take the leadership over (and a leader checks it still holds it)."""


class Leadership(Protocol):
    """One process's claim to lead. Calls come from one thread at a time; none blocks for long."""

    kind: str
    """What holds the lock, for logs and readiness: `solo`, `file`, ..."""

    @property
    def held(self) -> bool:
        """Whether this process held the leadership at the last `try_acquire`."""
        ...

    def try_acquire(self) -> bool:
        """Take the leadership if it is free; True when this process holds it (already, or from now). Called again
        every `RETRY_S` by followers and by the leader, which learns so that it lost it."""
        ...

    def release(self) -> None:
        """Give the leadership up (at shutdown); a follower takes it at its next attempt. Idempotent."""
        ...

    def holder(self) -> int | None:
        """The leader's process id when known (for people: it may name a process that just died)."""
        ...


class Solo:
    """The only process (one worker): it always leads."""

    kind = "solo"
    held = True

    def try_acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def holder(self) -> int | None:
        return os.getpid()


class FileLeadership:
    """An exclusive `flock` on `path`, held for the life of an open file descriptor. The holder writes its pid into
    the file, for people and for `holder()`; the lock, not the content, is what counts."""

    kind = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        # O_CLOEXEC: a process this one starts must not inherit the descriptor, and with it the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another process holds it
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor of the open file releases the lock

    def holder(self) -> int | None:
        if self._fd is not None:
            return os.getpid()
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None


class Election:
    """The job that keeps asking for the leadership (`run`), and what the leader's jobs ask (`leading`)."""

    def __init__(
        self,
        leadership: Leadership,
        on_lead: Callable[[], Awaitable[None]] | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        self.leadership = leadership
        self._on_lead = on_lead
        self._retry_s = retry_s
        self.leading = leadership.held
        """Whether this process leads; `Solo` leads from the start, a lock from the attempt that takes it."""
        self.changes = 0
        """How often this process started or stopped leading (after its first attempt)."""

    @property
    def kind(self) -> str:
        return self.leadership.kind

    def leader_pid(self) -> int | None:
        return os.getpid() if self.leading else self.leadership.holder()

    async def attempt(self) -> bool:
        """One attempt (in a thread: a database lock is a round trip); logs a change of role."""
        try:
            held = await asyncio.to_thread(self.leadership.try_acquire)
        except Exception:  # noqa: BLE001 - a lock that cannot be asked for is not held; the next attempt retries
            log.exception("the leadership (%s) could not be asked for", self.kind)
            held = False
        if held != self.leading:
            self.leading = held
            self.changes += 1
            if held:
                log.info("worker %d leads: it runs the background jobs that run once (%s lock)", os.getpid(), self.kind)
            else:
                log.warning("worker %d lost the leadership (%s lock); it follows", os.getpid(), self.kind)
            if held and self._on_lead is not None:
                await self._on_lead()
        return held

    async def run(self) -> None:
        """The job body: attempt every `retry_s` (the first attempt is the caller's, before the jobs start)."""
        while True:
            await asyncio.sleep(self._retry_s)
            await self.attempt()

    def release(self) -> None:
        self.leading = False
        self.leadership.release()


__all__ = ["RETRY_S", "Election", "FileLeadership", "Leadership", "Solo"]
