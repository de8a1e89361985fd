"""The store on both back ends (`store_location`: a SQLite file, a Postgres schema), and what only SQLite has."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from proxy.events import DecisionRecord, FeedbackRecord, PerformanceRecord
from proxy.store import SQLiteStore, Store, open_store, routing_rule_rows
from proxy.store_schema import MIGRATIONS_LIST
from router_plugins.registry import parse_registry

from ..postgres import Cluster
from ..stores import DB_ERRORS, columns, count, execute, migrate, tables_and_indexes


def decision(request_id: str = "req-1", **kw: Any) -> DecisionRecord:
    base: dict[str, Any] = dict(
        request_id=request_id,
        created_at=1_700_000_000.5,
        requested_model="auto",
        preference="balanced",
        task="code",
        task_confidence=0.87,
        classification_layer="embedding",
        needs_clarification=False,
        layer_attempts=[{"layer": "rules", "matched": False}, {"layer": "embedding", "score": 0.87}],
        selected_model="model-a",
        routed_model="model-a",
        selection_reason="best quality for code",
        alternatives=[{"model": "model-b", "score": 0.5}],
        router_name="default",
        router_version="1.0",
        propensity=0.9,
        stream=True,
        status="success",
        attempts=1,
        prompt_chars=42,
        prompt_text="héllo \"world\"",
        ab_arm="B",
    )
    base.update(kw)
    return DecisionRecord(**base)


def perf(request_id: str = "req-1", attempt: int = 1, **kw: Any) -> PerformanceRecord:
    base: dict[str, Any] = dict(
        request_id=request_id,
        created_at=1_700_000_001.0 + attempt,
        attempt=attempt,
        model=f"model-{attempt}",
        task="code",
        outcome="success",
        latency_ms=123.4,
        ttft_ms=None,
        prompt_tokens=10,
        completion_tokens=20,
        cost_usd=0.0012,
        cost_source="provider",
    )
    base.update(kw)
    return PerformanceRecord(**base)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "autoroute.db"


@pytest.fixture
def store(store_location: str) -> Iterator[Store]:
    s = open_store(store_location)
    yield s
    s.close()


def test_creates_parent_dir(db_path: Path) -> None:
    SQLiteStore(db_path).close()
    assert db_path.exists()


def test_creates_tables_and_indexes(store: Store, store_location: str) -> None:
    tables, indexes = tables_and_indexes(store_location)
    assert {"_migrations", "routing_decisions", "model_performance", "feedback", "model_routing_rules",
            "learning_events", "shared_artifacts", "shared_pointers"} <= tables  # fmt: skip
    assert {
        "idx_routing_decisions_created_at",
        "idx_routing_decisions_task",
        "idx_model_performance_request_id",
        "idx_model_performance_task_model",
        "idx_model_performance_created_at",
        "idx_feedback_request_id",
    } <= indexes


def test_migrations_are_idempotent(store_location: str) -> None:
    first = open_store(store_location)
    first.write_batch([decision()])
    first.close()
    second = open_store(store_location)
    try:
        assert second.applied_migrations() == [name for name, _ in MIGRATIONS_LIST]
        assert second.decision_exists("req-1")  # reopening did not recreate tables
    finally:
        second.close()
    assert count(store_location, "_migrations") == len(MIGRATIONS_LIST)


def test_processes_starting_together_migrate_once(store_location: str) -> None:
    opened: list[Store] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(open_store(store_location))
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in opened:
        s.close()
    assert not errors and len(opened) == 4
    assert count(store_location, "_migrations") == len(MIGRATIONS_LIST)


def test_language_migration_upgrades_an_existing_database(store_location: str) -> None:
    assert migrate(store_location, MIGRATIONS_LIST[:2]) == ["0001_initial", "0002_learning"]
    execute(store_location, "INSERT INTO routing_decisions (request_id, created_at) VALUES ('before', 1.0)")
    assert "language" not in columns(store_location, "routing_decisions")

    store = open_store(store_location)
    try:
        assert "0003_language" in store.applied_migrations()
        store.write_batch([decision("after", language="zh")])
        after, before = store.decision("after"), store.decision("before")
        assert after is not None and after["language"] == "zh"
        assert before is not None and before["language"] is None, "a row from before was never detected, not 'und'"
    finally:
        store.close()


def test_every_record_field_has_a_column(store: Store, store_location: str) -> None:
    # A new field in proxy.events without a migration would make every batch fail.
    for cls, table in [
        (DecisionRecord, "routing_decisions"),
        (PerformanceRecord, "model_performance"),
        (FeedbackRecord, "feedback"),
    ]:
        missing = {f.name for f in dataclasses.fields(cls)} - set(columns(store_location, table))
        assert not missing, f"{table} lacks columns {missing}"
    assert columns(store_location, "model_routing_rules") == [
        "id", "version", "created_at", "task", "model", "adjustment", "source"
    ]


def test_wal_mode_is_on(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    assert store.journal_mode() == "wal"
    store.close()
    with closing(sqlite3.connect(db_path)) as conn:  # persistent, seen by other connections
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_decision_round_trip(store: Store) -> None:
    rec = decision(needs_clarification=True, stream=False, language="pt")
    store.write_batch([rec])
    row = store.decision("req-1")
    assert row == dataclasses.asdict(rec)
    assert row["needs_clarification"] is True and row["stream"] is False
    assert isinstance(row["layer_attempts"], list) and row["layer_attempts"][1]["score"] == 0.87
    assert store.decision("missing") is None


def test_performance_round_trip_and_order(store: Store) -> None:
    store.write_batch([perf(attempt=3), perf(attempt=1, stream=True)])
    store.write_batch(
        [
            perf(attempt=2, outcome="failure", error_class="Timeout", error_message="x", ttft_ms=None),
            perf("other", attempt=1),
        ]
    )
    rows = store.performance("req-1")
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    assert rows[0]["stream"] is True and rows[2]["stream"] is False
    first = dict(rows[0])
    first.pop("id")
    assert first == dataclasses.asdict(perf(attempt=1, stream=True))
    assert rows[1]["error_class"] == "Timeout" and rows[1]["ttft_ms"] is None
    assert store.performance("nope") == []


def test_feedback_round_trip(store: Store) -> None:
    fb = FeedbackRecord("req-1", 1.0, 0.5, label="good", extra={"tags": ["a", "b"], "n": 1})
    store.write_batch([fb, FeedbackRecord("req-1", 2.0, -1.0)])
    rows = store.feedback("req-1")
    assert len(rows) == 2
    assert rows[0]["extra"] == {"tags": ["a", "b"], "n": 1}
    assert rows[0]["label"] == "good" and rows[1]["extra"] == {} and rows[1]["source"] == "api"


def test_decision_upsert_replaces_row(store: Store, store_location: str) -> None:
    store.write_batch([decision(status="partial", attempts=1)])
    store.write_batch([decision(status="success", attempts=2, selected_model="model-b")])
    row = store.decision("req-1")
    assert row is not None
    assert (row["status"], row["attempts"], row["selected_model"]) == ("success", 2, "model-b")
    # Within one batch the last write wins too.
    store.write_batch([decision("req-2", attempts=1), decision("req-2", attempts=3)])
    assert store.decision("req-2")["attempts"] == 3  # type: ignore[index]
    assert count(store_location, "routing_decisions") == 2


def test_decision_exists(store: Store) -> None:
    assert not store.decision_exists("req-1")
    store.write_batch([perf()])  # performance rows alone do not make a decision
    assert not store.decision_exists("req-1")
    store.write_batch([decision()])
    assert store.decision_exists("req-1")


def test_quotes_and_sql_in_ids_round_trip(store: Store) -> None:
    nasty = "x'); DROP TABLE routing_decisions; --\"`"
    store.write_batch([decision(nasty), perf(nasty), FeedbackRecord(nasty, 1.0, 1.0)])
    assert store.decision_exists(nasty)
    assert store.decision(nasty)["request_id"] == nasty  # type: ignore[index]
    assert len(store.performance(nasty)) == 1 and len(store.feedback(nasty)) == 1
    assert not store.decision_exists("x")


def test_batch_is_one_transaction(store: Store) -> None:
    bad = perf(request_id=None)  # type: ignore[arg-type]  # violates NOT NULL
    with pytest.raises(DB_ERRORS):
        store.write_batch([decision(), perf(), bad])
    assert not store.decision_exists("req-1")
    assert store.performance("req-1") == []
    store.write_batch([decision()])  # the connection is usable afterwards
    assert store.decision_exists("req-1")


def test_write_batch_rejects_unknown_types(store: Store) -> None:
    with pytest.raises(TypeError):
        store.write_batch([decision(), {"request_id": "x"}])  # type: ignore[list-item]
    assert not store.decision_exists("req-1")
    store.write_batch([])


def test_check_writable_ok(store: Store) -> None:
    store.check_writable()
    store.check_writable()
    store.write_batch([decision()])  # the probe left no transaction open


def test_check_writable_fails_when_closed(store_location: str) -> None:
    s = open_store(store_location)
    s.close()
    with pytest.raises(DB_ERRORS):
        s.check_writable()
    s.close()  # idempotent


def test_check_writable_fails_when_write_lock_is_held(db_path: Path) -> None:
    # Works as root too: another writer holding the lock is a real failure mode.
    s = SQLiteStore(db_path, busy_timeout_ms=50)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            s.check_writable()
        other.execute("ROLLBACK")
        s.check_writable()
    finally:
        other.close()
        s.close()


def test_check_writable_fails_on_read_only_database(db_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    SQLiteStore(db_path).close()
    db_path.chmod(0o444)
    db_path.parent.chmod(0o555)  # no -wal/-shm can be created either
    try:
        with pytest.raises(sqlite3.Error):
            s = SQLiteStore(db_path)
            try:
                s.check_writable()
            finally:
                s.close()
    finally:
        db_path.parent.chmod(0o755)
        db_path.chmod(0o644)


def test_unwritable_path_fails_at_open(tmp_path: Path) -> None:
    # A regular file where the parent directory should be: fails even as root.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(OSError):
        SQLiteStore(blocker / "autoroute.db")


def test_concurrent_threads(store: Store) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(50):
                store.write_batch([decision(f"w-{i}"), perf(f"w-{i}")])
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    def reader() -> None:
        try:
            deadline = time.monotonic() + 5
            while not store.decision_exists("w-49") and time.monotonic() < deadline:
                store.decision("w-0")
                store.performance("w-0")
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.decision_exists("w-49")


def test_open_store(tmp_path: Path) -> None:
    s = open_store(str(tmp_path / "a.db"))
    assert isinstance(s, SQLiteStore)
    s.close()
    u = open_store(f"sqlite:///{tmp_path / 'b.db'}")  # absolute path -> sqlite:////...
    assert isinstance(u, SQLiteStore) and u.path == tmp_path / "b.db"
    u.close()
    with pytest.raises(ValueError):
        open_store("mysql://localhost/x")


def test_open_store_on_postgres(postgres: Cluster) -> None:
    from proxy.store_postgres import PostgresStore

    _, url = postgres.new_schema()
    s = open_store(url.replace("postgresql://", "postgres://"))
    assert isinstance(s, PostgresStore) and s.path is None and s.shares_artifacts
    s.close()
    s.close()  # idempotent


def test_an_unreachable_database_fails_at_open_and_says_where() -> None:
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="127.0.0.1"):
        open_store("postgresql://nobody@127.0.0.1:1/autoroute")


def test_text_with_nul_characters_is_stored(store: Store) -> None:
    # Postgres text cannot hold NUL: one odd prompt must not fail the batch of telemetry it travels in.
    store.write_batch([decision("n\x00ul", prompt_text="a\x00b"), FeedbackRecord("n\x00ul", 1.0, 1.0, comment="c\x00")])
    assert store.decision_exists("n\x00ul")
    row = store.decision("n\x00ul")
    assert row is not None and row["prompt_text"] in ("a\x00b", "a\ufffdb")
    assert len(store.feedback("n\x00ul")) == 1


def test_published_artifacts_and_the_current_version_of_each_kind(store: Store) -> None:
    assert store.shared_pointers() == {} and store.artifact_content("learned", "v1") is None
    store.publish_artifact("learned", "v1", b"\x00one")
    store.publish_artifact("thresholds", "t1", b"{}")
    store.publish_artifact("learned", "v2", b"two")
    assert store.shared_pointers() == {"learned": "v2", "thresholds": "t1"}
    store.publish_artifact("learned", "v1", b"changed")  # pinned back: a version's bytes never change
    assert store.shared_pointers()["learned"] == "v1"
    assert store.artifact_content("learned", "v1") == b"\x00one" and store.artifact_content("learned", "v2") == b"two"


def test_labelled_outcomes_and_latency_samples(store: Store) -> None:
    store.write_batch([
        decision("a", selected_model="model-2", prompt_chars=100), perf("a", 1, outcome="failure", latency_ms=5.0),
        perf("a", 2, latency_ms=250.0, cost_usd=0.003),
        FeedbackRecord("a", 1.0, 0.2), FeedbackRecord("a", 2.0, 0.6),
        decision("b", prompt_chars=7, prompt_text=None), perf("b", 1, latency_ms=80.0),
        decision("c", status="failure"), perf("c", 1, outcome="failure"), FeedbackRecord("c", 3.0, 1.0),
    ])  # fmt: skip
    (row,) = store.labelled_outcomes()
    assert row["request_id"] == "a" and row["model"] == "model-2" and row["cost_usd"] == 0.003
    assert row["quality"] == pytest.approx(0.4), "the mean of the scores sent"
    assert sorted(store.latency_samples()) == [("model-1", 7, 80.0), ("model-2", 100, 250.0)], "successes only"


def test_a_sessions_turns_count_toward_the_decision_that_chose_its_model(store: Store) -> None:
    """Learning and off-policy estimates count sessions, not turns: feedback on a turn that kept its model is the
    choosing decision's; the kept turns are no decisions of their own."""
    store.write_batch([
        decision("s1", session_id="s", session_origin="s1", created_at=1.0), perf("s1", 1, cost_usd=0.001),
        decision("s2", session_id="s", session_origin="s1", router_name="session", created_at=2.0),
        decision("s3", session_id="s", session_origin="s1", router_name="session", created_at=3.0),
        FeedbackRecord("s1", 4.0, 1.0), FeedbackRecord("s3", 5.0, 0.0),
        decision("solo", created_at=6.0), FeedbackRecord("solo", 7.0, 0.5),
    ])  # fmt: skip

    labelled = {r["request_id"]: r["quality"] for r in store.labelled_outcomes()}
    logged = {r["request_id"]: r["quality"] for r in store.logged_decisions()}
    ab = {r["request_id"]: r["quality"] for r in store.ab_outcomes()}

    assert labelled == logged == {"s1": pytest.approx(0.5), "solo": pytest.approx(0.5)}
    assert ab["s1"] == pytest.approx(0.5) and ab["solo"] == pytest.approx(0.5)


