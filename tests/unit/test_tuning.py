"""Classifier threshold tuning: evidence per layer, proposed thresholds, the versioned artifact and `autoroute tune`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from proxy.events import DecisionRecord, FeedbackRecord
from proxy.store import SQLiteStore
from proxy.tuning import current_thresholds, layer_events, save_thresholds, tune
from router_plugins.classify import build_classifier
from router_plugins.registry import LiteLLMParams, ModelEntry, Registry, TaskType
from router_plugins.thresholds import POINTER_FILE, apply_thresholds, load_tuned_thresholds

SORTING = TaskType("sorting", keywords=("sort", "order by", "quicksort"))
GREETING = TaskType("greeting", keywords=("hello", "good morning"))
CHAT = TaskType("chat")
CONFIG = "models:\n  - name: m\n    litellm_params: {model: openai/m}\n"


def attempt(layer: str, task: str | None, confidence: float, accepted: bool = False, **kw: Any) -> dict[str, Any]:
    return {"layer": layer, "task": task, "confidence": confidence, "threshold": 0.5, "accepted": accepted,
            "latency_ms": 0.1, "detail": kw.get("detail", "")}  # fmt: skip


def row(attempts: list[dict[str, Any]], task: str, layer: str, feedback: str | None = None) -> dict[str, Any]:
    return {"request_id": "r", "task": task, "classification_layer": layer, "layer_attempts": attempts,
            "feedback_task": feedback}  # fmt: skip


def graded_rows() -> list[dict[str, Any]]:
    """Keyword attempts judged by feedback: 10 right at 0.9, 10 right at 0.7, 9 of 10 right at 0.5, 5 of 10 at
    0.3, and 5 with no task. At 30+ judged events, precision >= 0.9 holds down to 0.5 (29/30), not 0.3 (34/40)."""
    rows = []
    for confidence, right in [(0.9, 10), (0.7, 10), (0.5, 9), (0.3, 5)]:
        for i in range(10):
            truth = "sorting" if i < right else "greeting"
            accepted = confidence >= 0.55
            rows.append(row([attempt("keywords", "sorting", confidence, accepted)], "sorting", "keywords", truth))
    rows += [row([attempt("keywords", None, 0.0)], "chat", "fallback", "greeting") for _ in range(5)]
    return rows


CURRENT = {"keywords": 0.55, "static_embedding": 0.85}


# -- evidence and proposals ----------------------------------------------------------------------------------------


def test_counts_and_proposed_threshold_on_known_answers() -> None:
    report = tune(graded_rows(), CURRENT, target_precision=0.9, min_events=30)
    keywords = report.layers[0]

    assert (keywords.layer, keywords.current) == ("keywords", 0.55)
    assert (keywords.events, keywords.above, keywords.below) == (45, 20, 25)
    assert keywords.below_but_right == 14, "9 at 0.5 and 5 at 0.3; the task-less attempts are never right"
    assert keywords.above_but_wrong == 0
    assert keywords.precision == 1.0 and keywords.coverage == pytest.approx(20 / 45)
    assert keywords.tuned and keywords.proposed == pytest.approx(0.4), "halfway between 0.5 and the next lower 0.3"
    assert keywords.proposed_precision == pytest.approx(29 / 30)
    assert keywords.proposed_coverage == pytest.approx(30 / 45)
    assert (keywords.truth_feedback, keywords.truth_later_layer) == (45, 0)
    assert report.thresholds() == {"keywords": pytest.approx(0.4)}, "static_embedding has no evidence: kept"
    assert report.layers[1].events == 0 and not report.layers[1].tuned and report.layers[1].proposed == 0.85


def test_a_threshold_too_low_is_raised() -> None:
    report = tune(graded_rows(), {"keywords": 0.2}, target_precision=0.9, min_events=30)
    (keywords,) = report.layers

    assert (keywords.above, keywords.below, keywords.above_but_wrong, keywords.below_but_right) == (40, 5, 6, 0)
    assert keywords.precision == pytest.approx(34 / 40)
    assert keywords.proposed == pytest.approx(0.4)


def test_a_stricter_target_or_fewer_events_needed_move_the_proposal() -> None:
    strict = tune(graded_rows(), CURRENT, target_precision=1.0, min_events=20).layers[0]
    assert strict.proposed == pytest.approx(0.6), "20 right at 0.7 and above; halfway to 0.5"
    few = tune(graded_rows(), CURRENT, target_precision=1.0, min_events=10).layers[0]
    assert few.proposed == pytest.approx(0.6), "the lowest qualifying threshold wins, not the first found"


def test_too_few_events_keep_the_current_threshold() -> None:
    keywords = tune(graded_rows()[:20], CURRENT, min_events=30).layers[0]

    assert not keywords.tuned and keywords.proposed == 0.55
    assert "20 judged events" in keywords.reason and "30" in keywords.reason


def test_no_threshold_precise_enough_keeps_the_current_one() -> None:
    rows = [row([attempt("keywords", "sorting", 0.6 + i / 100)], "sorting", "keywords", "greeting") for i in range(30)]
    keywords = tune(rows, CURRENT, min_events=30).layers[0]

    assert not keywords.tuned and keywords.proposed == 0.55
    assert "no threshold reaches precision 0.9" in keywords.reason
    assert keywords.above_but_wrong == 30


def test_proposals_stay_in_the_unit_interval() -> None:
    top = [row([attempt("keywords", "sorting", 1.0, True)], "sorting", "keywords", "sorting") for _ in range(30)]
    assert tune(top, CURRENT, min_events=30).layers[0].proposed == 1.0
    bottom = [row([attempt("keywords", "sorting", 0.0)], "chat", "fallback", "sorting") for _ in range(30)]
    assert tune(bottom, CURRENT, min_events=30).layers[0].proposed == 0.0
    with pytest.raises(ValueError, match="target precision"):
        tune(top, CURRENT, target_precision=1.5)
    with pytest.raises(ValueError, match="minimum number"):
        tune(top, CURRENT, min_events=0)


def test_truth_sources_feedback_later_layer_and_none() -> None:
    skipped = attempt("transformer_knn", None, 0.0, detail="skipped: no embedding given")
    rows = [
        # keywords passed, static_embedding accepted: keywords is judged by the later layer's task
        row([attempt("keywords", "greeting", 0.4), attempt("static_embedding", "sorting", 0.9, True)],
            "sorting", "static_embedding"),
        # the same, but feedback named the task: feedback wins, and judges the accepting layer too
        row([attempt("keywords", "sorting", 0.4), attempt("static_embedding", "greeting", 0.9, True)],
            "greeting", "static_embedding", feedback="sorting"),
        # the fallback decided: nothing judges the layers; skipped and fallback attempts are no events
        row([attempt("keywords", "sorting", 0.2), attempt("static_embedding", "math", 0.3), skipped,
             attempt("fallback", "chat", 0.0, True)], "chat", "fallback"),
    ]  # fmt: skip
    events = layer_events(rows)

    assert [(e.layer, e.truth, e.source) for e in events] == [
        ("keywords", "sorting", "later_layer"), ("static_embedding", None, None),
        ("keywords", "sorting", "feedback"), ("static_embedding", "sorting", "feedback"),
        ("keywords", None, None), ("static_embedding", None, None),
    ]  # fmt: skip
    assert [e.source for e in layer_events(rows, truth="feedback") if e.judged] == ["feedback", "feedback"]
    report = tune(rows, CURRENT, min_events=1)
    assert report.truth_sources == {"feedback": 2, "later_layer": 1}
    keywords, static = report.layers
    assert (keywords.events, keywords.judged, keywords.below_but_right) == (3, 2, 1)
    assert (static.events, static.above, static.above_but_wrong) == (3, 2, 1)
    assert tune(rows, CURRENT, min_events=1, truth="feedback").truth_sources == {"feedback": 2, "later_layer": 0}


def test_malformed_attempts_are_skipped() -> None:
    malformed: list[Any] = [{"layer": "rules", "matched": False}, {"score": 0.8}, "x"]
    rows = [row(malformed, "code", "embedding")]
    assert [e.layer for e in layer_events(rows)] == ["rules"]
    assert tune(rows, CURRENT).layers[0].events == 0


# -- the registry and the artifact -------------------------------------------------------------------------------


def registry() -> Registry:
    return Registry(models=(ModelEntry("m", LiteLLMParams("openai/m")),), tasks=(SORTING, GREETING, CHAT))


def test_apply_thresholds_changes_what_the_cascade_decides() -> None:
    base = registry()
    tuned = apply_thresholds(base, {"keywords": 0.7, "no_such_layer": 0.1})
    prompt = "Please sort this list"  # one keyword: confidence 1 - 1/e ≈ 0.632

    assert current_thresholds(tuned) == {**current_thresholds(base), "keywords": 0.7}
    assert base.router.classifier.keywords.level == 0.55, "the given registry is left as it was"
    before = build_classifier(base, None).classify(prompt)
    after = build_classifier(tuned, None).classify(prompt)
    assert (before.task, before.layer) == ("sorting", "keywords")
    assert (after.task, after.layer, after.needs_clarification) == ("chat", "fallback", True)
    assert apply_thresholds(base, {}) is base
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apply_thresholds(base, {"keywords": 1.5})


def test_save_then_load_thresholds(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    assert load_tuned_thresholds(artifacts) is None
    report = tune(graded_rows(), CURRENT, min_events=30)
    first = save_thresholds(artifacts, report, previous={"static_embedding": 0.7, "torch_head": 0.3})

    data = json.loads(first.read_text())
    assert first.name == f"thresholds-{data['version']}.json" and data["format"] == "autoroute-thresholds-v1"
    assert data["evidence"]["keywords"]["below_but_right"] == 14 and data["created_at"] > 0
    assert json.loads((artifacts / POINTER_FILE).read_text())["artifact"] == first.name
    assert load_tuned_thresholds(artifacts) == {"static_embedding": 0.7, "torch_head": 0.3, "keywords": 0.4}
    second = save_thresholds(artifacts, report)
    assert second != first and first.exists(), "each run is a new version; the old one stays"
    assert load_tuned_thresholds(artifacts) == {"keywords": 0.4}
    assert not list(artifacts.glob("*.tmp"))


def test_unreadable_tuned_thresholds_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tmp_path.joinpath(POINTER_FILE).write_text(json.dumps({"artifact": "../elsewhere.json"}))
    with caplog.at_level(logging.WARNING, logger="proxy.tuning"):
        assert load_tuned_thresholds(tmp_path) is None
    assert "not a file beside it" in caplog.text
    values = {"keywords": 2.0, "torch_head": 0.3, "static_embedding": True}
    artifact = {"format": "autoroute-thresholds-v1", "thresholds": values}
    tmp_path.joinpath("thresholds-x.json").write_text(json.dumps(artifact))
    tmp_path.joinpath(POINTER_FILE).write_text(json.dumps({"artifact": "thresholds-x.json"}))
    assert load_tuned_thresholds(tmp_path) == {"torch_head": 0.3}
    tmp_path.joinpath("thresholds-x.json").write_text("{not json")
    assert load_tuned_thresholds(tmp_path) is None


# -- the store ------------------------------------------------------------------------------------------------------


def decision(
    request_id: str, created_at: float, attempts: list[dict[str, Any]], task: str, layer: str
) -> DecisionRecord:
    return DecisionRecord(
        request_id=request_id, created_at=created_at, requested_model="auto", preference="balanced", task=task,
        task_confidence=0.5, classification_layer=layer, needs_clarification=layer == "fallback",
        layer_attempts=attempts, selected_model="m", routed_model="m", selection_reason="", alternatives=[],
        router_name="static-rules", router_version="1", propensity=1.0, stream=False, status="success", attempts=1,
        prompt_chars=10, prompt_text="p",
    )  # fmt: skip


def test_store_tuning_events(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "autoroute.db")
    try:
        store.write_batch([
            decision("a", 100.0, [attempt("keywords", "sorting", 0.7, True)], "sorting", "keywords"),
            FeedbackRecord("a", 101.0, None, extra={"task": "greeting"}),
            FeedbackRecord("a", 102.0, None, extra={"task": "math"}),
            FeedbackRecord("a", 103.0, 0.9),
            decision("b", 200.0, [attempt("keywords", None, 0.0)], "chat", "fallback"),
            FeedbackRecord("b", 201.0, 0.2, extra={"note": "no task"}),
            decision("c", 300.0, [], "chat", "fallback"),
        ])  # fmt: skip
        rows = store.tuning_events()
        assert [r["request_id"] for r in rows] == ["c", "b", "a"], "newest first"
        assert rows[2] == {"request_id": "a", "task": "sorting", "classification_layer": "keywords",
                           "layer_attempts": [attempt("keywords", "sorting", 0.7, True)],
                           "feedback_task": "math"}, "the newest feedback naming a task wins"  # fmt: skip
        assert rows[1]["feedback_task"] is None and rows[0]["layer_attempts"] == []
        assert [r["request_id"] for r in store.tuning_events(since=200.0)] == ["c", "b"]
        assert [r["request_id"] for r in store.tuning_events(limit=1)] == ["c"]
    finally:
        store.close()


# -- the command ------------------------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    records: list[DecisionRecord | FeedbackRecord] = []
    for i, r in enumerate(graded_rows()):
        rid = f"r{i}"
        records.append(decision(rid, 1000.0 + i, r["layer_attempts"], r["task"], r["classification_layer"]))
        records.append(FeedbackRecord(rid, 2000.0 + i, None, extra={"task": r["feedback_task"]}))
    store = SQLiteStore(tmp_path / "data" / "autoroute.db")
    store.write_batch(records)
    store.close()
    (tmp_path / "config.yaml").write_text(CONFIG)
    return tmp_path / "data"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_tune_dry_run_writes_nothing(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifacts = data_dir / "artifacts"
    artifacts.mkdir()
    (artifacts / "other.bin").write_bytes(b"x")
    before = snapshot(artifacts)
    config = str(data_dir.parent / "config.yaml")

    assert main(["tune", "--dry-run", "--config", config, "--data-dir", str(data_dir)]) == 0

    out = capsys.readouterr().out
    assert snapshot(artifacts) == before
    header, keywords = out.splitlines()[:2]
    assert header.split() == ["layer", "current", "events", "below", "above", "below-but-right", "above-but-wrong",
                              "proposed"]  # fmt: skip
    assert keywords.split() == ["keywords", "0.55", "(config)", "45", "25", "20", "14", "0", "0.4"]
    assert "static_embedding" in out and "(kept)" in out and "dry run" in out
    assert load_tuned_thresholds(artifacts) is None


def test_tune_without_data_writes_nothing_in_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    config, data = str(tmp_path / "config.yaml"), str(tmp_path / "d")
    assert main(["tune", "--dry-run", "--config", config, "--data-dir", data]) == 0
    assert not (tmp_path / "d").exists(), "no store is created"
    assert "0 decisions" in capsys.readouterr().out


def test_tune_writes_a_version_the_gateway_loads(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(data_dir.parent / "config.yaml")
    report = data_dir.parent / "out" / "tune.json"

    assert main(["tune", "--config", config, "--data-dir", str(data_dir), "--json", str(report)]) == 0

    out = capsys.readouterr().out
    (written,) = (data_dir / "artifacts").glob("thresholds-2*.json")
    assert f"wrote {written}" in out
    assert load_tuned_thresholds(data_dir / "artifacts") == {"keywords": 0.4}
    assert json.loads(report.read_text())["layers"]["keywords"]["proposed"] == 0.4
    tuned = apply_thresholds(registry(), load_tuned_thresholds(data_dir / "artifacts") or {})
    assert build_classifier(tuned, None).classify("sort it").task == "sorting"

    # The next run starts from the tuned threshold, and --truth feedback counts only explicit labels.
    assert main(["tune", "--dry-run", "--config", config, "--data-dir", str(data_dir), "--truth", "feedback",
                 "--target-precision", "1.0", "--min-events", "20"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:6] == ["keywords", "0.4", "(tuned)", "45", "15", "30"]
    assert out.splitlines()[1].split()[-1] == "0.6"
    assert "feedback 45, later layer 0 (--truth feedback)" in out


def test_tune_since_leaves_older_decisions_out(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(data_dir.parent / "config.yaml")
    # graded_rows()' decisions were made at 1000 + i: from 1040 on, only the 5 task-less attempts remain.
    assert main(["tune", "--dry-run", "--config", config, "--data-dir", str(data_dir), "--since", "1040"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:6] == ["keywords", "0.55", "(config)", "5", "5", "0"]
    assert "5 decisions" in out
    assert main(["tune", "--dry-run", "--config", config, "--data-dir", str(data_dir), "--since", "2030-01-01"]) == 0
    assert "0 decisions" in capsys.readouterr().out


def test_tune_rejects_bad_arguments(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(data_dir.parent / "config.yaml")
    assert main(["tune", "--config", config, "--data-dir", str(data_dir), "--since", "yesterday"]) == 2
    assert main(["tune", "--config", config, "--data-dir", str(data_dir), "--target-precision", "0"]) == 2
    assert "target precision" in capsys.readouterr().err
    assert not (data_dir / "artifacts").exists()
