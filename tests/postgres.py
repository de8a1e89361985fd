"""A throw-away PostgreSQL cluster for the tests: `initdb` in a temporary directory, `postgres` on 127.0.0.1 at a free
port (no Unix socket), one database, stopped and deleted at the end.

The server binaries are found on PATH or under /usr/lib/postgresql/<version>/bin (Debian's `postgresql` package;
`make test` installs it when missing). initdb refuses to run as root: as root the cluster is created and run as
the `postgres` user the package creates. Without the binaries the Postgres tests are skipped, unless
AUTOROUTE_REQUIRE_POSTGRES=1 (CI) makes that a failure.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

BIN_GLOB = "/usr/lib/postgresql/*/bin"
RUN_AS = "postgres"
SUPERUSER = "autoroute"
DATABASE = "autoroute"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or no unprivileged user to run them as."""


def bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: PATH first, else the newest Debian-packaged version."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/").glob(BIN_GLOB.lstrip("/")), key=lambda p: _version(p.parent.name))
    for candidate in reversed(candidates):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise PostgresUnavailable("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql)")


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A running cluster; `url` reaches its database as the superuser (trust auth on 127.0.0.1 only)."""

    root: Path
    bin: Path
    port: int
    user: pwd.struct_passwd | None
    """Who runs the server when the tests run as root."""
    url: str = ""
    _schemas: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        done = subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.root, env=env, capture_output=True,
                              text=True, timeout=timeout, **kwargs)  # fmt: skip
        if done.returncode != 0:
            server_log = self.root / "server.log"
            log = server_log.read_text(errors="replace")[-3000:] if server_log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}\n{log}")

    def start(self) -> None:
        # fsync off: the tests never outlive the machine; a crash of the server (`crash_and_restart`) still loses
        # what was not written to the OS, which is what synchronous_commit decides.
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
                   "-c fsync=off -c full_page_writes=off -c max_connections=200")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w",
                  "-t", str(START_TIMEOUT_S), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def crash_and_restart(self) -> None:
        """Stop the server as a crash would (no checkpoint, shared buffers and WAL buffers lost), then start it."""
        self.stop("immediate")
        self.start()

    def sql(self, statement: str, database: str = DATABASE) -> None:
        import psycopg

        with psycopg.connect(self.url_for(database), autocommit=True) as conn:
            conn.execute(statement.encode())

    def url_for(self, database: str = DATABASE, schema: str | None = None) -> str:
        url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
        return url + (f"?options={quote(f'-csearch_path={schema}')}" if schema else "")

    def new_schema(self) -> tuple[str, str]:
        """A fresh, empty schema of the database: (its name, a URL whose connections use it). Tests get one each,
        so no table is shared between them without a new database per test."""
        name = f"t{next(self._schemas)}_{os.getpid()}"
        self.sql(f"CREATE SCHEMA {name}")
        return name, self.url_for(DATABASE, name)

    def new_database(self) -> str:
        """A fresh database: its URL (for tests that run gateways, which should see nothing but their own rows)."""
        name = f"db{next(self._schemas)}_{os.getpid()}"
        self.sql(f"CREATE DATABASE {name}", "postgres")
        return self.url_for(name)

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # not running: nothing to stop
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb and start a cluster; raises PostgresUnavailable when that cannot be done here."""
    binaries = bin_dir()
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(RUN_AS)
        except KeyError as exc:
            raise PostgresUnavailable(f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as") from exc
    # Not under pytest's temp directory: as root that is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="autoroute-pg-"))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    cluster = Cluster(root, binaries, _free_port(), user)
    try:
        cluster._run("initdb", "-D", str(cluster.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                     "--no-locale", "--no-sync")  # fmt: skip
        for attempt in range(3):  # the free port may be taken by someone else before the server binds it
            try:
                cluster.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                cluster.port = _free_port()
        cluster.url = cluster.url_for("postgres")
        cluster.sql(f"CREATE DATABASE {DATABASE}", "postgres")
        cluster.url = cluster.url_for(DATABASE)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


def wait_until(check: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check()` until it returns something truthy; that value, or the last one after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