def test_task_labels_take_the_newest_label_of_each_prompt(store: Store) -> None:
    store.write_batch([
        decision("a", prompt_text="integrate x squared"), FeedbackRecord("a", 1.0, None, extra={"task": "writing"}),
        FeedbackRecord("a", 2.0, None, extra={"task": "math"}), FeedbackRecord("a", 3.0, 0.9),
        decision("b", prompt_text=None), FeedbackRecord("b", 1.0, None, extra={"task": "coding"}),
        decision("c", prompt_text="fix my loop"), FeedbackRecord("c", 1.0, None, extra={"task": "debugging"}),
    ])  # fmt: skip
    assert sorted(store.task_labels()) == [("fix my loop", "debugging"), ("integrate x squared", "math")]
    assert store.labelled_outcomes()[0]["quality"] == 0.9, "a task label alone is not a score"


RULES_CONFIG = """\
models:
  - {name: a, litellm_params: {model: openai/a}}
  - {name: b, litellm_params: {model: openai/b}}
  - {name: c, litellm_params: {model: openai/c}}
tasks: [{name: coding}, {name: math}, {name: chat}]
router: {fallback_task: chat}
routing_rules:
  - task: coding
    candidates:
      - {model: b, priority: 2, is_specialized: true, min_quality_score: 0.5}
      - {model: a}
      - {model: c, enabled: false}
  - {task: math, enabled: false, candidates: [{model: a}]}
"""


