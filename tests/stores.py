"""Looking at a store from outside, on either back end (`tests.conftest.store_location`): what a test checks that the
store's protocol does not say (columns, row counts, the schema a migration left)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg

from proxy.store import POSTGRES_SCHEMES
from proxy.store_schema import Migration, apply_migrations, postgres_ddl, run_migrations

DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
"""What a failed statement raises on either back end."""


def is_postgres(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def query(location: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` (with `?` parameters) run on a connection of its own."""
    if is_postgres(location):
        with psycopg.connect(location, autocommit=True) as conn:
            return conn.execute(sql.replace("?", "%s").encode(), list(params)).fetchall()
    with closing(sqlite3.connect(location)) as db:
        return db.execute(sql, params).fetchall()


def count(location: str, table: str) -> int:
    return int(query(location, f"SELECT count(*) FROM {table}")[0][0])


def columns(location: str, table: str) -> list[str]:
    if is_postgres(location):
        sql = ("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
               "AND table_name = ? ORDER BY ordinal_position")  # fmt: skip
        return [r[0] for r in query(location, sql, [table])]
    return [r[1] for r in query(location, f"PRAGMA table_info({table})")]


def tables_and_indexes(location: str) -> tuple[set[str], set[str]]:
    if is_postgres(location):
        tables = query(location, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        indexes = query(location, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    else:
        tables = query(location, "SELECT name FROM sqlite_master WHERE type = 'table'")
        indexes = query(location, "SELECT name FROM sqlite_master WHERE type = 'index'")
    return {r[0] for r in tables}, {r[0] for r in indexes}


def migrate(location: str, migrations: Sequence[Migration]) -> list[str]:
    """Apply only `migrations` (an older release's), as that release's store would have, and close."""
    if is_postgres(location):
        with psycopg.connect(location, autocommit=True) as conn:
            return run_migrations(conn.transaction, conn.execute, "%s", postgres_ddl, migrations)
    from sqlite_utils import Database

    Path(location).parent.mkdir(parents=True, exist_ok=True)
    db = Database(location)
    try:
        return apply_migrations(db, migrations)
    finally:
        db.close()


def execute(location: str, sql: str, params: Sequence[Any] = ()) -> None:
    """One statement (with `?` parameters), committed."""
    if is_postgres(location):
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s").encode(), list(params))
        return
    with closing(sqlite3.connect(location)) as db:
        db.execute(sql, params)
        db.commit()
