"""Every command works in the data directory `autoroute serve` on the same config uses, unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.datadir import resolve_data_dir
from router_plugins.classify.text_model import ARTIFACT_FILE, TextModel

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


def test_the_config_names_the_data_dir_relative_to_the_working_directory(config: Path, tmp_path: Path) -> None:
    assert resolve_data_dir(config) == tmp_path / "demo-data"
    assert resolve_data_dir(config, tmp_path / "other") == tmp_path / "other"
    assert resolve_data_dir(config, "~") == Path.home()


def test_train_classifier_writes_into_the_configs_data_dir_by_default(config: Path, tmp_path: Path) -> None:
    labelled = tmp_path / "labelled.jsonl"
    rows = [{"text": f"what is {i} times {i + 1}", "task": "math"} for i in range(20)]
    rows += [{"text": f"hey, nice weather on day {i}", "task": "chat"} for i in range(20)]
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert main(["train-classifier", "--config", str(config), "--labelled", str(labelled), "--no-transformer"]) == 0

    model = TextModel.load(tmp_path / "demo-data" / "artifacts" / ARTIFACT_FILE)
    assert set(model.tasks) == {"chat", "math"}
    assert not (tmp_path / "autoroute-data").exists(), "nothing lands in the default data dir of another config"
