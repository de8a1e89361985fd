"""Persistent storage for routing decisions, per-attempt performance and feedback.

This module, `proxy.store_schema` (tables and migrations) and `proxy.store_analytics` (reads over a time window) are
the only ones that talk SQL. Everything else hands it `proxy.events` records and reads plain dicts back, so the
backend can change without touching the request path. What each consumer may call is in `proxy.store_api`
(`RequestStore`, `LearningStore`, `ReportStore`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from proxy.events import DecisionRecord, FeedbackRecord, LearningEvent, PerformanceRecord, Record
from proxy.store_analytics import AnalyticsQueries
from proxy.store_api import LearningStore, ReportStore, RequestStore, Store, routing_rule_rows
from proxy.store_schema import (
    DECISIONS,
    FEEDBACK,
    LEARNING,
    MIGRATIONS,
    PERFORMANCE,
    RULES,
    _immediate_transaction,
    apply_migrations,
)

__all__ = ["LearningStore", "ReportStore", "RequestStore", "SQLiteStore", "Store", "open_store", "routing_rule_rows"]

logger = logging.getLogger(__name__)


# Columns holding JSON text / 0-1 integers, decoded on the way out so callers
# get back the same shapes they put into the records.
_JSON_COLUMNS: dict[str, frozenset[str]] = {
    DECISIONS: frozenset({"layer_attempts", "alternatives", "choice_probabilities"}),
    PERFORMANCE: frozenset(),
    FEEDBACK: frozenset({"extra"}),
    LEARNING: frozenset({"scores"}),
    RULES: frozenset({"adjustment"}),
}
_BOOL_COLUMNS: dict[str, frozenset[str]] = {
    DECISIONS: frozenset({"needs_clarification", "stream"}),
    PERFORMANCE: frozenset({"stream"}),
    FEEDBACK: frozenset(),
    LEARNING: frozenset(),
    RULES: frozenset(),
}
_TABLE_FOR: dict[type, str] = {
    DecisionRecord: DECISIONS,
    PerformanceRecord: PERFORMANCE,
    FeedbackRecord: FEEDBACK,
    LearningEvent: LEARNING,
}


_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _TABLE_FOR}
"""Each record type's fields, in order: the columns it is written to."""


def _insert_sql(record_type: type, table: str, verb: str = "INSERT") -> str:
    columns = _FIELDS[record_type]
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


# One prepared statement per table, its columns in the record's field order (the order `_to_row` yields them):
# `executemany` with it writes ~1.6x the rows/s of sqlite-utils' `insert_all`, which rebuilds its SQL per chunk
# (docs/PERFORMANCE.md, the feedback store).
# Decisions are replaced by request_id, so one written early (e.g. before a stream ends) can be completed later.
_INSERT_FOR: dict[str, str] = {
    DECISIONS: _insert_sql(DecisionRecord, DECISIONS, "INSERT OR REPLACE"),
    PERFORMANCE: _insert_sql(PerformanceRecord, PERFORMANCE),
    FEEDBACK: _insert_sql(FeedbackRecord, FEEDBACK),
    LEARNING: _insert_sql(LearningEvent, LEARNING),
}


# --- row conversion ---------------------------------------------------------


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
"""`json.dumps(value, ensure_ascii=False, default=str)` without building an encoder per call (half its cost)."""


def _to_json(value: Any) -> str:
    # default=str: one odd value (a numpy float, a datetime) in a diagnostic field
    # must not fail the whole batch it travels in.
    return _JSON_ENCODER.encode(value)


def _to_row(rec: Record, table: str) -> dict[str, Any]:
    row = {name: getattr(rec, name) for name in _FIELDS[type(rec)]}
    for col in _JSON_COLUMNS[table]:
        row[col] = _to_json(row[col])
    for col in _BOOL_COLUMNS[table]:
        value = row[col]
        row[col] = None if value is None else int(bool(value))
    return row


def _from_row(row: dict[str, Any], table: str) -> dict[str, Any]:
    for col in _JSON_COLUMNS[table]:
        if row.get(col) is not None:
            row[col] = json.loads(row[col])
    for col in _BOOL_COLUMNS[table]:
        if row.get(col) is not None:
            row[col] = bool(row[col])
    return row


# --- SQLite -----------------------------------------------------------------


