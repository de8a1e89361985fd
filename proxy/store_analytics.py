"""The store's reads for analysis over a time window (`proxy.analytics`: `autoroute report --html`, `autoroute top`,
the web dashboard). Part of the SQL layer (`proxy.store_schema` lists it): both back ends inherit these queries
through `proxy.store_queries.SQLStore`. Every query is parameterized.

A window selects decisions by their own time (`since <= created_at < until`); the attempts and feedback of those
decisions come with them whenever they were written, so a request and its feedback are counted in one window.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

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
    """Mixed into `proxy.store_queries.SQLStore`, whose back end runs these queries (`_rows`) and spells a JSON
    field (`_json_text`)."""

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _json_text(self, column: str, key: str) -> str:
        raise NotImplementedError

    def _feedback_task_sql(self) -> str:
        """A subquery over decisions `d`: the task the newest feedback naming one gave."""
        task = self._json_text("f.extra", "task")
        return f"""(SELECT {task} FROM {FEEDBACK} f
                     WHERE f.request_id = d.request_id AND {task} IS NOT NULL
                     ORDER BY f.created_at DESC, f.id DESC LIMIT 1)"""

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
                   {self._feedback_task_sql()} AS feedback_task
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
