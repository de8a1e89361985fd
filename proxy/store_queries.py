"""The store's queries, written once for both back ends: `SQLStore` turns records into rows and rows into dicts, and
runs every read and write through three primitives a back end supplies (`_fetch`, `_transaction`, `_json_text`).

The SQL here is the dialect SQLite and Postgres share: `?` parameters (the Postgres store rewrites them to `%s`),
`INSERT ... ON CONFLICT`, correlated subqueries, `GROUP BY` the primary key. Where they differ (a JSON field) the
back end spells it. Part of the SQL layer (`proxy.store_schema` lists it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from proxy.events import DecisionRecord, FeedbackRecord, LearningEvent, PerformanceRecord, Record
from proxy.store_analytics import AnalyticsQueries
from proxy.store_api import Store
from proxy.store_schema import ARTIFACTS, DECISIONS, FEEDBACK, LEARNING, MIGRATIONS, PERFORMANCE, POINTERS, RULES

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


def _insert_sql(record_type: type, table: str) -> str:
    columns = _FIELDS[record_type]
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _upsert_sql(record_type: type, table: str, key: str) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in _FIELDS[record_type] if c != key)
    return f"{_insert_sql(record_type, table)} ON CONFLICT ({key}) DO UPDATE SET {updates}"


# One prepared statement per table, its columns in the record's field order (the order `_to_row` yields them):
# `executemany` with it writes ~1.6x the rows/s of sqlite-utils' `insert_all`, which rebuilds its SQL per chunk
# (docs/PERFORMANCE.md, the feedback store).
# Decisions are replaced by request_id, so one written early (e.g. before a stream ends) can be completed later.
_INSERT_FOR: dict[str, str] = {
    DECISIONS: _upsert_sql(DecisionRecord, DECISIONS, "request_id"),
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


def _since(since: float | None) -> float:
    """A lower time bound as a parameter: None (no bound) is -inf, which both back ends compare as a number."""
    return -math.inf if since is None else since


Steps = Sequence[tuple[str, Sequence[Sequence[Any]]]]
"""One transaction's statements, each with the parameter rows it is executed for (`executemany`)."""


_SESSION_FEEDBACK = f"""(
    SELECT COALESCE(t.session_origin, f.request_id) AS origin, AVG(f.score) AS quality
    FROM {FEEDBACK} f LEFT JOIN {DECISIONS} t ON t.request_id = f.request_id
    WHERE f.score IS NOT NULL GROUP BY COALESCE(t.session_origin, f.request_id)
)"""
"""The mean score per choosing decision: a session's turns that kept their model count toward the decision that
chose it (`session_origin`), so learning and off-policy estimates count one choice per session, not per turn."""
_CHOOSING = "(d.session_origin IS NULL OR d.session_origin = d.request_id)"
"""A decision that chose its model (not a session's turn that kept it)."""


