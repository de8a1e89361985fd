"""The store's schema: table names, the frozen migrations that create them, and the write transaction they share.

Part of the SQL layer (with `proxy.store` and `proxy.store_analytics`): nothing outside these three modules talks SQL.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence

from sqlite_utils import Database

logger = logging.getLogger(__name__)

DECISIONS = "routing_decisions"
PERFORMANCE = "model_performance"
FEEDBACK = "feedback"
RULES = "model_routing_rules"
LEARNING = "learning_events"
MIGRATIONS = "_migrations"


# --- migrations -------------------------------------------------------------
#
# Each migration is frozen once released: its DDL is spelled out here rather than
# derived from the dataclasses, so adding a record field later needs a new
# migration (tests check every field has a column) instead of silently changing
# what 0001 means on fresh databases only.

Migration = tuple[str, Callable[[Database], None]]


def _m0001_initial(db: Database) -> None:
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
        db.execute(sql)


def _m0002_learning(db: Database) -> None:
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
        db.execute(sql)


def _m0003_language(db: Database) -> None:
    # Rows written before it stay NULL: their language was never detected, which is not the same as `und`.
    db.execute(f"ALTER TABLE {DECISIONS} ADD COLUMN language TEXT")


def _m0004_refusals(db: Database) -> None:
    # Why a request ended without an answer: a refusal before any backend was called, or the failures of all of them.
    db.execute(f"ALTER TABLE {DECISIONS} ADD COLUMN error_code TEXT")
    db.execute(f"ALTER TABLE {DECISIONS} ADD COLUMN error_message TEXT")


def _m0005_receipt(db: Database) -> None:
    # JSON: {model: probability of being chosen}. Rows written before it stay NULL (their policy was not kept).
    db.execute(f"ALTER TABLE {DECISIONS} ADD COLUMN choice_probabilities TEXT")


def _m0006_sessions(db: Database) -> None:
    db.execute(f"ALTER TABLE {DECISIONS} ADD COLUMN session_id TEXT")
    db.execute(f"ALTER TABLE {DECISIONS} ADD COLUMN session_origin TEXT")
    db.execute(f"CREATE INDEX IF NOT EXISTS idx_decisions_session_origin ON {DECISIONS} (session_origin)")


MIGRATIONS_LIST: list[Migration] = [
    ("0001_initial", _m0001_initial),
    ("0002_learning", _m0002_learning),
    ("0003_language", _m0003_language),
    ("0004_refusals", _m0004_refusals),
    ("0005_receipt", _m0005_receipt),
    ("0006_sessions", _m0006_sessions),
]


def apply_migrations(db: Database, migrations: Sequence[Migration] = MIGRATIONS_LIST) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the names applied."""
    db.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS} (name TEXT PRIMARY KEY, applied_at REAL)")
    applied: list[str] = []
    for name, fn in migrations:
        # IMMEDIATE takes the write lock before the "already applied?" check, so two
        # processes starting together cannot both run the same migration.
        with _immediate_transaction(db.conn):
            row = db.execute(f"SELECT 1 FROM {MIGRATIONS} WHERE name = ?", [name]).fetchone()
            if row is not None:
                continue
            fn(db)
            db.execute(f"INSERT INTO {MIGRATIONS} (name, applied_at) VALUES (?, ?)", [name, time.time()])
        applied.append(name)
        logger.info("applied migration %s", name)
    return applied


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
