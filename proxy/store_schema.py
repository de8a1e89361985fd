"""The store's schema: table names, the frozen migrations that create them (for SQLite and, translated, for Postgres),
how they are applied, and SQLite's write transaction.

Part of the SQL layer (`proxy.store`, `proxy.store_queries`, `proxy.store_analytics`, `proxy.store_postgres`): nothing
outside these modules talks SQL.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlite_utils import Database

logger = logging.getLogger(__name__)

DECISIONS = "routing_decisions"
PERFORMANCE = "model_performance"
FEEDBACK = "feedback"
RULES = "model_routing_rules"
LEARNING = "learning_events"
ARTIFACTS = "shared_artifacts"
POINTERS = "shared_pointers"
MIGRATIONS = "_migrations"


# --- migrations -------------------------------------------------------------
#
# Each migration is frozen once released: its DDL is spelled out here rather than
# derived from the dataclasses, so adding a record field later needs a new
# migration (tests check every field has a column) instead of silently changing
# what 0001 means on fresh databases only.

Execute = Callable[[str], object]
"""Runs one DDL statement; a migration gets one and nothing else, so it means the same on either back end."""
Migration = tuple[str, Callable[[Execute], None]]


def _m0001_initial(execute: Execute) -> None:
    statements = [
        f"""CREATE TABLE {DECISIONS} (
            request_id TEXT NOT NULL PRIMARY KEY,
            created_at REAL NOT NULL,
            requested_model TEXT,
            preference TEXT,
            task TEXT,
            task_confidence REAL,
            classification_layer TEXT,
            needs_clarification INTEGER,
            layer_attempts TEXT,
            selected_model TEXT,
            routed_model TEXT,
            selection_reason TEXT,
            alternatives TEXT,
            router_name TEXT,
            router_version TEXT,
            propensity REAL,
            stream INTEGER,
            status TEXT,
            attempts INTEGER,
            prompt_chars INTEGER,
            prompt_text TEXT,
            ab_arm TEXT
        )""",
        f"CREATE INDEX idx_{DECISIONS}_created_at ON {DECISIONS} (created_at)",
        f"CREATE INDEX idx_{DECISIONS}_task ON {DECISIONS} (task)",
        f"""CREATE TABLE {PERFORMANCE} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            attempt INTEGER,
            model TEXT,
            task TEXT,
            outcome TEXT,
            latency_ms REAL,
            ttft_ms REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost_usd REAL,
            cost_source TEXT,
            error_class TEXT,
            error_message TEXT,
            stream INTEGER
        )""",
        f"CREATE INDEX idx_{PERFORMANCE}_request_id ON {PERFORMANCE} (request_id)",
        f"CREATE INDEX idx_{PERFORMANCE}_task_model ON {PERFORMANCE} (task, model)",
        f"CREATE INDEX idx_{PERFORMANCE}_created_at ON {PERFORMANCE} (created_at)",
        f"""CREATE TABLE {FEEDBACK} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            score REAL,
            label TEXT,
            comment TEXT,
            source TEXT,
            extra TEXT
        )""",
        f"CREATE INDEX idx_{FEEDBACK}_request_id ON {FEEDBACK} (request_id)",
        f"""CREATE TABLE {RULES} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            version TEXT,
            created_at REAL,
            task TEXT,
            model TEXT,
            adjustment TEXT,
            source TEXT
        )""",
    ]
    for sql in statements:
        execute(sql)


def _m0002_learning(execute: Execute) -> None:
    statements = [
        f"ALTER TABLE {DECISIONS} ADD COLUMN counterfactual_model TEXT",
        f"ALTER TABLE {DECISIONS} ADD COLUMN counterfactual_router TEXT",
        f"CREATE INDEX idx_{DECISIONS}_ab_arm ON {DECISIONS} (ab_arm, created_at)",
        f"CREATE INDEX idx_{FEEDBACK}_created_at ON {FEEDBACK} (created_at)",
        f"""CREATE TABLE {LEARNING} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at REAL NOT NULL,
            kind TEXT NOT NULL,
            router TEXT,
            version TEXT,
            champion_version TEXT,
            scores TEXT,
            reason TEXT
        )""",
    ]
    for sql in statements:
        execute(sql)


def _m0003_language(execute: Execute) -> None:
    # Rows written before it stay NULL: their language was never detected, which is not the same as `und`.
    execute(f"ALTER TABLE {DECISIONS} ADD COLUMN language TEXT")


def _m0004_refusals(execute: Execute) -> None:
    # Why a request ended without an answer: a refusal before any backend was called, or the failures of all of them.
    execute(f"ALTER TABLE {DECISIONS} ADD COLUMN error_code TEXT")
    execute(f"ALTER TABLE {DECISIONS} ADD COLUMN error_message TEXT")


def _m0005_receipt(execute: Execute) -> None:
    # JSON: {model: probability of being chosen}. Rows written before it stay NULL (their policy was not kept).
    execute(f"ALTER TABLE {DECISIONS} ADD COLUMN choice_probabilities TEXT")


def _m0006_shared_artifacts(execute: Execute) -> None:
    # Replicas with their own data directories share the learned routers' versions through the store
    # (`proxy.shared_versions`): the bytes of each published version, and which one is current per kind.
    execute(f"""CREATE TABLE {ARTIFACTS} (
        kind TEXT NOT NULL,
        version TEXT NOT NULL,
        created_at REAL NOT NULL,
        content BLOB NOT NULL,
        PRIMARY KEY (kind, version)
    )""")
    execute(f"CREATE TABLE {POINTERS} (kind TEXT NOT NULL PRIMARY KEY, version TEXT NOT NULL, moved_at REAL NOT NULL)")


def _m0007_sessions(execute: Execute) -> None:
    # A session's turns, and the decision that chose the model each was answered by (`router_plugins/sessions.py`).
    execute(f"ALTER TABLE {DECISIONS} ADD COLUMN session_id TEXT")
    execute(f"ALTER TABLE {DECISIONS} ADD COLUMN session_origin TEXT")
    execute(f"CREATE INDEX IF NOT EXISTS idx_decisions_session_origin ON {DECISIONS} (session_origin)")
    execute(f"CREATE INDEX IF NOT EXISTS idx_decisions_session_id ON {DECISIONS} (session_id, created_at)")


MIGRATIONS_LIST: list[Migration] = [
    ("0001_initial", _m0001_initial),
    ("0002_learning", _m0002_learning),
    ("0003_language", _m0003_language),
    ("0004_refusals", _m0004_refusals),
    ("0005_receipt", _m0005_receipt),
    ("0006_shared_artifacts", _m0006_shared_artifacts),
    ("0007_sessions", _m0007_sessions),
]


def apply_migrations(db: Database, migrations: Sequence[Migration] = MIGRATIONS_LIST) -> list[str]:
    """Apply pending migrations to a SQLite database in order, each in its own transaction; return the names applied.
    IMMEDIATE takes the write lock before the "already applied?" check, so two processes starting together cannot
    both run the same migration."""
    conn = db.conn
    return run_migrations(lambda: _immediate_transaction(conn), conn.execute, "?", lambda sql: sql, migrations)


def run_migrations(
    transaction: Callable[[], contextlib.AbstractContextManager[object]],
    execute: Callable[[str, Sequence[Any]], Any],
    placeholder: str,
    ddl: Callable[[str], str],
    migrations: Sequence[Migration] = MIGRATIONS_LIST,
) -> list[str]:
    """The migration loop both back ends share: pending migrations in order, each in its own `transaction()`, their
    DDL through `ddl` (the back end's types); `execute(sql, params)` runs a statement with `placeholder` parameters.
    The caller makes it safe against another process migrating at the same time."""
    execute(ddl(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS} (name TEXT PRIMARY KEY, applied_at REAL)"), ())
    applied: list[str] = []
    for name, fn in migrations:
        with transaction():
            if execute(f"SELECT 1 FROM {MIGRATIONS} WHERE name = {placeholder}", (name,)).fetchone() is not None:
                continue
            fn(lambda sql: execute(ddl(sql), ()))
            execute(f"INSERT INTO {MIGRATIONS} (name, applied_at) VALUES ({placeholder}, {placeholder})",
                    (name, time.time()))  # fmt: skip
        applied.append(name)
        logger.info("applied migration %s", name)
    return applied


# The same frozen DDL on Postgres: these rewrites are part of what each migration means there, so they never change
# either (a new type gets a new rewrite). REAL is 4 bytes in Postgres: a Unix time needs 8.
_POSTGRES_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)


def postgres_ddl(sql: str) -> str:
    """A migration's SQLite DDL in Postgres's types."""
    for pattern, replacement in _POSTGRES_TYPES:
        sql = pattern.sub(replacement, sql)
    return sql


@contextlib.contextmanager
def _immediate_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # BEGIN IMMEDIATE rather than a deferred BEGIN: a deferred transaction that
    # reads first (sqlite-utils introspects the table) and then writes can fail
    # with SQLITE_BUSY without honouring busy_timeout when another process wrote.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
