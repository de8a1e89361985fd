"""Router versions shared through the store by replicas with their own data directories (`proxy.shared_versions`):
a pin, rollback or promotion on one replica becomes the current version of the others; a joining replica adopts the
shared versions; a pointer moved by hand is published. Runs on both back ends: two SQLite connections on one file
stand for two replicas as two Postgres pools do (`shares_artifacts` is set on them)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.learning import ChallengeResult, record_challenge
from proxy.shared_versions import ArtifactSync
from proxy.store import SQLiteStore, Store, open_store
from proxy.versions import PIN, current_version, pin, publish, rollback
from router_plugins.datadir import write_pointer
from router_plugins.routers.learned import POINTER_FILE as LEARNED_POINTER
from router_plugins.thresholds import POINTER_FILE as THRESHOLDS_POINTER
from router_plugins.thresholds import load_tuned_thresholds

from ..stores import execute
from .test_versions import MIDDLE, NEW, OLD, _learned, _thresholds


def _shared(location: str) -> Store:
    store = open_store(location)
    store.shares_artifacts = True  # a SQLite file stands for a shared database here
    return store


@pytest.fixture
def stores(store_location: str) -> Iterator[tuple[Store, Store]]:
    """Two replicas' views of one store."""
    a, b = _shared(store_location), _shared(store_location)
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three learned versions (NEW current) and a thresholds version (not current), fitted once for the module."""
    artifacts = tmp_path_factory.mktemp("versions")
    for version in (OLD, MIDDLE, NEW):
        _learned(artifacts, version)
    _thresholds(artifacts, "20250101000000-n5", 0.6)
    return artifacts


@pytest.fixture
def replica_a(tmp_path: Path, versions: Path) -> Path:
    """Replica A's artifacts: all of `versions`."""
    return Path(shutil.copytree(versions, tmp_path / "a" / "artifacts"))


def _learned_only(artifacts: Path, versions: Path, version: str) -> Path:
    """`artifacts` holding one learned version, current."""
    artifacts.mkdir(parents=True, exist_ok=True)
    path = Path(shutil.copy(versions / f"learned-{version}.npz", artifacts))
    write_pointer(artifacts, LEARNED_POINTER, path, version)
    return path


def test_a_pin_on_one_replica_is_served_by_the_others(stores: tuple[Store, Store], replica_a: Path,
                                                      tmp_path: Path) -> None:  # fmt: skip
    store_a, store_b = stores
    b = tmp_path / "b" / "artifacts"
    sync_a, sync_b = ArtifactSync(store_a, replica_a), ArtifactSync(store_b, b)
    assert sync_a.sync() == ["learned: published " + NEW], "a first replica with versions and an empty store"
    assert sync_b.sync() == ["learned: adopted " + NEW], "a joining replica with an empty data directory"
    assert (b / f"learned-{NEW}.npz").read_bytes() == (replica_a / f"learned-{NEW}.npz").read_bytes()

    event = pin(replica_a, store_a, OLD)
    assert store_a.shared_pointers()["learned"] == OLD and current_version(replica_a, "learned") == OLD
    assert sync_a.sync() == [], "its own move: nothing to do"
    assert sync_b.sync() == ["learned: adopted " + OLD] and current_version(b, "learned") == OLD
    assert sync_b.sync() == []
    assert [(e["kind"], e["version"]) for e in store_b.learning_events()] == [(PIN, event.version)], "recorded once"

    # And back from B, which now holds both versions: A has the file already, only its pointer moves.
    pin(b, store_b, NEW)
    assert sync_a.sync() == ["learned: adopted " + NEW] and current_version(replica_a, "learned") == NEW
    rollback(replica_a, store_a)  # to MIDDLE, which B never had: fetched from the store
    assert sync_b.sync() == ["learned: adopted " + MIDDLE] and (b / f"learned-{MIDDLE}.npz").is_file()


def test_the_store_wins_at_start_and_a_hand_moved_pointer_is_published(stores: tuple[Store, Store],
                                                                       replica_a: Path, versions: Path,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    store_a, store_b = stores
    b = tmp_path / "b" / "artifacts"
    _learned_only(b, versions, OLD)  # B ran alone on OLD before joining
    publish(store_a, replica_a, "learned", MIDDLE)
    assert ArtifactSync(store_b, b).sync() == ["learned: adopted " + MIDDLE]
    assert current_version(b, "learned") == MIDDLE

    # `autoroute tune` (or an operator) moves A's thresholds pointer without the store: the next pass publishes it.
    (replica_a / THRESHOLDS_POINTER).write_text(json.dumps({"artifact": "thresholds-20250101000000-n5.json",
                                                             "version": "20250101000000-n5"}))  # fmt: skip
    sync_a = ArtifactSync(store_a, replica_a)
    assert sorted(sync_a.sync()) == ["learned: adopted " + MIDDLE, "thresholds: published 20250101000000-n5"]
    sync_b = ArtifactSync(store_b, b)
    assert sync_b.sync() == ["thresholds: adopted 20250101000000-n5"]
    assert load_tuned_thresholds(b) == {"keywords": 0.6}


def test_a_pointer_to_a_version_the_store_lacks_is_not_adopted_nor_overwritten(stores: tuple[Store, Store],
                                                                              store_location: str, versions: Path,
                                                                              tmp_path: Path) -> None:  # fmt: skip
    store_a, _ = stores
    b = tmp_path / "b" / "artifacts"
    _learned_only(b, versions, OLD)
    execute(store_location, "INSERT INTO shared_pointers (kind, version, moved_at) VALUES ('learned', 'gone', 1.0)")
    sync = ArtifactSync(store_a, b)
    assert sync.sync() == [] and sync.sync() == []
    assert current_version(b, "learned") == OLD and store_a.shared_pointers() == {"learned": "gone"}


def test_a_promotion_by_the_trainer_is_published(stores: tuple[Store, Store], versions: Path, tmp_path: Path) -> None:
    store_a, store_b = stores
    a, b = tmp_path / "a" / "artifacts", tmp_path / "b" / "artifacts"
    path = _learned_only(a, versions, NEW)  # saved by the gate as a promotion
    result = ChallengeResult(True, "promoted", None, None, "logging-policy", NEW, path)
    record_challenge(store_a, result)
    assert store_b.shared_pointers() == {"learned": NEW}
    assert ArtifactSync(store_b, b).sync() == ["learned: adopted " + NEW]


def test_a_store_of_one_data_directory_shares_nothing(tmp_path: Path, replica_a: Path) -> None:
    store = SQLiteStore(tmp_path / "autoroute.db")
    assert ArtifactSync.of(store, replica_a) is None
    assert not publish(store, replica_a, "learned", OLD) and store.shared_pointers() == {}
    pin(replica_a, store, OLD)
    assert store.shared_pointers() == {}
    store.close()
