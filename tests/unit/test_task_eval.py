"""`autoroute eval tasks`: accuracy with accepted alternatives, precision/recall, confusion, layers, latency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.evaluation.tasks import score_classifier
from router_plugins.classify import build_classifier
from router_plugins.registry import parse_registry

CONFIG = """
models:
  - {name: m, litellm_params: {model: openai/m}}
tasks:
  - {name: coding, keywords: [python, function]}
  - {name: math, keywords: [solve, integral]}
  - {name: chat, keywords: [hello]}
router:
  fallback_task: chat
  classifier: {static_embedding: {enabled: false}, keywords: {threshold: 0.5}}
"""
RECORDS = [
    {"text": "write a python function", "task": "coding", "accept": ["coding"]},
    {"text": "solve this integral", "task": "math", "accept": ["math"]},
    {"text": "a python function to solve sudoku", "task": "coding", "accept": ["coding", "math"]},
    {"text": "hello there", "task": "chat", "accept": ["chat"]},
    {"text": "what is the capital of France", "task": "knowledge", "accept": ["knowledge"]},
]


def test_scores_against_accepted_labels() -> None:
    classifier = build_classifier(parse_registry(CONFIG), None)
    report = score_classifier(classifier, RECORDS)
    # Prompt 3: coding=2 vs math=1 gives confidence (1 - e^-2) × 1/2 = .43 < .5 → fallback chat, not accepted.
    # Prompt 5 has no keyword → fallback chat (wrong). Right: prompts 1, 2, 4.
    assert report["n"] == 5 and report["accuracy"] == pytest.approx(3 / 5)
    assert report["confusion"]["knowledge"] == {"chat": 1} and report["confusion"]["coding"] == {"coding": 1, "chat": 1}
    assert report["per_label"]["chat"] == {"support": 1, "recall": 1.0, "precision": pytest.approx(1 / 3)}
    assert report["per_label"]["knowledge"]["recall"] == 0.0 and report["per_label"]["knowledge"]["precision"] is None
    assert report["layers"]["keywords"] == {"share": pytest.approx(3 / 5), "accuracy": 1.0}
    assert report["layers"]["fallback"] == {"share": pytest.approx(2 / 5), "accuracy": 0.0}
    assert 0 <= report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, data, out = tmp_path / "c.yaml", tmp_path / "t.jsonl", tmp_path / "r.json"
    config.write_text(CONFIG)
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert main(["eval", "tasks", "--test", str(data), "--config", str(config), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(0.6)
    assert "accuracy 0.600" in capsys.readouterr().out
