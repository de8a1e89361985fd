"""One owner of the data directory: its layout, the one atomic write, the pointers to current artifacts, and which
directory every command works in (the one `autoroute serve` on the same config uses, unless `--data-dir` says)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import build_parser, main
from router_plugins.classify.text_model import ARTIFACT_FILE, TextModel
from router_plugins.datadir import DataDir, write_atomically
from router_plugins.registry import load_registry
from router_plugins.routers.learned import POINTER_FILE as LEARNED_POINTER
from router_plugins.routers.learned import current_artifact
from router_plugins.thresholds import POINTER_FILE as THRESHOLDS_POINTER
from router_plugins.thresholds import load_tuned_thresholds

CONFIG = """\
models:
  - {name: m, litellm_params: {model: openai/m}}
tasks:
  - {name: chat, description: Small talk and greetings., examples: [hi there, how are you today, good morning friend]}
  - {name: math, description: Arithmetic and algebra., examples: [what is 2 + 2, solve x + 3 = 5, integrate x squared]}
router: {fallback_task: chat}
storage: {data_dir: %s}
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "demo.yaml"
    path.write_text(CONFIG % "demo-data")
    return path


# -- layout and resolution ------------------------------------------------------------------------------------------


def test_the_layout_of_a_data_dir(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "d")
    assert (data.db, data.artifacts, data.cache) == (tmp_path / "d/autoroute.db", tmp_path / "d/artifacts",
                                                     tmp_path / "d/cache")  # fmt: skip
    assert data.path("x.npz") == tmp_path / "d/artifacts/x.npz"
    assert not data.root.exists() and data.ensure().artifacts.is_dir()
    assert DataDir.of(data) is data and DataDir.of(str(tmp_path / "d")) == data


def test_the_config_names_the_data_dir_relative_to_the_working_directory(config: Path, tmp_path: Path) -> None:
    assert DataDir.resolve(config).root == tmp_path / "demo-data"
    assert DataDir.resolve(load_registry(config)).root == tmp_path / "demo-data", "a loaded registry alike"
    Path("config.yaml").write_text(CONFIG % "default-data")
    assert DataDir.resolve(None).root == tmp_path / "default-data", "no config: config.yaml"
    assert DataDir(Path("rel")).root == tmp_path / "rel"


def test_the_override_beats_the_config(config: Path, tmp_path: Path) -> None:
    assert DataDir.resolve(config, tmp_path / "other").root == tmp_path / "other"
    assert DataDir.resolve(config, "other").root == tmp_path / "other", "relative to the working directory"
    assert DataDir.resolve(config, "~").root == Path.home()
    assert DataDir.resolve(tmp_path / "missing.yaml", "x").root == tmp_path / "x", "the config is not even read"


# -- the one atomic write ---------------------------------------------------------------------------------------------


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    write_atomically(target, lambda handle: handle.write(b"old"))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644, "readable by a gateway running as another user"

    def half_then_fail(handle: Any) -> None:
        handle.write(b"new but incompl")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


# -- pointers ---------------------------------------------------------------------------------------------------------


def test_a_pointer_round_trip(tmp_path: Path) -> None:
    data = DataDir(tmp_path).ensure()
    first = data.write_atomically(data.path("thing-1.bin"), lambda handle: handle.write(b"1"))
    assert data.read_pointer("thing-current.json") is None, "no pointer yet"
    data.write_pointer("thing-current.json", first, "1", trained_on=3)
    assert data.read_pointer("thing-current.json") == first
    on_disk = json.loads(data.path("thing-current.json").read_text())
    assert on_disk == {"artifact": "thing-1.bin", "version": "1", "trained_on": 3}
    with pytest.raises(ValueError, match="beside it"):
        data.write_pointer("thing-current.json", tmp_path / "elsewhere.bin", "2")


@pytest.mark.parametrize(
    "text",
    ["{not json", "[1, 2]", '"a string"', '{"version": "1"}', '{"artifact": "../escape.bin"}', '{"artifact": 7}',
     b"\xff\xfe".decode("latin-1")],
)  # fmt: skip
def test_a_garbled_pointer_is_none_with_a_warning(tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture) -> None:
    data = DataDir(tmp_path).ensure()
    data.path("thing-current.json").write_text(text, encoding="latin-1")
    with caplog.at_level(logging.WARNING, logger="router_plugins.datadir"):
        assert data.read_pointer("thing-current.json") is None
    assert "thing-current.json" in caplog.text


def test_a_dangling_pointer_is_none_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = DataDir(tmp_path).ensure()
    gone = data.write_atomically(data.path("thing-1.bin"), lambda handle: handle.write(b"1"))
    data.write_pointer("thing-current.json", gone, "1")
    gone.unlink()
    with caplog.at_level(logging.WARNING, logger="router_plugins.datadir"):
        assert data.read_pointer("thing-current.json") is None
    assert "does not exist" in caplog.text


def test_pointers_written_by_older_versions_still_load(tmp_path: Path) -> None:
    """The pointer files' names and format on disk are unchanged: old data directories keep loading."""
    data = DataDir(tmp_path).ensure()
    data.path("learned-v1.npz").write_bytes(b"")
    data.path(LEARNED_POINTER).write_text(json.dumps({"artifact": "learned-v1.npz", "version": "v1"}))
    assert LEARNED_POINTER == "learned-current.json" and current_artifact(data.artifacts) == data.path("learned-v1.npz")
    thresholds = {"format": "autoroute-thresholds-v1", "version": "v1", "thresholds": {"keywords": 0.4}}
    data.path("thresholds-v1.json").write_text(json.dumps(thresholds))
    data.path(THRESHOLDS_POINTER).write_text(json.dumps({"artifact": "thresholds-v1.json", "version": "v1"}))
    assert THRESHOLDS_POINTER == "thresholds-current.json"
    assert load_tuned_thresholds(data.artifacts) == {"keywords": 0.4}