def test_routing_rule_rows_are_the_rules_in_force() -> None:
    rows = routing_rule_rows(parse_registry(RULES_CONFIG))
    unadjusted = {"priority": 1, "is_specialized": False, "min_quality_score": None, "max_cost_per_1k": None}
    assert rows == [
        {"task": "coding", "model": "b", "source": "config",
         "adjustment": {**unadjusted, "priority": 2, "is_specialized": True, "min_quality_score": 0.5}},
        {"task": "coding", "model": "a", "source": "config", "adjustment": unadjusted},
    ], "config order; disabled rules and candidates are not in force"  # fmt: skip


def test_routing_rules_of_a_registry_version_are_stored_once(store: Store) -> None:
    registry = parse_registry(RULES_CONFIG)
    rows = routing_rule_rows(registry)
    store.save_routing_rules(registry.version, rows)
    store.save_routing_rules(registry.version, rows)  # the same registry loaded again
    store.save_routing_rules("older", rows[1:])

    saved = store.routing_rules(registry.version)
    assert [{k: r[k] for k in ("task", "model", "adjustment", "source")} for r in saved] == rows
    assert all(r["version"] == registry.version and r["created_at"] > 0 for r in saved)
    assert [r["version"] for r in store.routing_rules()] == [registry.version] * 2 + ["older"]
    assert store.routing_rules("unknown") == []


def test_a_session_is_recalled_from_the_store(store: Store) -> None:
    """Another worker or replica continues a session from its rows: the latest answered turn's model and origin,
    and how many times it moved."""
    store.write_batch([
        decision("t1", session_id="s", session_origin="t1", selected_model="a", created_at=1.0),
        decision("t2", session_id="s", session_origin="t1", selected_model="a", created_at=2.0),
        decision("t3", session_id="s", session_origin="t3", selected_model="b", created_at=3.0),
        decision("t4", session_id="s", session_origin=None, selected_model="b", status="failure", created_at=4.0),
        decision("other", session_id="o", session_origin="other", selected_model="c", created_at=5.0),
    ])  # fmt: skip

    assert store.session_pin("s") == {"model": "b", "origin": "t3", "task": "code", "switches": 1}
    assert store.session_pin("nobody") is None
