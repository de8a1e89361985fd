"""The Postgres back end: the store for several gateway replicas (`storage.url: postgresql://...`), behind the same
protocol and the same queries as SQLite (`proxy.store_queries`).

psycopg 3 with a connection pool (psycopg_pool): every call borrows a connection for one statement or one
transaction, so the recorder's thread, the feedback writer and the request handlers run side by side. Migrations
are the SQLite ones with Postgres's types (`proxy.store_schema.postgres_ddl`), applied under an advisory lock so
replicas that start together migrate once. Part of the SQL layer (`proxy.store_schema` lists it).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from proxy.store_queries import SQLStore, Steps
from proxy.store_schema import MIGRATIONS, postgres_ddl, run_migrations

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
POOL_WAIT_S = 10.0
"""How long a call waits for a free connection (or for the database to come back) before it fails: the request path
(`decision_exists` for feedback) must not hang on a database that is gone."""
MIGRATION_LOCK = 0x6175746F726F7574
"""The advisory lock key ("autorout") held while migrating: one process migrates, the others wait, then find the
migrations applied."""
_DURABLE = "SET LOCAL synchronous_commit TO on"
"""Feedback: the commit returns once the WAL is flushed (whatever the server's default), so an acknowledged row
survives a crash of the database server."""
_TELEMETRY = "SET LOCAL synchronous_commit TO off"
"""Decisions and attempts: the commit returns before the WAL flush. A killed gateway loses nothing it committed; a
crash of the database server can lose the last ~0.6 s of them, as SQLite's NORMAL can on power loss."""


@functools.lru_cache(maxsize=256)
def _dialect(sql: str) -> str:
    """The shared SQL with psycopg's parameters: `?` becomes `%s`, a literal `%` (as in LIKE 'auto%') `%%`."""
    return sql.replace("%", "%%").replace("?", "%s")


def _clean(value: Any) -> Any:
    # Postgres text cannot hold NUL; a prompt or comment with one must not fail the whole batch it travels in.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def _params(row: Sequence[Any]) -> list[Any]:
    return [_clean(v) for v in row]


class PostgresStore(SQLStore):
    """A pool of connections to one Postgres database (in autocommit; writes in explicit transactions)."""

    shares_artifacts = True

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self._migrate(url)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url, min_size=1, max_size=max(1, pool_size), open=False, name="autoroute", timeout=POOL_WAIT_S,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S, "application_name": "autoroute"},
            check=ConnectionPool.check_connection,
        )  # fmt: skip
        try:
            self._pool.open(wait=True, timeout=POOL_WAIT_S)
        except BaseException:
            self._pool.close()
            raise
        self._closed = False

    @staticmethod
    def _migrate(url: str) -> None:
        """Apply pending migrations on a connection of its own, under the advisory lock: the lock ends with the
        connection, whatever happens. Connecting first also gives a clear error (refused, bad password) at once."""
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
            run_migrations(conn.transaction, conn.execute, "%s", postgres_ddl)

    def _fetch(self, sql: str, params: Sequence[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._pool.connection() as conn:
            cursor = conn.execute(_dialect(sql), _params(params))
            names = [c.name for c in cursor.description or ()]
            return names, cursor.fetchall()

    def _transaction(self, steps: Steps, *, durable: bool = False) -> None:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.execute(_DURABLE if durable else _TELEMETRY)
            for sql, rows in steps:
                cursor.executemany(_dialect(sql), [_params(row) for row in rows])

    def _json_text(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}')"

    def check_writable(self) -> None:
        # A standby (read only) refuses even a write that touches no rows; a database that is gone fails to lend a
        # connection within POOL_WAIT_S.
        with self._pool.connection() as conn:
            conn.execute(f"UPDATE {MIGRATIONS} SET applied_at = applied_at WHERE false")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()


__all__ = ["PostgresStore"]