class SQLiteStore(AnalyticsQueries, Store):
    """One SQLite file in WAL mode behind a single connection.

    A lock serialises every call: the recorder writes from a worker thread while
    request handlers may read from others, and one sqlite3 connection must not be
    used by two threads at once.
    """

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

    # writes

    def write_batch(self, records: Sequence[Record]) -> None:
        self._write(records, durable=False)

    def write_durable(self, records: Sequence[Record]) -> None:
        # synchronous=FULL for this commit only: the WAL is fsynced before COMMIT returns, so the rows survive a
        # crash of the process or of the machine. NORMAL (every other commit) survives a killed process but can lose
        # the last commits on power loss. The fsync also covers every earlier commit's frames in the WAL.
        self._write(records, durable=True)

    def _write(self, records: Sequence[Record], *, durable: bool) -> None:
        by_table: dict[str, list[tuple[Any, ...]]] = {DECISIONS: [], PERFORMANCE: [], FEEDBACK: [], LEARNING: []}
        for rec in records:
            table = _TABLE_FOR.get(type(rec))
            if table is None:
                raise TypeError(f"not a storable record: {type(rec).__name__}")
            by_table[table].append(tuple(_to_row(rec, table).values()))
        if not records:
            return
        with self._lock:
            conn = self._db.conn
            if durable:
                conn.execute("PRAGMA synchronous=FULL")
            try:
                with _immediate_transaction(conn):
                    for table, rows in by_table.items():
                        if rows:
                            conn.executemany(_INSERT_FOR[table], rows)
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous=NORMAL")

    def save_routing_rules(self, registry_version: str, rules: Sequence[Mapping[str, Any]]) -> None:
        created_at = time.time()
        rows = [(registry_version, created_at, r["task"], r["model"], _to_json(r.get("adjustment") or {}),
                 r.get("source")) for r in rules]  # fmt: skip
        with self._lock, _immediate_transaction(self._db.conn):
            self._db.conn.execute(f"DELETE FROM {RULES} WHERE version = ?", [registry_version])
            self._db.conn.executemany(
                f"INSERT INTO {RULES} (version, created_at, task, model, adjustment, source) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    # reads

    def decision_exists(self, request_id: str) -> bool:
        with self._lock:
            row = self._db.execute(f"SELECT 1 FROM {DECISIONS} WHERE request_id = ?", [request_id]).fetchone()
        return row is not None

    def decision(self, request_id: str) -> dict[str, Any] | None:
        rows = self._select(DECISIONS, request_id, order_by=None)
        return rows[0] if rows else None

    def performance(self, request_id: str) -> list[dict[str, Any]]:
        return self._select(PERFORMANCE, request_id, order_by="attempt, id")

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        return self._select(FEEDBACK, request_id, order_by="created_at, id")

    def labelled_outcomes(self, limit: int = 200_000) -> list[dict[str, Any]]:
        sql = f"""
            SELECT d.request_id, d.prompt_text, d.task, d.selected_model AS model, AVG(f.score) AS quality,
                   (SELECT p.cost_usd FROM {PERFORMANCE} p
                     WHERE p.request_id = d.request_id AND p.model = d.selected_model AND p.outcome != 'failure'
                     ORDER BY p.attempt DESC LIMIT 1) AS cost_usd
            FROM {DECISIONS} d JOIN {FEEDBACK} f ON f.request_id = d.request_id
            WHERE d.status NOT IN ('failure', 'rejected') AND d.prompt_text IS NOT NULL AND f.score IS NOT NULL
            GROUP BY d.request_id ORDER BY d.created_at DESC LIMIT ?"""
        with self._lock:
            cursor = self._db.execute(sql, [limit])
            columns = [c[0] for c in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def ab_outcomes(self, since: float | None = None) -> list[dict[str, Any]]:
        # Correlated subqueries rather than joins: a join over attempts × feedback rows would multiply
        # the sums and averages.
        sql = f"""
            SELECT d.request_id, d.created_at, d.ab_arm, d.task, d.status, d.propensity,
                   (SELECT AVG(f.score) FROM {FEEDBACK} f
                     WHERE f.request_id = d.request_id AND f.score IS NOT NULL) AS quality,
                   (SELECT SUM(p.cost_usd) FROM {PERFORMANCE} p WHERE p.request_id = d.request_id) AS cost_usd,
                   (SELECT p.latency_ms FROM {PERFORMANCE} p WHERE p.request_id = d.request_id
                     ORDER BY p.attempt DESC, p.id DESC LIMIT 1) AS latency_ms
            FROM {DECISIONS} d
            WHERE d.ab_arm IS NOT NULL AND (? IS NULL OR d.created_at >= ?)
            ORDER BY d.created_at, d.request_id"""
        with self._lock:
            cursor = self._db.execute(sql, [since, since])
            columns = [c[0] for c in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def task_labels(self, limit: int = 50_000) -> list[tuple[str, str]]:
        sql = f"""
            SELECT d.prompt_text, json_extract(f.extra, '$.task') AS task
            FROM {FEEDBACK} f JOIN {DECISIONS} d ON d.request_id = f.request_id
            WHERE json_extract(f.extra, '$.task') IS NOT NULL AND d.prompt_text IS NOT NULL
            ORDER BY f.created_at DESC, f.id DESC LIMIT ?"""
        with self._lock:
            rows = self._db.execute(sql, [limit]).fetchall()
        latest: dict[str, str] = {}
        for text, task in rows:  # the newest label of a prompt wins
            latest.setdefault(text, task)
        return list(latest.items())

    def tuning_events(self, since: float | None = None, limit: int = 100_000) -> list[dict[str, Any]]:
        sql = f"""
            SELECT d.request_id, d.task, d.classification_layer, d.layer_attempts,
                   (SELECT json_extract(f.extra, '$.task') FROM {FEEDBACK} f
                     WHERE f.request_id = d.request_id AND json_extract(f.extra, '$.task') IS NOT NULL
                     ORDER BY f.created_at DESC, f.id DESC LIMIT 1) AS feedback_task
            FROM {DECISIONS} d
            WHERE d.task IS NOT NULL AND (? IS NULL OR d.created_at >= ?)
            ORDER BY d.created_at DESC LIMIT ?"""
        with self._lock:
            cursor = self._db.execute(sql, [since, since, limit])
            columns = [c[0] for c in cursor.description]
            rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
        for row in rows:
            row["layer_attempts"] = json.loads(row["layer_attempts"]) if row["layer_attempts"] else []
        return rows

    def winrate_observations(self, since: float, limit: int = 500_000) -> list[dict[str, Any]]:
        sql = f"""
            SELECT p.created_at, p.task, p.model, p.latency_ms, p.cost_usd,
                   CASE WHEN p.outcome = 'failure' THEN 0.0
                        WHEN p.model = d.selected_model THEN
                            (SELECT AVG(f.score) FROM {FEEDBACK} f WHERE f.request_id = p.request_id)
                   END AS quality
            FROM {PERFORMANCE} p JOIN {DECISIONS} d ON d.request_id = p.request_id
            WHERE p.created_at >= ? ORDER BY p.created_at DESC LIMIT ?"""
        with self._lock:
            cursor = self._db.execute(sql, [since, limit])
            columns = [c[0] for c in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def logged_decisions(self, limit: int = 100_000) -> list[dict[str, Any]]:
        sql = f"""
            SELECT * FROM (
                SELECT d.request_id, d.created_at, d.prompt_text, d.task, d.preference, d.routed_model,
                       d.selected_model, d.propensity, d.ab_arm, d.router_name, d.alternatives,
                       AVG(f.score) AS quality,
                       (SELECT SUM(p.cost_usd) FROM {PERFORMANCE} p WHERE p.request_id = d.request_id) AS cost_usd
                FROM {DECISIONS} d JOIN {FEEDBACK} f ON f.request_id = d.request_id
                WHERE d.requested_model LIKE 'auto%' AND d.status = 'success' AND f.score IS NOT NULL
                GROUP BY d.request_id ORDER BY d.created_at DESC LIMIT ?
            ) ORDER BY created_at"""
        with self._lock:
            cursor = self._db.execute(sql, [limit])
            columns = [c[0] for c in cursor.description]
            rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
        for row in rows:
            row["alternatives"] = json.loads(row["alternatives"] or "[]")
        return rows

    def learning_events(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self._db.table(LEARNING).rows_where(order_by="id DESC", limit=limit))
        return [_from_row(row, LEARNING) for row in rows]

    def learning_event_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(f"SELECT kind, COUNT(*) FROM {LEARNING} GROUP BY kind").fetchall()
        return {str(kind): int(count) for kind, count in rows}

    def routing_rules(self, registry_version: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if registry_version is None:
                rows = list(self._db.table(RULES).rows_where(order_by="id"))
            else:
                rows = list(self._db.table(RULES).rows_where("version = ?", [registry_version], order_by="id"))
        return [_from_row(row, RULES) for row in rows]

    def latency_samples(self, limit: int = 200_000) -> list[tuple[str, int, float]]:
        sql = f"""
            SELECT p.model, COALESCE(d.prompt_chars, 0), p.latency_ms
            FROM {PERFORMANCE} p JOIN {DECISIONS} d ON d.request_id = p.request_id
            WHERE p.outcome = 'success' AND p.latency_ms IS NOT NULL
            ORDER BY p.created_at DESC LIMIT ?"""
        with self._lock:
            return [(str(m), int(c), float(v)) for m, c, v in self._db.execute(sql, [limit]).fetchall()]

    def _select(self, table: str, request_id: str, *, order_by: str | None) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self._db.table(table).rows_where("request_id = ?", [request_id], order_by=order_by))
        return [_from_row(row, table) for row in rows]

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

    def applied_migrations(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(f"SELECT name FROM {MIGRATIONS} ORDER BY name").fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


def open_store(url_or_path: str) -> Store:
    """Open storage from a config value: a file path, `sqlite:///relative` or `sqlite:////absolute`."""
    if url_or_path.startswith(("postgresql://", "postgres://", "postgresql+")):
        raise NotImplementedError("postgres storage is not built yet")
    if url_or_path.startswith("sqlite:///"):
        return SQLiteStore(url_or_path[len("sqlite:///") :])
    if "://" in url_or_path:
        scheme = url_or_path.split("://", 1)[0]
        raise ValueError(f"unsupported storage scheme {scheme!r}")
    return SQLiteStore(url_or_path)