class SQLStore(AnalyticsQueries, Store):
    """Every query of the store; a back end subclasses it with its connection handling."""

    shares_artifacts = False
    """Whether replicas with their own data directories share this store (`proxy.shared_versions` syncs their
    learned routers' versions through it). A SQLite file lives in one data directory: no."""
    path: Path | None = None
    """The store's file; None for a database on a server."""

    # -- what a back end supplies ------------------------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read: its column names and rows."""
        raise NotImplementedError

    def _transaction(self, steps: Steps, *, durable: bool = False) -> None:
        """Run `steps` in one transaction: all of them or none. `durable`: synced to disk before it returns."""
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        names, rows = self._fetch(sql, params)
        return [dict(zip(names, row)) for row in rows]

    def _tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._fetch(sql, params)[1]

    # -- writes -------------------------------------------------------------------------------------------------

    def write_batch(self, records: Sequence[Record]) -> None:
        self._write(records, durable=False)

    def write_durable(self, records: Sequence[Record]) -> None:
        self._write(records, durable=True)

    def _write(self, records: Sequence[Record], *, durable: bool) -> None:
        by_table: dict[str, list[tuple[Any, ...]]] = {DECISIONS: [], PERFORMANCE: [], FEEDBACK: [], LEARNING: []}
        for rec in records:
            table = _TABLE_FOR.get(type(rec))
            if table is None:
                raise TypeError(f"not a storable record: {type(rec).__name__}")
            by_table[table].append(tuple(_to_row(rec, table).values()))
        if records:
            self._transaction([(_INSERT_FOR[table], rows) for table, rows in by_table.items() if rows], durable=durable)

    def save_routing_rules(self, registry_version: str, rules: Sequence[Mapping[str, Any]]) -> None:
        created_at = time.time()
        rows = [(registry_version, created_at, r["task"], r["model"], _to_json(r.get("adjustment") or {}),
                 r.get("source")) for r in rules]  # fmt: skip
        self._transaction([
            (f"DELETE FROM {RULES} WHERE version = ?", [(registry_version,)]),
            (f"INSERT INTO {RULES} (version, created_at, task, model, adjustment, source) VALUES (?, ?, ?, ?, ?, ?)",
             rows),
        ])  # fmt: skip

    def publish_artifact(self, kind: str, version: str, content: bytes) -> None:
        now = time.time()
        self._transaction([
            (f"INSERT INTO {ARTIFACTS} (kind, version, created_at, content) VALUES (?, ?, ?, ?) "
             "ON CONFLICT (kind, version) DO NOTHING", [(kind, version, now, content)]),
            (f"INSERT INTO {POINTERS} (kind, version, moved_at) VALUES (?, ?, ?) "
             "ON CONFLICT (kind) DO UPDATE SET version = excluded.version, moved_at = excluded.moved_at",
             [(kind, version, now)]),
        ])  # fmt: skip

    # -- reads --------------------------------------------------------------------------------------------------

    def decision_exists(self, request_id: str) -> bool:
        return bool(self._tuples(f"SELECT 1 FROM {DECISIONS} WHERE request_id = ?", [request_id]))

    def decision(self, request_id: str) -> dict[str, Any] | None:
        rows = self._select(DECISIONS, request_id, order_by=None)
        return rows[0] if rows else None

    def session_pin(self, session_id: str) -> dict[str, Any] | None:
        sql = f"""
            SELECT d.selected_model AS model, d.session_origin AS origin, d.task,
                   (SELECT COUNT(DISTINCT s.session_origin) FROM {DECISIONS} s
                     WHERE s.session_id = ? AND s.session_origin IS NOT NULL) - 1 AS switches
            FROM {DECISIONS} d
            WHERE d.session_id = ? AND d.status = 'success' AND d.session_origin IS NOT NULL
            ORDER BY d.created_at DESC LIMIT 1"""
        rows = self._rows(sql, [session_id, session_id])
        return rows[0] if rows else None

    def performance(self, request_id: str) -> list[dict[str, Any]]:
        return self._select(PERFORMANCE, request_id, order_by="attempt, id")

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        return self._select(FEEDBACK, request_id, order_by="created_at, id")

    def _select(self, table: str, request_id: str, *, order_by: str | None) -> list[dict[str, Any]]:
        order = f" ORDER BY {order_by}" if order_by else ""
        rows = self._rows(f"SELECT * FROM {table} WHERE request_id = ?{order}", [request_id])
        return [_from_row(row, table) for row in rows]

    def labelled_outcomes(self, limit: int = 200_000) -> list[dict[str, Any]]:
        sql = f"""
            SELECT d.request_id, d.prompt_text, d.task, d.selected_model AS model, fb.quality,
                   (SELECT p.cost_usd FROM {PERFORMANCE} p
                     WHERE p.request_id = d.request_id AND p.model = d.selected_model AND p.outcome != 'failure'
                     ORDER BY p.attempt DESC LIMIT 1) AS cost_usd
            FROM {DECISIONS} d JOIN {_SESSION_FEEDBACK} fb ON fb.origin = d.request_id
            WHERE d.status NOT IN ('failure', 'rejected') AND d.prompt_text IS NOT NULL AND {_CHOOSING}
            ORDER BY d.created_at DESC LIMIT ?"""
        return self._rows(sql, [limit])

    def ab_outcomes(self, since: float | None = None) -> list[dict[str, Any]]:
        # Correlated subqueries rather than joins: a join over attempts × feedback rows would multiply
        # the sums and averages.
        sql = f"""
            SELECT d.request_id, d.created_at, d.ab_arm, d.task, d.status, d.propensity,
                   fb.quality,
                   (SELECT SUM(p.cost_usd) FROM {PERFORMANCE} p WHERE p.request_id = d.request_id) AS cost_usd,
                   (SELECT p.latency_ms FROM {PERFORMANCE} p WHERE p.request_id = d.request_id
                     ORDER BY p.attempt DESC, p.id DESC LIMIT 1) AS latency_ms
            FROM {DECISIONS} d LEFT JOIN {_SESSION_FEEDBACK} fb ON fb.origin = d.request_id
            WHERE d.ab_arm IS NOT NULL AND d.created_at >= ?
            ORDER BY d.created_at, d.request_id"""
        return self._rows(sql, [_since(since)])

    def task_labels(self, limit: int = 50_000) -> list[tuple[str, str]]:
        task = self._json_text("f.extra", "task")
        sql = f"""
            SELECT d.prompt_text, {task} AS task
            FROM {FEEDBACK} f JOIN {DECISIONS} d ON d.request_id = f.request_id
            WHERE {task} IS NOT NULL AND d.prompt_text IS NOT NULL
            ORDER BY f.created_at DESC, f.id DESC LIMIT ?"""
        latest: dict[str, str] = {}
        for text, label in self._tuples(sql, [limit]):  # the newest label of a prompt wins
            latest.setdefault(text, label)
        return list(latest.items())

    def tuning_events(self, since: float | None = None, limit: int = 100_000) -> list[dict[str, Any]]:
        sql = f"""
            SELECT d.request_id, d.task, d.classification_layer, d.layer_attempts,
                   {self._feedback_task_sql()} AS feedback_task
            FROM {DECISIONS} d
            WHERE d.task IS NOT NULL AND d.created_at >= ?
            ORDER BY d.created_at DESC LIMIT ?"""
        rows = self._rows(sql, [_since(since), limit])
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
        return self._rows(sql, [since, limit])

    def logged_decisions(self, limit: int = 100_000) -> list[dict[str, Any]]:
        sql = f"""
            SELECT * FROM (
                SELECT d.request_id, d.created_at, d.prompt_text, d.task, d.preference, d.routed_model,
                       d.selected_model, d.propensity, d.ab_arm, d.router_name, d.alternatives,
                       fb.quality,
                       (SELECT SUM(p.cost_usd) FROM {PERFORMANCE} p WHERE p.request_id = d.request_id) AS cost_usd
                FROM {DECISIONS} d JOIN {_SESSION_FEEDBACK} fb ON fb.origin = d.request_id
                WHERE d.requested_model LIKE 'auto%' AND d.status = 'success' AND {_CHOOSING}
                ORDER BY d.created_at DESC LIMIT ?
            ) AS newest ORDER BY created_at"""
        rows = self._rows(sql, [limit])
        for row in rows:
            row["alternatives"] = json.loads(row["alternatives"] or "[]")
        return rows

    def learning_events(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._rows(f"SELECT * FROM {LEARNING} ORDER BY id DESC LIMIT ?", [limit])
        return [_from_row(row, LEARNING) for row in rows]

    def learning_event_counts(self) -> dict[str, int]:
        rows = self._tuples(f"SELECT kind, COUNT(*) FROM {LEARNING} GROUP BY kind")
        return {str(kind): int(count) for kind, count in rows}

    def routing_rules(self, registry_version: str | None = None) -> list[dict[str, Any]]:
        if registry_version is None:
            rows = self._rows(f"SELECT * FROM {RULES} ORDER BY id")
        else:
            rows = self._rows(f"SELECT * FROM {RULES} WHERE version = ? ORDER BY id", [registry_version])
        return [_from_row(row, RULES) for row in rows]

    def latency_samples(self, limit: int = 200_000) -> list[tuple[str, int, float]]:
        sql = f"""
            SELECT p.model, COALESCE(d.prompt_chars, 0), p.latency_ms
            FROM {PERFORMANCE} p JOIN {DECISIONS} d ON d.request_id = p.request_id
            WHERE p.outcome = 'success' AND p.latency_ms IS NOT NULL
            ORDER BY p.created_at DESC LIMIT ?"""
        return [(str(m), int(c), float(v)) for m, c, v in self._tuples(sql, [limit])]

    def shared_pointers(self) -> dict[str, str]:
        return {str(kind): str(version) for kind, version in self._tuples(f"SELECT kind, version FROM {POINTERS}")}

    def artifact_content(self, kind: str, version: str) -> bytes | None:
        rows = self._tuples(f"SELECT content FROM {ARTIFACTS} WHERE kind = ? AND version = ?", [kind, version])
        return bytes(rows[0][0]) if rows else None

    def applied_migrations(self) -> list[str]:
        return [str(name) for (name,) in self._tuples(f"SELECT name FROM {MIGRATIONS} ORDER BY name")]


__all__ = ["SQLStore", "Steps"]
