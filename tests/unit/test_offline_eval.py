"""The offline harness end to end on a hand-made set: exact report values, the CLI, the plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from proxy.cli import main
from proxy.evaluation.offline import evaluate_cv, evaluate_split, fit_router, predict, with_classifier_tasks
from router_plugins.classify import LayerVerdict, TaskClassifier
from router_plugins.datadir import DataDir
from router_plugins.outcomes import OutcomeSet, kfold_indices, load_outcomes
from router_plugins.routers import Prediction, PromptBatch, RouterTable
from router_plugins.routers.predictive import BestSingleRouter

FIXTURES = Path(__file__).parent.parent / "fixtures" / "outcomes"


@pytest.fixture(scope="module")
def train() -> OutcomeSet:
    return load_outcomes(FIXTURES / "train.jsonl")


@pytest.fixture(scope="module")
def test_set() -> OutcomeSet:
    return load_outcomes(FIXTURES / "test.jsonl")


def test_loading(train: OutcomeSet) -> None:
    assert train.models == ["big", "mid", "small"] and len(train) == 6
    assert train.tasks[:3] == ["coding", "coding", "math"]
    assert train.quality[4].tolist() == [0.8, 0.6, 0.5]
    assert train.cost[0].tolist() == [0.03, 0.003, 0.0002]
    assert train.texts[0] == "Write a Python function that reverses a string."


def test_static_rules_report_matches_the_hand_computation(train: OutcomeSet, test_set: OutcomeSet) -> None:
    report = evaluate_split("static-rules", train, test_set)
    # Train means: big .8, mid .7, small .467 → best single is big; on test big scores .75 at .03.
    assert report["best_single"] == {"model": "big", "quality": 0.75, "cost": 0.03}
    # Oracle: s1 mid (tie, cheaper), s2 small (tie), s3 big, s4 mid → quality 1, cost (.003+.0002+.03+.003)/4.
    assert report["oracle"]["quality"] == 1.0 and report["oracle"]["cost"] == pytest.approx(0.00905)
    # Per task (train): coding big, math mid~small (small once cost counts), writing big until λ > .123.
    assert report["max_quality"] == pytest.approx(0.75)
    assert report["quality_at_best_cost"] == pytest.approx(0.75)
    # Reaching .75 costs (.03 + .0002 + .03 + .0002)/4 = .0151, against big's .03.
    assert report["cost_to_match_best"] == pytest.approx(0.0151 / 0.03)
    assert report["oracle_gap_captured"] == pytest.approx(0.0)
    # Hull (.0002,.375)→(.0009,.625)→(.0151,.75), flat to .03: (.00035 + .0097625 + .011175) / .0298.
    assert report["aiq"] == pytest.approx(0.0212875 / 0.0298)
    assert set(report["per_task"]) == {"coding", "math", "writing"}
    assert report["per_task"]["math"]["n_test"] == 2
    assert {p["setting"] for p in report["curve"]} >= {0.0, 1000.0}


def test_baselines_rank_as_they_should(train: OutcomeSet, test_set: OutcomeSet) -> None:
    best = evaluate_split("best-single", train, test_set)
    cheapest = evaluate_split("cheapest", train, test_set)
    assert best["max_quality"] == 0.75 and best["curve"][0]["cost"] == pytest.approx(0.03)
    # The cheapest model on train is small: on test it scores (0 + 1 + .5 + 0)/4.
    assert cheapest["max_quality"] == pytest.approx(0.375)
    assert cheapest["curve"][-1]["cost"] == pytest.approx(0.0002)


def test_knn_with_given_embeddings(train: OutcomeSet, test_set: OutcomeSet) -> None:
    # One-hot embeddings by task: every test prompt's neighbours are the train prompts of its task.
    labels = ["coding", "math", "writing"]
    for data in (train, test_set):
        data.embeddings = np.eye(3, dtype=np.float32)[[labels.index(t) for t in data.tasks]]
    try:
        report = evaluate_split("knn", train, test_set)
    finally:
        train.embeddings = test_set.embeddings = None
    assert report["max_quality"] == pytest.approx(0.75)


def test_two_model_sets_get_apgr_and_cpt(train: OutcomeSet, test_set: OutcomeSet) -> None:
    two = [0, 2]
    pair_train, pair_test = train.subset(range(6)), test_set.subset(range(4))
    for data in (pair_train, pair_test):
        data.models = [data.models[j] for j in two]
        data.quality, data.cost = data.quality[:, two], data.cost[:, two]
    report = evaluate_split("static-rules", pair_train, pair_test)
    assert report["strong_model"] == "big"
    assert 0.0 <= report["apgr"] <= 1.0 and report["cpt50"] is not None


def test_cross_validation_pools_every_prompt_once(train: OutcomeSet) -> None:
    folds = kfold_indices(len(train), 3, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(6))
    report = evaluate_cv("best-single", train, 3)
    assert report["n_test"] == 6 and report["folds"] == 3


def test_quality_only_sets_have_no_cost_numbers(train: OutcomeSet, test_set: OutcomeSet) -> None:
    qtrain, qtest = train.subset(range(6)), test_set.subset(range(4))
    qtrain.cost = np.full_like(qtrain.cost, np.nan)
    qtest.cost = np.full_like(qtest.cost, np.nan)
    report = evaluate_split("static-rules", qtrain, qtest)
    assert report["aiq"] is None and report["cost_to_match_best"] is None and report["quality_at_best_cost"] is None
    assert report["max_quality"] == pytest.approx(0.75) and len(report["curve"]) == 1


def test_cli_writes_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "report.json", tmp_path / "curve.png"
    code = main(["eval", "offline", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl"),
                 "--router", "static-rules", "--tasks", "dataset", "--json", str(out), "--plot", str(png)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    required = {"router", "n_test", "models", "best_single", "oracle", "curve", "aiq", "quality_at_best_cost",
                "cost_to_match_best", "oracle_gap_captured", "max_quality", "per_task"}  # fmt: skip
    assert required <= set(report)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AIQ" in capsys.readouterr().out


def test_cli_unknown_router(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "offline", "--train", str(FIXTURES / "train.jsonl"), "--folds", "2", "--router", "nope"])
    assert code == 2 and "no router named 'nope'" in capsys.readouterr().err


def test_cheapest_refuses_a_quality_only_set(train: OutcomeSet) -> None:
    quality_only = train.subset(range(6))
    quality_only.cost = np.full_like(quality_only.cost, np.nan)
    with pytest.raises(ValueError, match="needs costs"):
        evaluate_cv("cheapest", quality_only, 2)


def test_calibration_on_a_hand_made_case() -> None:
    from proxy.evaluation.offline import calibration

    actual = np.array([[1.0, 0.0], [1.0, np.nan]])
    predicted = np.array([[0.9, 0.2], [0.7, 0.5]])
    report = calibration(actual, predicted, bins=2)
    # Known pairs: (.9, 1), (.2, 0), (.7, 1) → Brier (.01 + .04 + .09) / 3.
    assert report["brier"] == pytest.approx(0.14 / 3)
    assert report["reliability"] == [
        {"predicted": pytest.approx(0.2), "observed": 0.0, "n": 1},
        {"predicted": pytest.approx(0.8), "observed": 1.0, "n": 2},
    ]
    assert calibration(actual, predicted * 5) is None


class FakeLayer:
    """Stands in for the gateway's layers: "writing" for prompts opening with Write or Draft, else "math"."""

    name = "fake"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def classify(self, text: str) -> LayerVerdict:
        self.asked.append(text)
        return LayerVerdict(fake_task(text), 1.0)


