"""Persistent storage for routing decisions, per-attempt performance and feedback: SQLite by default (a file in the data
directory), Postgres for several replicas (`storage.url`, `proxy.store_postgres`).

The SQL layer is this module, `proxy.store_queries` (every query, written once for both back ends),
`proxy.store_schema` (tables and migrations), `proxy.store_analytics` (reads over a time window) and
`proxy.store_postgres`; nothing else talks SQL. Everything else hands the store `proxy.events` records and reads
plain dicts back. What each consumer may call is in `proxy.store_api` (`RequestStore`, `LearningStore`,
`ReportStore`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sqlite_utils import Database

from proxy.store_api import LearningStore, ReportStore, RequestStore, Store, routing_rule_rows
from proxy.store_queries import SQLStore, Steps
from proxy.store_schema import MIGRATIONS, _immediate_transaction, apply_migrations

if TYPE_CHECKING:
    from router_plugins.datadir import DataDir
    from router_plugins.registry import StorageSettings

__all__ = [
    "LearningStore", "ReportStore", "RequestStore", "SQLiteStore", "Store", "configured_storage",
    "open_configured_store", "open_store", "redacted", "routing_rule_rows", "store_location",
]  # fmt: skip

logger = logging.getLogger(__name__)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


# --- SQLite -----------------------------------------------------------------


class SQLiteStore(SQLStore):
    """One SQLite file in WAL mode behind a single connection.

    A lock serialises every call: the recorder writes from a worker thread while
    request handlers may read from others, and one sqlite3 connection must not be
    used by two threads at once.
    """

    path: Path

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: no implicit transactions; every transaction here
        # is explicit, so batch boundaries are exactly what write_batch says.
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            # Plugins could alter the connection; the gateway's storage must not
            # depend on whatever sqlite-utils plugins happen to be installed.
            self._db = Database(conn, execute_plugins=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal" and str(path) != ":memory:":
                logger.warning("sqlite journal_mode is %s, not wal, for %s", mode, path)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            apply_migrations(self._db)
        except BaseException:
            conn.close()
            raise
        self._closed = False

    def _fetch(self, sql: str, params: Sequence[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._lock:
            cursor = self._db.conn.execute(sql, params)
            return [c[0] for c in cursor.description], cursor.fetchall()

    def _transaction(self, steps: Steps, *, durable: bool = False) -> None:
        # durable: synchronous=FULL for this commit only: the WAL is fsynced before COMMIT returns, so the rows
        # survive a crash of the process or of the machine. NORMAL (every other commit) survives a killed process
        # but can lose the last commits on power loss. The fsync also covers every earlier commit's frames in the WAL.
        with self._lock:
            conn = self._db.conn
            if durable:
                conn.execute("PRAGMA synchronous=FULL")
            try:
                with _immediate_transaction(conn):
                    for sql, rows in steps:
                        conn.executemany(sql, rows)
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous=NORMAL")

    def _json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    # health / lifecycle

    def check_writable(self) -> None:
        with self._lock:
            conn = self._db.conn
            # A read-only file still lets BEGIN IMMEDIATE succeed; only a write
            # statement surfaces SQLITE_READONLY. This one touches no rows and is
            # rolled back. Disk-full is not detected: that needs a committed write.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"UPDATE {MIGRATIONS} SET applied_at = applied_at WHERE 0")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.journal_mode)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


def open_store(url_or_path: str, *, pool_size: int = 5) -> Store:
    """Open storage from a config value: a file path, `sqlite:///relative` or `sqlite:////absolute`, or a
    `postgresql://` URL (a pool of at most `pool_size` connections)."""
    if url_or_path.startswith(POSTGRES_SCHEMES):
        from proxy.store_postgres import PostgresStore

        return PostgresStore(url_or_path, pool_size=pool_size)
    return SQLiteStore(_sqlite_path(url_or_path))


def store_location(storage: StorageSettings, data: DataDir) -> str:
    """Where the config's store is: `storage.url`, or the URL in the environment variable `storage.url_env`, or else
    the data directory's SQLite file. Raises ConfigError when `url_env` names a variable that is not set."""
    from router_plugins.schema import ConfigError

    if not storage.url_env:
        return storage.url or str(data.db)
    url = os.environ.get(storage.url_env, "")
    if not url:
        raise ConfigError(f"storage.url_env names {storage.url_env}, but that environment variable is not set")
    kind = "postgres" if url.startswith(POSTGRES_SCHEMES) else "sqlite"
    if storage.backend not in (None, kind):
        raise ConfigError(f"storage.backend is {storage.backend} but {storage.url_env} holds a {kind} location")
    return url


def configured_storage(config: str | Path | None) -> StorageSettings:
    """The `storage` settings of the config file at `config` (None: `config.yaml`); the defaults (the data
    directory's SQLite file) when there is no such file, as commands given `--data-dir` alone have always worked."""
    from router_plugins.registry import StorageSettings, load_registry

    path = Path(config or "config.yaml")
    return load_registry(path).storage if path.exists() else StorageSettings()


def open_configured_store(storage: StorageSettings, data: DataDir, *, create: bool = True) -> Store | None:
    """The store of a config (`store_location`). With `create` false, None where opening would create an empty
    SQLite file (a report must not); a server database is always opened."""
    location = store_location(storage, data)
    if not create and not location.startswith(POSTGRES_SCHEMES) and not _sqlite_path(location).exists():
        return None
    return open_store(location, pool_size=storage.pool_size)


def redacted(location: str) -> str:
    """A store location fit for a log or an error: a URL's password replaced by `***`."""
    parts = urlsplit(location)
    if "://" not in location or parts.password is None:
        return location
    userinfo, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}"))


def _sqlite_path(location: str) -> Path:
    """The file of a SQLite location: a path, `sqlite:///relative` or `sqlite:////absolute`."""
    if location.startswith("sqlite:///"):
        return Path(location[len("sqlite:///") :])
    if "://" in location:
        raise ValueError(f"unsupported storage scheme {location.split('://', 1)[0]!r}")
    return Path(location)
