"""`autoroute eval tasks` scores the cascade a gateway on the same config and data directory serves.

The repo's config.yaml with its data directory moved to tmp_path: the shipped text model serves, no transformer
(AUTOROUTE_DEVICE=cpu, no budget), no static table built.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from proxy.cli import main
from proxy.evaluation.tasks import evaluate_tasks, served_classifier
from proxy.events import DecisionRecord, FeedbackRecord
from proxy.store import open_store
from router_plugins.classify.assembly import transformer_inline
from router_plugins.classify.static_embedding import TABLE_FILE
from router_plugins.datadir import DataDir
from router_plugins.language import detect_language
from router_plugins.registry import parse_registry
from router_plugins.thresholds import POINTER_FILE as THRESHOLDS_POINTER

REPO = Path(__file__).parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "classifier" / "served_prompts.jsonl"
RECORDS = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
KEYS = {"n", "accuracy", "per_label", "confusion", "layers", "latency_ms", "per_language", "needed_embedding"}


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOROUTE_DEVICE", "cpu")
    settings = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    settings["storage"]["data_dir"] = str(tmp_path / "data")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def accuracy(records: list[dict[str, object]], config: Path, data_dir: Path | None = None) -> float:
    classifier = served_classifier(config, data_dir)
    right = [classifier.classify(str(r["text"])).task in r["accept"] for r in records]  # type: ignore[operator]
    return sum(right) / len(records)


def test_the_fixture_is_labelled_and_its_languages_detected() -> None:
    assert len(RECORDS) == 14 and len({r["text"] for r in RECORDS}) == 14
    assert [detect_language(r["text"]) for r in RECORDS] == [r["language"] for r in RECORDS]


def test_cli_reports_every_key_and_the_served_classifiers_accuracy(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"

    assert main(["eval", "tasks", "--test", str(FIXTURE), "--config", str(config), "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    assert set(report) == KEYS and report["n"] == len(RECORDS)
    assert report["accuracy"] == pytest.approx(accuracy(RECORDS, config))
    languages = {r["language"] for r in RECORDS}
    assert set(report["per_language"]) == languages
    for language, row in report["per_language"].items():
        mine = [r for r in RECORDS if r["language"] == language]
        assert set(row) == {"support", "accuracy"} and row["support"] == len(mine)
    assert sum(r["support"] * r["accuracy"] for r in report["per_language"].values()) == pytest.approx(
        report["accuracy"] * len(RECORDS)
    )
    assert set(report["layers"]) <= {"text_model", "fallback"} and report["needed_embedding"] == 0.0
    assert sum(row["support"] for row in report["per_label"].values()) == len(RECORDS)
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    assert not DataDir(tmp_path / "data").path(TABLE_FILE).exists(), "no static table while the text model serves"


def test_feedback_in_the_data_dir_corrects_what_eval_scores(config: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "elsewhere"
    data_dir.mkdir()
    wrong = {**RECORDS[0], "accept": ["chat"]}  # a coding prompt the fixture says is chat: only feedback gets it
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in [wrong, *RECORDS[1:]]), encoding="utf-8")
    before = evaluate_tasks(test, config, data_dir)
    store = open_store(str(DataDir(data_dir).db))
    store.write_batch([decision("r1", str(wrong["text"])), FeedbackRecord("r1", 2.0, None, extra={"task": "chat"})])
    store.close()

    after = evaluate_tasks(test, config, data_dir)
    out = tmp_path / "report.json"
    assert main(["eval", "tasks", "--test", str(test), "--config", str(config), "--data-dir", str(data_dir),
                 "--json", str(out)]) == 0  # fmt: skip

    assert after["accuracy"] == pytest.approx(before["accuracy"] + 1 / len(RECORDS))
    assert after["layers"]["corrections"] == {"share": pytest.approx(1 / len(RECORDS)), "accuracy": 1.0}
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(after["accuracy"])
    assert set(after["layers"]) - {"fallback"} == {"corrections", "text_model"}


def test_the_tuned_thresholds_in_the_data_dir_are_scored(config: Path, tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data").ensure()
    assert {served_classifier(config).classify(str(r["text"])).layer for r in RECORDS} >= {"text_model"}
    artifact = data.path("thresholds-x.json")
    artifact.write_text(json.dumps({"format": "autoroute-thresholds-v1", "thresholds": {"text_model": 1.0}}))
    data.write_pointer(THRESHOLDS_POINTER, artifact, "x")

    assert {served_classifier(config).classify(str(r["text"])).layer for r in RECORDS} == {"fallback"}


@pytest.mark.parametrize(
    ("classifier", "device", "inline"),
    [
        ("{}", "cuda", True),
        ("{}", "cuda:1", True),
        ("{}", "cpu", False),
        ("{transformer_budget_ms: 20}", "cpu", True),
        ("{torch_head: {enabled: false}}", "cuda", True),
        ("{transformer_knn: {enabled: false}, torch_head: {enabled: false}}", "cuda", False),
        ("{transformer_knn: {enabled: false}, torch_head: {enabled: false}, transformer_budget_ms: 20}", "cpu", False),
    ],
)
def test_transformer_layers_are_inline_on_a_gpu_or_with_a_budget(classifier: str, device: str, inline: bool) -> None:
    registry = parse_registry(
        "models:\n  - {name: m, litellm_params: {model: openai/m}}\ntasks:\n  - {name: chat}\n"
        f"router: {{classifier: {classifier}}}\n"
    )

    assert transformer_inline(registry.router.classifier, device) is inline


def decision(request_id: str, prompt: str) -> DecisionRecord:
    return DecisionRecord(
        request_id=request_id, created_at=1.0, requested_model="auto", preference="balanced", task="coding",
        task_confidence=0.9, classification_layer="text_model", needs_clarification=False, layer_attempts=[],
        selected_model="m", routed_model="m", selection_reason="", alternatives=[], router_name="r",
        router_version="1", propensity=1.0, stream=False, status="success", attempts=1, prompt_chars=len(prompt),
        prompt_text=prompt,
    )  # fmt: skip