class FakeClassifier(TaskClassifier):
    """The real cascade around the one fake layer."""

    def __init__(self) -> None:
        self.layer = FakeLayer()
        super().__init__([(self.layer, 0.5)], "chat")

    @property
    def asked(self) -> list[str]:
        return self.layer.asked


def fake_task(text: str) -> str:
    return "writing" if text.split()[0] in {"Write", "Draft"} else "math"


def with_fake_tasks(data: OutcomeSet) -> OutcomeSet:
    relabelled = data.subset(range(len(data)))
    relabelled.tasks = [fake_task(t) for t in data.texts]
    return relabelled


# Train t1..t6 and test s1..s4 against the fake: the data sets' coding prompts t1, s1 (Write...) become writing and
# t2 (Implement...) math; every math and writing label is kept. 7 of 10 agree.
AGREEMENT = {
    "labelled": 10,
    "share": 0.7,
    "confusion": {"coding": {"writing": 2, "math": 1}, "math": {"math": 4}, "writing": {"writing": 3}},
}


def test_classifier_tasks_replace_the_data_sets(train: OutcomeSet, test_set: OutcomeSet) -> None:
    classifier = FakeClassifier()
    (new_train, new_test, again), agreement = with_classifier_tasks([train, test_set, train], classifier)
    assert new_train.tasks == ["writing", "math", "math", "math", "writing", "writing"]
    assert new_test.tasks == ["writing", "math", "writing", "math"] and again.tasks == new_train.tasks
    assert train.tasks[:2] == ["coding", "coding"]  # the loaded sets are left as they were
    assert sorted(classifier.asked) == sorted(set(train.texts) | set(test_set.texts))  # each distinct text once
    # The repeated train set counts twice: 10 + 6 labelled, 7 + 4 agreeing.
    assert agreement["labelled"] == 16 and agreement["share"] == pytest.approx(11 / 16)
    _, agreement = with_classifier_tasks([train, test_set], FakeClassifier())
    assert agreement == AGREEMENT


