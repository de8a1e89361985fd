"""Versions you can operate: `autoroute router list | pin | rollback`, and the automatic rollback of a promoted
learned-router version that does worse live than the one it replaced."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
from pathlib import Path

import pytest

from proxy.events import DecisionRecord, FeedbackRecord, LearningEvent
from proxy.learning import LearningLoop
from proxy.router_commands import register
from proxy.store import SQLiteStore
from proxy.versions import (
    AUTO_ROLLBACK,
    PIN,
    PROMOTION,
    ROLLBACK,
    VersionError,
    check_rollback,
    current_version,
    list_versions,
    live_comparison,
    pin,
    rollback,
    versions,
)
from router_plugins.outcomes import from_feedback
from router_plugins.routers import LearnedRouter, RouterContext
from router_plugins.routers.learned import current_artifact
from router_plugins.thresholds import ARTIFACT_FORMAT, load_tuned_thresholds

from .test_learned_router import bag_of_words
from .test_learning import MODELS, _registry

OLD, MIDDLE, NEW = "20250101000000-n60", "20250102000000-n60", "20250103000000-n60"
T0 = 1_750_000_000.0


def _learned(artifacts: Path, version: str) -> Path:
    """A small learned-router version saved as `autoroute train` saves one (pointer included)."""
    rows = [{"request_id": f"{version}{i}{m}", "prompt_text": f"prompt {i}", "task": "chat", "model": m,
             "quality": float(i % 2), "cost_usd": 0.001} for i in range(20) for m in MODELS]  # fmt: skip
    router = LearnedRouter(_registry(), RouterContext(static_embed=bag_of_words))
    router.fit(from_feedback(rows, list(MODELS)))
    router.version = version
    return router.save(artifacts)


def _thresholds(artifacts: Path, version: str, keywords: float) -> Path:
    path = artifacts / f"thresholds-{version}.json"
    path.write_text(json.dumps({"format": ARTIFACT_FORMAT, "version": version, "thresholds": {"keywords": keywords}}))
    return path


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    directory = tmp_path / "artifacts"
    for version in (OLD, MIDDLE, NEW):
        _learned(directory, version)  # NEW is current
    _thresholds(directory, "20250101000000-n5", 0.6)
    _thresholds(directory, "20250105000000-n9", 0.7)
    return directory


def test_versions_are_listed_oldest_first_with_the_current_one(artifacts: Path, tmp_path: Path) -> None:
    assert versions(artifacts, "learned") == [OLD, MIDDLE, NEW]
    assert current_version(artifacts, "learned") == NEW and current_version(artifacts, "thresholds") is None
    store = SQLiteStore(tmp_path / "autoroute.db")
    store.write_batch([LearningEvent(T0, PROMOTION, "learned", NEW, MIDDLE, {"gate": {"ess": 250.0}}, "promoted")])
    listing = list_versions(artifacts, store)
    assert [(v.version, v.current) for v in listing["learned"]] == [(OLD, False), (MIDDLE, False), (NEW, True)]
    assert [v.version for v in listing["thresholds"]] == ["20250101000000-n5", "20250105000000-n9"]
    new_events = listing["learned"][2].events
    assert [e["kind"] for e in new_events] == [PROMOTION] and listing["learned"][1].events == new_events
    assert listing["learned"][0].events == []
    store.close()


def test_pin_and_rollback_move_the_pointer_and_are_recorded(artifacts: Path, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "autoroute.db")
    event = pin(artifacts, store, OLD)
    assert (event.kind, event.router, event.version, event.champion_version) == (PIN, "learned", OLD, NEW)
    assert current_artifact(artifacts) == artifacts / f"learned-{OLD}.npz"
    assert json.loads((artifacts / "learned-current.json").read_text())["version"] == OLD
    with pytest.raises(VersionError, match="no learned version before"):
        rollback(artifacts, store)
    pin(artifacts, store, NEW)
    back = rollback(artifacts, store)
    assert (back.kind, back.version, back.champion_version) == (ROLLBACK, MIDDLE, NEW)
    assert current_version(artifacts, "learned") == MIDDLE
    assert [e["kind"] for e in store.learning_events()] == [ROLLBACK, PIN, PIN]
    # Thresholds: pinned by version (the kind is found), then rolled back; what the gateway would load follows.
    pin(artifacts, store, "20250105000000-n9")
    assert load_tuned_thresholds(artifacts) == {"keywords": 0.7}
    rollback(artifacts, store, "thresholds")
    assert load_tuned_thresholds(artifacts) == {"keywords": 0.6}
    with pytest.raises(VersionError, match="no version 'nope'"):
        pin(artifacts, store, "nope")
    store.close()


def test_a_version_both_kinds_have_must_be_named(artifacts: Path) -> None:
    _thresholds(artifacts, OLD, 0.5)
    with pytest.raises(VersionError, match="name the kind"):
        pin(artifacts, None, OLD)
    assert pin(artifacts, None, OLD, "thresholds").router == "thresholds"


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="autoroute")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_the_router_commands(artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = str(tmp_path)
    assert _cli("router", "list", "--data-dir", data_dir, "--json", str(tmp_path / "out" / "list.json")) == 0
    printed = capsys.readouterr().out
    assert f"* {NEW}  (current)" in printed and "thresholds: 2 version(s)" in printed
    assert not (tmp_path / "autoroute.db").exists(), "listing never creates a store"
    listing = json.loads((tmp_path / "out" / "list.json").read_text())
    assert [v["current"] for v in listing["learned"]] == [False, False, True]
    assert _cli("router", "rollback", "--data-dir", data_dir) == 0
    assert f"learned: {NEW} -> {MIDDLE} (rollback)" in capsys.readouterr().out
    assert _cli("router", "pin", NEW, "--data-dir", data_dir) == 0
    assert current_version(artifacts, "learned") == NEW
    assert _cli("router", "pin", "missing", "--data-dir", data_dir) == 2
    assert "no version 'missing'" in capsys.readouterr().err
    assert _cli("router", "rollback", "--kind", "thresholds", "--data-dir", data_dir) == 2
    assert _cli("router", "list", "--data-dir", data_dir) == 0
    assert "pin" in capsys.readouterr().out
    config = tmp_path / "config.yaml"
    config.write_text(f"models: [{{name: a, litellm_params: {{model: openai/a}}}}]\nstorage: {{data_dir: {tmp_path}}}")
    assert _cli("router", "list", "--config", str(config)) == 0 and NEW in capsys.readouterr().out
    assert _cli("router", "list", "--config", str(tmp_path / "missing.yaml")) == 2


# -- rolled back when worse live ----------------------------------------------------------------------------------


def _live(store: SQLiteStore, version: str, start: int, n: int, p_good: float, seed: int, at: float) -> None:
    """`n` learned-router decisions of `version` with feedback: good (1) with probability `p_good`."""
    rng = random.Random(seed)
    records: list[DecisionRecord | FeedbackRecord] = []
    for i in range(start, start + n):
        rid = f"live{i}"
        records += [
            DecisionRecord(rid, at + i, "auto", "balanced", "chat", 1.0, "keywords", False, [], "solver", "solver",
                           "learned", [{"model": m} for m in MODELS], "learned", version, 0.9, False, "success", 1, 10,
                           "hello"),
            FeedbackRecord(rid, at + i + 0.5, float(rng.random() < p_good)),
        ]  # fmt: skip
    store.write_batch(records)


def _promoted(store: SQLiteStore, artifacts: Path, promoted: str, replaced: str, at: float) -> None:
    pin(artifacts, None, promoted)
    store.write_batch([LearningEvent(at, PROMOTION, "learned", promoted, replaced, {}, "promoted")])


def test_a_promoted_version_that_does_worse_live_is_rolled_back(artifacts: Path, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "autoroute.db")
    _live(store, MIDDLE, 0, 150, 0.85, seed=1, at=T0)
    _promoted(store, artifacts, NEW, MIDDLE, T0 + 1000)
    _live(store, NEW, 1000, 20, 0.2, seed=2, at=T0)
    assert check_rollback(store, artifacts) is None, "20 live decisions: below the burn-in, nothing is decided"
    _live(store, NEW, 1020, 130, 0.2, seed=3, at=T0)
    event = check_rollback(store, artifacts)
    assert event is not None and (event.kind, event.version, event.champion_version) == (AUTO_ROLLBACK, MIDDLE, NEW)
    assert current_version(artifacts, "learned") == MIDDLE
    assert event.scores["sequential"]["decision"] == "stop: control better"
    assert event.scores["n"] == {"control": 150, "treatment": 150} and event.scores["sequential"]["p_value"] < 0.05
    assert "did worse live" in event.reason
    (stored, *_) = store.learning_events()
    assert stored["kind"] == AUTO_ROLLBACK and stored["scores"]["mean_quality"]["treatment"] < 0.4
    assert check_rollback(store, artifacts) is None, "rolled back once: the rollback stands"
    store.close()


def test_a_version_as_good_live_stays_and_operator_moves_stand(artifacts: Path, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "autoroute.db")
    _live(store, MIDDLE, 0, 150, 0.6, seed=1, at=T0)
    _promoted(store, artifacts, NEW, MIDDLE, T0 + 1000)
    _live(store, NEW, 1000, 150, 0.9, seed=2, at=T0)
    comparison = live_comparison(store, artifacts)
    assert comparison is not None and comparison.sequential.decision == "stop: treatment better"
    assert check_rollback(store, artifacts) is None and current_version(artifacts, "learned") == NEW
    store.close()
    # A worse version an operator pinned is the operator's choice; a first promotion has nothing to go back to.
    store = SQLiteStore(tmp_path / "second.db")
    _live(store, MIDDLE, 0, 150, 0.85, seed=1, at=T0)
    _promoted(store, artifacts, NEW, MIDDLE, T0 + 1000)
    _live(store, NEW, 1000, 150, 0.2, seed=2, at=T0)
    pin(artifacts, store, NEW)
    assert live_comparison(store, artifacts) is None
    store.write_batch([LearningEvent(T0 + 5000, PROMOTION, "learned", NEW, "logging-policy", {}, "first")])
    assert live_comparison(store, artifacts) is None
    store.close()


def test_the_trainer_step_checks_for_a_rollback(artifacts: Path, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "autoroute.db")
    _live(store, MIDDLE, 0, 150, 0.85, seed=1, at=T0)
    _promoted(store, artifacts, NEW, MIDDLE, T0 + 1000)
    _live(store, NEW, 1000, 150, 0.2, seed=2, at=T0)
    registry = _registry()
    off = dataclasses.replace(registry, learning=dataclasses.replace(registry.learning, auto_rollback=False))
    loop = LearningLoop(lambda: off, store, artifacts, lambda: None)
    assert asyncio.run(loop.train_when_due()) is None and current_version(artifacts, "learned") == NEW
    loop = LearningLoop(lambda: registry, store, artifacts, lambda: None)
    asyncio.run(loop.train_when_due())
    assert loop.last_rollback is not None and current_version(artifacts, "learned") == MIDDLE
    store.close()
