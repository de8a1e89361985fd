"""Damaged learned state is moved aside (`*.corrupt`), reported, and serving goes on with what it replaced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router_plugins.classify import StaticEmbedder, static_embedding
from router_plugins.classify.assembly import ClassifierSources
from router_plugins.classify.model import MODEL_FILE
from router_plugins.classify.static_embedding import TABLE_FILE, TABLE_VERSION
from router_plugins.datadir import DataDir, quarantined, read_pointer, write_atomically
from router_plugins.thresholds import POINTER_FILE, load_tuned_thresholds


def _reported(path: Path) -> bool:
    return any(q["file"] == str(path) for q in quarantined())


def test_a_garbled_pointer_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "learned-current.json").write_text('{"artifact": ')
    assert read_pointer(tmp_path, "learned-current.json") is None
    assert (tmp_path / "learned-current.json.corrupt").read_text() == '{"artifact": '
    assert _reported(tmp_path / "learned-current.json")
    # A second damaged pointer does not overwrite the first one set aside.
    (tmp_path / "learned-current.json").write_text("[]")
    assert read_pointer(tmp_path, "learned-current.json") is None
    assert (tmp_path / "learned-current.json.corrupt.2").read_text() == "[]"


def test_damaged_thresholds_are_moved_aside_and_the_yaml_serves(tmp_path: Path) -> None:
    (tmp_path / "thresholds-x.json").write_text("{not json")
    (tmp_path / POINTER_FILE).write_text(json.dumps({"artifact": "thresholds-x.json", "version": "x"}))
    assert load_tuned_thresholds(tmp_path) is None
    assert (tmp_path / "thresholds-x.json.corrupt").exists() and _reported(tmp_path / "thresholds-x.json")
    assert load_tuned_thresholds(tmp_path) is None, "the dangling pointer is ignored from now on"


def test_a_damaged_task_model_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / MODEL_FILE).write_bytes(b"PK\x03\x04 truncated")
    assert ClassifierSources(tmp_path).task_model() is None
    assert (tmp_path / f"{MODEL_FILE}.corrupt").exists() and _reported(tmp_path / MODEL_FILE)


def test_a_damaged_static_table_is_moved_aside_and_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = DataDir(tmp_path).ensure()
    table = data.path(TABLE_FILE)
    table.write_bytes(b"half a table")
    built: list[Path] = []

    def build(path: Path) -> Path:  # the real distillation takes ~30 s: a one-token table in its format
        built.append(path)
        rows = np.ones((31000, 4), np.float16)
        return write_atomically(path, lambda h: np.savez(h, rows=rows, weights=np.ones(31000, np.float32),
                                                         version=np.array(TABLE_VERSION)))  # fmt: skip

    monkeypatch.setattr(static_embedding, "build_static_table", build)
    embedder = StaticEmbedder.load_or_build(data)
    assert built == [table] and embedder.rows.shape == (31000, 4)
    assert (tmp_path / "artifacts" / f"{TABLE_FILE}.corrupt").read_bytes() == b"half a table"
    assert _reported(table)