def test_classifier_tasks_reach_the_router(train: OutcomeSet, test_set: OutcomeSet) -> None:
    seen: dict[str, list[str | None]] = {}

    class SpyRouter(BestSingleRouter):
        name = "spy"

        def fit(self, data: OutcomeSet) -> None:
            seen["fit"] = list(data.tasks)
            super().fit(data)

        def predict(self, prompts: PromptBatch) -> Prediction:
            seen["predict"] = list(prompts.tasks)
            return super().predict(prompts)

    table = RouterTable()
    table.register(SpyRouter.name, SpyRouter)
    (new_train, new_test), _ = with_classifier_tasks([train, test_set], FakeClassifier())
    predict(fit_router("spy", new_train, table=table), new_test)
    assert seen == {"fit": [fake_task(t) for t in train.texts], "predict": [fake_task(t) for t in test_set.texts]}


def test_feature_importance_pools_groups_that_only_some_folds_kept(train: OutcomeSet) -> None:
    """The learned router keeps format groups per fold: a group a fold's router lacks counts 0 there."""
    fits: list[int] = []

    class Varying(BestSingleRouter):
        name = "varying"

        def fit(self, data: OutcomeSet) -> None:
            fits.append(len(fits))
            self.fold = fits[-1]
            super().fit(data)

        def feature_importance(self, data: OutcomeSet, seed: int = 0) -> dict[str, float]:
            return {"embedding": 1.0, **({"format": 0.5} if self.fold % 2 else {})}

    table = RouterTable()
    table.register(Varying.name, Varying)
    report = evaluate_cv("varying", train, 2, table=table)
    assert report["feature_importance"] == {"embedding": 1.0, "format": 0.25}


def _cli_report(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "report.json"
    code = main(["eval", "offline", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl"),
                 "--router", "static-rules", "--json", str(out), *extra])  # fmt: skip
    assert code == 0
    return json.loads(out.read_text())


def _routing_numbers(report: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(report)).items()
            if k not in {"train", "test", "seconds", "tasks", "task_agreement"}}  # fmt: skip


def test_cli_dataset_tasks_reproduce_the_old_report(
    tmp_path: Path, train: OutcomeSet, test_set: OutcomeSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    import proxy.evaluation.tasks

    monkeypatch.setattr(proxy.evaluation.tasks, "served_classifier", None, raising=False)  # never asked for
    report = _cli_report(tmp_path, "--tasks", "dataset")
    assert report["tasks"] == "dataset" and "task_agreement" not in report
    assert set(report["per_task"]) == {"coding", "math", "writing"}
    assert _routing_numbers(report) == _routing_numbers(evaluate_split("static-rules", train, test_set))


def test_cli_tasks_default_to_the_served_classifier(
    tmp_path: Path, train: OutcomeSet, test_set: OutcomeSet, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import proxy.evaluation.tasks

    asked: list[tuple[Path | None, DataDir | None]] = []

    def served_classifier(config: Path | None = None, data_dir: DataDir | None = None) -> FakeClassifier:
        asked.append((config, data_dir))
        return FakeClassifier()

    monkeypatch.setattr(proxy.evaluation.tasks, "served_classifier", served_classifier, raising=False)
    report = _cli_report(tmp_path, "--config", "some/registry.yaml")
    assert asked == [(Path("some/registry.yaml"), DataDir(Path("autoroute-data")))], "no config: the default dir"
    assert report["tasks"] == "classifier" and report["task_agreement"] == AGREEMENT
    assert set(report["per_task"]) == {"math", "writing"} and report["per_task"]["writing"]["n_test"] == 2
    expected = evaluate_split("static-rules", with_fake_tasks(train), with_fake_tasks(test_set))
    assert _routing_numbers(report) == _routing_numbers(expected)
    assert "tasks from    the gateway's classifier (agrees with the data set's on 0.700 of 10)" in capsys.readouterr().out
