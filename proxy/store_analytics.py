"""The store's reads for analysis over a time window (`proxy.analytics`: `autoroute report --html`, `autoroute top`,
the web dashboard). Part of the SQL layer with `proxy.store` and `proxy.store_schema`: `SQLiteStore` inherits these
queries, so nothing outside the three modules talks SQL. Every query is parameterized.

A window selects decisions by their own time (`since <= created_at < until`); the attempts and feedback of those
decisions come with them whenever they were written, so a request and its feedback are counted in one window.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlite_utils import Database

from proxy.store_schema import DECISIONS, FEEDBACK, PERFORMANCE

_DECISION_COLUMNS = (
    "request_id", "created_at", "requested_model", "preference", "task", "task_confidence", "classification_layer",
    "needs_clarification", "layer_attempts", "selected_model", "routed_model", "alternatives", "router_name",
    "router_version", "propensity", "stream", "status", "attempts", "prompt_chars", "ab_arm", "language",
)  # fmt: skip
_ATTEMPT_COLUMNS = (
    "request_id", "created_at", "attempt", "model", "outcome", "latency_ms", "ttft_ms", "prompt_tokens",
    "completion_tokens", "cost_usd", "error_class",
)  # fmt: skip


class AnalyticsQueries:
    """Mixed into `proxy.store.SQLiteStore`, whose connection and lock these queries share."""

    _db: Database
    _lock: threading.Lock

    def window_decisions(self, since: float, until: float, limit: int = 200_000) -> list[dict[str, Any]]:
        """Decisions made in [since, until), newest first, at most `limit`: the decision's columns (prompt text left
        out; layer_attempts and alternatives decoded) plus its feedback: feedback_score (the mean of its scores, None
        without one), feedback_scores (how many) and feedback_task (the task its newest feedback naming one gave)."""
        columns = ", ".join(f"d.{c}" for c in _DECISION_COLUMNS)
        sql = f"""
            SELECT {columns},
                   (SELECT AVG(f.score) FROM {FEEDBACK} f
                     WHERE f.request_id = d.request_id AND f.score IS NOT NULL) AS feedback_score,
                   (SELECT COUNT(f.score) FROM {FEEDBACK} f WHERE f.request_id = d.request_id) AS feedback_scores,
                   (SELECT json_extract(f.extra, '$.task') FROM {FEEDBACK} f
                     WHERE f.request_id = d.request_id AND json_extract(f.extra, '$.task') IS NOT NULL
                     ORDER BY f.created_at DESC, f.id DESC LIMIT 1) AS feedback_task
            FROM {DECISIONS} d
            WHERE d.created_at >= ? AND d.created_at < ?
            ORDER BY d.created_at DESC, d.request_id DESC LIMIT ?"""
        rows = self._rows(sql, [since, until, limit])
        for row in rows:
            row["layer_attempts"] = json.loads(row["layer_attempts"]) if row["layer_attempts"] else []
            row["alternatives"] = json.loads(row["alternatives"]) if row["alternatives"] else []
            for flag in ("needs_clarification", "stream"):
                row[flag] = None if row[flag] is None else bool(row[flag])
        return rows

    def window_attempts(self, since: float, until: float, limit: int = 1_000_000) -> list[dict[str, Any]]:
        """Every attempt of the decisions made in [since, until), in the order written (at most `limit`)."""
        columns = ", ".join(f"p.{c}" for c in _ATTEMPT_COLUMNS)
        sql = f"""
            SELECT {columns}
            FROM {PERFORMANCE} p JOIN {DECISIONS} d ON d.request_id = p.request_id
            WHERE d.created_at >= ? AND d.created_at < ?
            ORDER BY p.created_at, p.id LIMIT ?"""
        return self._rows(sql, [since, until, limit])

    def _rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._db.execute(sql, params)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