# -- every command works in the config's data directory ---------------------------------------------------------------


class Reached(Exception):
    """Raised by a stand-in for a command's heavy work, carrying the data directory it was given."""

    def __init__(self, root: Path) -> None:
        self.root = root


def _raise(root: Callable[..., Path]) -> Callable[..., Any]:
    def stand_in(*args: Any, **kwargs: Any) -> Any:
        raise Reached(root(*args, **kwargs))

    return stand_in


def _serve(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import proxy.app

    def create_app(settings: proxy.app.AppSettings) -> None:
        raise Reached(proxy.app.data_dir_for(load_registry(settings.config_path), settings).root)

    monkeypatch.setattr(proxy.app, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("not reached"))


def _train(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.training

    monkeypatch.setattr(proxy.training, "train", _raise(lambda config, files, data_dir, *a: DataDir.of(data_dir).root))


def _train_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.training

    stand_in = _raise(lambda config, files, data_dir, **k: DataDir.of(data_dir).root)
    monkeypatch.setattr(proxy.training, "train_classifier", stand_in)


def _build_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    import router_plugins.classify.static_embedding as static_embedding

    monkeypatch.setattr(static_embedding, "build_static_table", _raise(lambda path: path.parent.parent))


def _tune(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.tuning

    monkeypatch.setattr(proxy.tuning, "read_events", _raise(lambda storage, data, since: data.root))


def _report_ab(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.store import SQLiteStore

    monkeypatch.setattr(SQLiteStore, "ab_outcomes", _raise(lambda store, since: store.path.parent))


def _window_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.store import SQLiteStore

    monkeypatch.setattr(SQLiteStore, "window_decisions", _raise(lambda store, *a: store.path.parent))


def _feedback(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.store import SQLiteStore

    monkeypatch.setattr(SQLiteStore, "decision_exists", _raise(lambda store, request_id: store.path.parent))


def _eval_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import router_plugins.outcomes
    from router_plugins.classify import StaticEmbedder

    monkeypatch.setattr(router_plugins.outcomes, "load_outcomes", lambda *a: None)
    monkeypatch.setattr(StaticEmbedder, "load_or_build", staticmethod(_raise(lambda data_dir: data_dir.root)))


def _eval_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.evaluation.tasks

    stand_in = _raise(lambda test, config, data_dir: DataDir.of(data_dir).root)
    monkeypatch.setattr(proxy.evaluation.tasks, "evaluate_tasks", stand_in)


def _router_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.versions

    for name in ("list_versions", "pin", "rollback"):
        monkeypatch.setattr(proxy.versions, name, _raise(lambda artifacts, *a: artifacts.parent))


COMMANDS: dict[str, tuple[list[str], Callable[[pytest.MonkeyPatch], None]]] = {
    "serve": (["serve"], _serve),
    "train": (["train"], _train),
    "train-classifier": (["train-classifier"], _train_classifier),
    "build-embeddings": (["build-embeddings"], _build_embeddings),
    "tune": (["tune", "--dry-run"], _tune),
    "report ab": (["report", "ab"], _report_ab),
    "report": (["report", "--html", "report.html"], _window_reads),
    "top": (["top"], _window_reads),
    "feedback": (["feedback", "req-1", "--score", "1"], _feedback),
    "eval offline": (
        ["eval", "offline", "--train", "t", "--test", "t", "--router", "static-rules", "--tasks", "dataset"],
        _eval_offline,
    ),
    "eval tasks": (["eval", "tasks", "--test", "t.jsonl"], _eval_tasks),
    "router list": (["router", "list"], _router_versions),
    "router pin": (["router", "pin", "v1"], _router_versions),
    "router rollback": (["router", "rollback"], _router_versions),
}


def _commands_with_a_data_dir(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    found = {prefix} if any(a.dest == "data_dir" for a in parser._actions) else set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _commands_with_a_data_dir(sub, f"{prefix} {name}".strip())
    return found


def test_every_command_with_a_data_dir_is_tested() -> None:
    assert _commands_with_a_data_dir(build_parser()) == set(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("override", [None, "other"])
def test_every_command_works_in_the_configs_data_dir_unless_told(
    command: str, override: str | None, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, stand_in = COMMANDS[command]
    stand_in(monkeypatch)
    for root in (tmp_path / "demo-data", tmp_path / "other"):  # `report ab` opens only a store that exists
        DataDir(root).ensure().db.touch()
    with pytest.raises(Reached) as reached:
        main([*argv, "--config", str(config), *(["--data-dir", override] if override else [])])
    assert reached.value.root == tmp_path / (override or "demo-data")


def test_train_classifier_writes_into_the_configs_data_dir_by_default(config: Path, tmp_path: Path) -> None:
    labelled = tmp_path / "labelled.jsonl"
    rows = [{"text": f"what is {i} times {i + 1}", "task": "math"} for i in range(20)]
    rows += [{"text": f"hey, nice weather on day {i}", "task": "chat"} for i in range(20)]
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert main(["train-classifier", "--config", str(config), "--labelled", str(labelled), "--no-transformer"]) == 0

    model = TextModel.load(DataDir(tmp_path / "demo-data").path(ARTIFACT_FILE))
    assert set(model.tasks) == {"chat", "math"}
    assert not (tmp_path / "autoroute-data").exists(), "nothing lands in the default data dir of another config"
