"""What each consumer needs from storage, as protocols (both back ends, `proxy.store.SQLiteStore` and
`proxy.store_postgres.PostgresStore`, implement them all), and the rows the registry's routing rules are stored as.
No SQL here: that stays in the SQL layer (`proxy.store_schema` lists its modules).

- `RequestStore`: the request path, the recorder and the feedback route.
- `LearningStore`: training, the learning loop, the classifier refits.
- `ReportStore`: `autoroute report ab`, `autoroute tune`, what was learned and which rules were in force.
- `ArtifactStore`: the learned routers' versions shared by replicas with their own data directories.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from proxy.events import Record

if TYPE_CHECKING:
    from router_plugins.registry import Registry

RULES_FROM_CONFIG = "config"
"""`source` of the rows `routing_rule_rows` makes: the registry YAML."""


class RequestStore(Protocol):
    def write_batch(self, records: Sequence[Record]) -> None:
        """Persist all records in one transaction: either all are stored or none. Survives a killed process once
        it returns, not necessarily a power loss (the recorder's telemetry)."""
        ...

    def write_durable(self, records: Sequence[Record]) -> None:
        """As `write_batch`, and synced to disk before it returns: survives a power loss too (feedback)."""
        ...

    def decision_exists(self, request_id: str) -> bool: ...

    def decision(self, request_id: str) -> dict[str, Any] | None: ...

    def session_pin(self, session_id: str) -> dict[str, Any] | None:
        """A session's latest answered turn (`model`, `origin`, `task`) and how many times it moved (`switches`), or
        None: how a process that did not serve the session's earlier turns (another worker or replica, a restart)
        continues it."""
        ...

    def performance(self, request_id: str) -> list[dict[str, Any]]:
        """Attempts for one request, ordered by attempt number."""
        ...

    def feedback(self, request_id: str) -> list[dict[str, Any]]: ...

    def check_writable(self) -> None:
        """Raise if a write transaction cannot be started right now (readiness probe)."""
        ...


class LearningStore(Protocol):
    def write_batch(self, records: Sequence[Record]) -> None:
        """Persist all records in one transaction (here: the learning events of promotions and rejections)."""
        ...

    def labelled_outcomes(self, limit: int = 200_000) -> list[dict[str, Any]]:
        """Served decisions that got explicit feedback: prompt text, task, model, mean score, its cost."""
        ...

    def task_labels(self, limit: int = 50_000) -> list[tuple[str, str]]:
        """(prompt text, task) of requests whose feedback named their right task, newest label first."""
        ...

    def winrate_observations(self, since: float, limit: int = 500_000) -> list[dict[str, Any]]:
        """Per attempt since `since`: created_at, task, model, quality (the mean feedback score of the model that
        served, 0 for a failed attempt, None otherwise), latency_ms, cost_usd. What win rates are computed from."""
        ...

    def logged_decisions(self, limit: int = 100_000) -> list[dict[str, Any]]:
        """Routed `auto` decisions with feedback, oldest first: what off-policy evaluation replays. Each has
        request_id, created_at, prompt_text, task, preference, routed_model, selected_model, propensity, ab_arm,
        router_name, alternatives (decoded), quality (mean score) and cost_usd."""
        ...

    def latency_samples(self, limit: int = 200_000) -> list[tuple[str, int, float]]:
        """Successful attempts, newest first: (model, prompt chars, latency ms), what latency is learned from."""
        ...

    def learning_events(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest promotions, rejections and aggregations first."""
        ...

    def save_routing_rules(self, registry_version: str, rules: Sequence[Mapping[str, Any]]) -> None:
        """Record the routing rules in force for a registry version (rows as `routing_rule_rows` makes them); writing
        the same version again replaces its rows."""
        ...


class ReportStore(Protocol):
    def ab_outcomes(self, since: float | None = None) -> list[dict[str, Any]]:
        """Decisions with an A/B arm made at or after `since`, oldest first: request_id, created_at, ab_arm, task,
        status, propensity (of the served model under the logging policy), quality (mean non-null feedback score,
        None without one), cost_usd (summed over all attempts), latency_ms (of the last attempt)."""
        ...

    def tuning_events(self, since: float | None = None, limit: int = 100_000) -> list[dict[str, Any]]:
        """Decisions made at or after `since` (Unix s), newest first, for threshold tuning: request_id, task,
        classification_layer, layer_attempts (decoded list) and feedback_task, the task the newest feedback
        naming one gave (None when no feedback did)."""
        ...

    def learning_events(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest promotions, rejections and aggregations first."""
        ...

    def learning_event_counts(self) -> dict[str, int]:
        """How many learning events of each kind the store holds (`/metrics`)."""
        ...

    def routing_rules(self, registry_version: str | None = None) -> list[dict[str, Any]]:
        """The stored routing rules of one registry version (all versions when None), in the order written:
        version, created_at, task, model, adjustment (decoded), source."""
        ...

    def window_decisions(self, since: float, until: float, limit: int = 200_000) -> list[dict[str, Any]]:
        """Decisions made in [since, until) with their feedback (`proxy.store_analytics`)."""
        ...

    def window_attempts(self, since: float, until: float, limit: int = 1_000_000) -> list[dict[str, Any]]:
        """The attempts of the decisions made in [since, until) (`proxy.store_analytics`)."""
        ...


@runtime_checkable
class ArtifactStore(Protocol):
    shares_artifacts: bool
    """True where replicas with their own data directories share the store (Postgres): only then are versions
    published to it (`proxy.shared_versions`)."""

    def publish_artifact(self, kind: str, version: str, content: bytes) -> None:
        """Keep `content` as `version` of `kind` (once: a version's bytes never change) and make it the current one,
        in one transaction."""
        ...

    def shared_pointers(self) -> dict[str, str]:
        """The current published version of each kind."""
        ...

    def artifact_content(self, kind: str, version: str) -> bytes | None:
        """A published version's bytes; None when it was never published."""
        ...


class Store(RequestStore, LearningStore, ReportStore, ArtifactStore, Protocol):
    """All of it: `SQLiteStore` (the default) and `PostgresStore` (several replicas)."""

    path: Path | None
    """The store's file (SQLite), which readiness checks is still there; None for a database on a server."""

    def applied_migrations(self) -> list[str]: ...

    def close(self) -> None: ...


def routing_rule_rows(registry: Registry) -> list[dict[str, Any]]:
    """The routing rules in force (each task's enabled rule, its enabled candidates in config order) as rows for
    `save_routing_rules`: task, model, adjustment (the candidate's settings: priority, is_specialized, ...), source."""
    rows = []
    for task in registry.tasks:
        rule = registry.rule_for(task.name)
        for candidate in rule.candidates if rule is not None else ():
            if candidate.enabled:
                settings = dataclasses.asdict(candidate)
                adjustment = {k: v for k, v in settings.items() if k not in ("model", "enabled")}
                rows.append({"task": task.name, "model": candidate.model, "adjustment": adjustment,
                             "source": RULES_FROM_CONFIG})  # fmt: skip
    return rows
