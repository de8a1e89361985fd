"""Fixtures for every test: a real PostgreSQL cluster (session-wide, started on first use) and `store_location`, which
runs a store test once on each back end: a SQLite file and a fresh schema of the Postgres database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .postgres import Cluster, PostgresUnavailable, start_cluster

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """The tests' PostgreSQL cluster; skipped where PostgreSQL is not installed, unless AUTOROUTE_REQUIRE_POSTGRES=1."""
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        if os.environ.get("AUTOROUTE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"AUTOROUTE_REQUIRE_POSTGRES=1 but {exc}")
        pytest.skip(str(exc))
    yield cluster
    cluster.remove()


@pytest.fixture(params=BACKENDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a test's store is, once per back end: what `proxy.store.open_store` takes. Open it as often as the test
    needs (two openings are two processes' views of one store)."""
    if request.param == "sqlite":
        yield str(tmp_path / "nested" / "dir" / "autoroute.db")
        return
    cluster: Cluster = request.getfixturevalue("postgres")
    schema, url = cluster.new_schema()
    yield url
    cluster.sql(f"DROP SCHEMA {schema} CASCADE")
