"""`autoroute report ab`: the statistics on known answers, the store query, the command end to end."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxy.cli import main
from proxy.evaluation.ab import ab_report, format_ab_report, parse_since
from proxy.evaluation.stats import (
    mean_estimate,
    msprt,
    normal_quantile,
    t_quantile,
    t_sf,
    two_proportion_test,
    welch_test,
    wilson_interval,
)
from proxy.events import FeedbackRecord
from proxy.store import SQLiteStore

from .test_store import decision, perf

T0 = 1_700_000_000.0


# --- distributions and fixed-horizon tests ----------------------------------------------


def test_quantiles_match_tables() -> None:
    assert normal_quantile(0.975) == pytest.approx(1.959963984540, abs=1e-9)
    assert normal_quantile(0.025) == pytest.approx(-1.959963984540, abs=1e-9)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445105, abs=1e-8)
    assert t_quantile(0.975, 10) == pytest.approx(2.228138852, abs=1e-8)
    assert t_quantile(0.975, 1) == pytest.approx(12.70620474, abs=1e-6)
    assert t_sf(0.0, 7.5) == pytest.approx(0.5)
    assert t_sf(-2.0, 3) == pytest.approx(1.0 - t_sf(2.0, 3))
    assert t_sf(2.0, 1) == pytest.approx(0.5 - math.atan(2.0) / math.pi)  # Cauchy, closed form


def test_wilson_interval_by_hand() -> None:
    # 8/10, z = 1.96: centre (0.8 + z²/20) / (1 + z²/10) = 0.71672, half-width 0.22658.
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.490162, abs=1e-6), pytest.approx(0.943318, abs=1e-6))
    # 0/10: the lower end is 0 and the upper (z²/n) / (1 + z²/n), where the Wald interval would collapse to 0.
    z2 = 1.959963984540**2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / 10 / (1 + z2 / 10)))


def test_two_proportion_z_test_by_hand() -> None:
    # 45/100 vs 60/100: pooled p 0.525, se sqrt(0.525 · 0.475 · 0.02) = 0.070622, z = 0.15 / se = 2.12398.
    cmp = two_proportion_test(45, 100, 60, 100)
    assert cmp.estimate == pytest.approx(0.15)
    assert cmp.statistic == pytest.approx(2.123977, abs=1e-6)
    assert cmp.p_value == pytest.approx(0.033672, abs=1e-6)
    assert cmp.significant


def test_newcombe_interval_matches_the_paper() -> None:
    # Newcombe (1998), Stat Med 17:873, example (a): 56/70 − 48/80, method 10 gives 0.0524 to 0.3339.
    cmp = two_proportion_test(48, 80, 56, 70)
    assert cmp.ci == (pytest.approx(0.0524, abs=5e-5), pytest.approx(0.3339, abs=5e-5))


def test_welch_t_test_by_hand() -> None:
    # control 1..5: mean 3, var 2.5; treatment 2, 4, .., 12: mean 7, var 14. se² = 2.5/5 + 14/6 = 2.8333,
    # t = 4 / 1.68325 = 2.37635, Welch–Satterthwaite df = 2.8333² / (0.5²/4 + 2.3333²/5) = 6.97226.
    cmp = welch_test([1, 2, 3, 4, 5], [2, 4, 6, 8, 10, 12])
    assert cmp.estimate == pytest.approx(4.0)
    assert cmp.statistic == pytest.approx(2.376354, abs=1e-6)
    assert cmp.df == pytest.approx(6.972256, abs=1e-6)
    assert cmp.p_value == pytest.approx(0.049284, abs=1e-6)
    assert cmp.significant
    assert cmp.ci == (pytest.approx(0.016531, abs=1e-5), pytest.approx(7.983469, abs=1e-5))


def test_mean_interval_and_small_samples() -> None:
    est = mean_estimate([1, 2, 3, 4, 5])
    half = 2.776445105 * math.sqrt(2.5 / 5)
    assert est.mean == 3.0 and est.ci == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert mean_estimate([0.4]).ci is None and mean_estimate([]).mean is None
    assert welch_test([1.0], [2.0, 3.0]).p_value is None
    assert two_proportion_test(5, 5, 7, 7).p_value == 1.0  # both arms always succeed: no evidence


# --- the sequential rule --------------------------------------------------------------


def _naive_peeking_stops(arms: np.ndarray, values: np.ndarray, min_n: int = 30) -> bool:
    """Whether a z-test at 5% looked at after every event would ever have declared a difference."""
    is_t = arms == "treatment"
    n_t, n_c = np.cumsum(is_t), np.cumsum(~is_t)
    s_t, s_c = np.cumsum(np.where(is_t, values, 0)), np.cumsum(np.where(~is_t, values, 0))
    q_t, q_c = np.cumsum(np.where(is_t, values**2, 0)), np.cumsum(np.where(~is_t, values**2, 0))
    ok = (n_t >= min_n) & (n_c >= min_n)
    var_t = (q_t[ok] - s_t[ok] ** 2 / n_t[ok]) / (n_t[ok] - 1)
    var_c = (q_c[ok] - s_c[ok] ** 2 / n_c[ok]) / (n_c[ok] - 1)
    z = (s_t[ok] / n_t[ok] - s_c[ok] / n_c[ok]) / np.sqrt(var_t / n_t[ok] + var_c / n_c[ok])
    return bool((np.abs(z) > 1.96).any())


@pytest.mark.parametrize("kind", ["normal", "bernoulli"])
def test_msprt_rarely_stops_on_identical_arms_despite_peeking(kind: str) -> None:
    rng = np.random.default_rng(20240605)
    runs, events = 200, 2000
    false_stops = naive_stops = 0
    for _ in range(runs):
        arms = rng.choice(np.array(["control", "treatment"]), size=events)
        values = rng.normal(0.6, 0.2, events) if kind == "normal" else (rng.random(events) < 0.7).astype(float)
        result = msprt(arms, values)
        false_stops += result.decision != "continue"
        assert result.p_value > 0.05 or result.decision != "continue"
        naive_stops += _naive_peeking_stops(arms, values)
    # Ville's inequality bounds the rate by alpha = 0.05 (the plug-in variance makes that asymptotic).
    assert false_stops / runs <= 0.05
    # The same peeking with a fixed-horizon test is wrong far more often: what the rule is for.
    assert naive_stops / runs > 0.2


def test_msprt_stops_on_a_large_true_effect() -> None:
    rng = np.random.default_rng(7)
    arms = rng.choice(np.array(["control", "treatment"]), size=2000)
    values = rng.normal(0.5, 0.2, 2000) + 0.1 * (arms == "treatment")  # half a standard deviation
    better = msprt(arms, values)
    assert better.decision == "stop: treatment better"
    assert better.stopped_at_event is not None and better.stopped_at_event < 1000
    assert better.p_value < 0.05 and better.ci is not None and better.ci[0] > 0
    worse = msprt(arms, -values)
    assert worse.decision == "stop: control better"
    assert msprt(arms, -values, lower_is_better=True).decision == "stop: treatment better"  # e.g. latency


def test_msprt_waits_for_the_burn_in() -> None:
    arms = ["control", "treatment"] * 20  # 20 per arm, below the burn-in of 30
    values = [0.0, 1.0] * 20
    result = msprt(arms, np.asarray(values) + np.linspace(0, 0.01, 40))
    assert result.looks == 0 and result.decision == "continue" and result.p_value == 1.0


# --- the report -------------------------------------------------------------------------


def _row(i: int, arm: str, **kw: Any) -> dict[str, Any]:
    base = dict(request_id=f"r{i:04d}", created_at=T0 + i, ab_arm=arm, task="code", status="success",
                quality=None, cost_usd=0.001, latency_ms=500.0)  # fmt: skip
    base.update(kw)
    return base


def test_report_compares_the_served_arms_and_counts_shadow() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(400):
        arm = ("control", "treatment")[i % 2]
        lift = 0.15 if arm == "treatment" else 0.0
        rows.append(_row(i, arm, quality=float(np.clip(rng.normal(0.55 + lift, 0.15), 0, 1)),
                         status="success" if rng.random() < 0.9 else "failure",
                         latency_ms=float(rng.normal(800, 50))))  # fmt: skip
    rows += [_row(1000 + i, "shadow", quality=0.0) for i in range(7)]
    report = ab_report(rows, metric="quality")
    assert report["excluded"] == {"shadow": 7}
    assert report["n_in_test"] == 400
    assert report["arms"]["control"]["n"] == report["arms"]["treatment"]["n"] == 200
    quality = report["difference"]["quality"]
    assert quality["test"] == "Welch's t-test" and quality["better"] == "treatment"
    assert quality["estimate"] == pytest.approx(0.15, abs=0.05)
    assert report["sequential"]["decision"] == "stop: treatment better"
    assert not report["difference"]["cost_usd"]["significant"]  # the same cost in both arms
    text = format_ab_report(report)
    assert "shadow 7" in text and "Welch's t-test" in text and "stop: treatment better" in text
    json.dumps(report)  # plain JSON types only


def test_report_without_feedback_or_arms() -> None:
    report = ab_report([_row(i, ("control", "treatment")[i % 2]) for i in range(10)], metric="quality")
    assert report["arms"]["control"]["quality"]["n"] == 0
    assert report["sequential"]["decision"] == "continue"
    assert report["power"]["mde"] is None
    assert ab_report([], metric="success")["n_in_test"] == 0
    with pytest.raises(ValueError):
        ab_report([], metric="cost_usd")


def test_report_prints_the_ess_of_the_logged_propensities() -> None:
    rows = [_row(i, "control", propensity=1.0) for i in range(100)]
    rows += [_row(100 + i, "treatment", propensity=0.9) for i in range(90)]
    rows += [_row(200 + i, "treatment", propensity=0.01) for i in range(10)]
    report = ab_report(rows, metric="quality")
    props = report["propensities"]
    assert props["control"] == {"n": 100, "ess": 100.0, "min_propensity": 1.0, "randomised": 0.0}
    # Treatment: 90 weights of 1/0.9 and 10 of 100: (100 + 1000)² / (90/0.81 + 100000) = 12.09.
    assert props["treatment"]["ess"] == pytest.approx(1100**2 / (90 / 0.81 + 100_000), abs=0.05)
    assert props["treatment"]["min_propensity"] == 0.01 and props["treatment"]["randomised"] == 1.0
    assert props["all"]["n"] == 200
    text = format_ab_report(report)
    assert "logged propensities, ESS of 1/p" in text and "control 100.0 (100, 1.0000, 0.0%)" in text
    assert "treatment 12.1 (100, 0.0100, 100.0%)" in text
    bare = ab_report([_row(i, ("control", "treatment")[i % 2]) for i in range(10)], metric="quality")
    assert bare["propensities"] is None and "not in these rows" in format_ab_report(bare)


def test_parse_since() -> None:
    now = T0
    assert parse_since("24h", now) == now - 86_400
    assert parse_since("30m", now) == now - 1800
    assert parse_since("7d", now) == now - 7 * 86_400
    assert parse_since("1700000000", now) == 1_700_000_000.0
    assert parse_since("2024-01-02", now) == datetime(2024, 1, 2, tzinfo=UTC).timestamp()
    assert parse_since("2024-01-02T03:00:00+01:00", now) == datetime(2024, 1, 2, 2, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday", now)


# --- the store query and the command -----------------------------------------------------


def _fill(store: SQLiteStore) -> None:
    store.write_batch([
        decision("c1", created_at=T0 + 1, ab_arm="control", status="success"),
        perf("c1", 1, created_at=T0 + 1, cost_usd=0.001, latency_ms=900.0, outcome="failure"),
        perf("c1", 2, created_at=T0 + 2, cost_usd=0.002, latency_ms=300.0),
        FeedbackRecord("c1", T0 + 10, 0.4),
        FeedbackRecord("c1", T0 + 11, 0.8),
        FeedbackRecord("c1", T0 + 12, None, extra={"task": "math"}),  # a task label, not a score
        decision("t1", created_at=T0 + 2, ab_arm="treatment", status="failure"),
        perf("t1", 1, created_at=T0 + 3, cost_usd=None, latency_ms=50.0, outcome="failure"),
        decision("s1", created_at=T0 + 3, ab_arm="shadow"),
        decision("n1", created_at=T0 + 4, ab_arm=None),
        decision("old", created_at=T0 - 100, ab_arm="control"),
    ])  # fmt: skip


def test_store_ab_outcomes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "autoroute.db")
    try:
        _fill(store)
        rows = store.ab_outcomes()
        assert [r["request_id"] for r in rows] == ["old", "c1", "t1", "s1"]  # oldest first, no NULL arm
        by_id = {r["request_id"]: r for r in rows}
        assert by_id["c1"] == {
            "request_id": "c1", "created_at": T0 + 1, "ab_arm": "control", "task": "code", "status": "success",
            "propensity": pytest.approx(0.9), "quality": pytest.approx(0.6), "cost_usd": pytest.approx(0.003), "latency_ms": 300.0,
        }  # fmt: skip
        assert by_id["t1"]["quality"] is None and by_id["t1"]["cost_usd"] is None and by_id["t1"]["latency_ms"] == 50.0
        assert by_id["old"]["latency_ms"] is None  # no attempts recorded
        assert [r["request_id"] for r in store.ab_outcomes(since=T0 + 2)] == ["t1", "s1"]
    finally:
        store.close()


def test_cli_report_ab_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    store = SQLiteStore(data_dir / "autoroute.db")
    try:
        _fill(store)
    finally:
        store.close()
    out = tmp_path / "reports" / "ab.json"
    code = main(["report", "ab", "--data-dir", str(data_dir), "--since", str(T0), "--json", str(out),
                 "--metric", "success", "--alpha", "0.1"])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["since"] == T0 and report["alpha"] == 0.1 and report["metric"] == "success"
    assert report["excluded"] == {"shadow": 1}
    assert report["arms"]["control"]["n"] == 1 and report["arms"]["treatment"]["n"] == 1  # "old" is before --since
    assert report["arms"]["control"]["quality"]["mean"] == pytest.approx(0.6)
    assert report["sequential"]["decision"] == "continue"
    printed = capsys.readouterr().out
    assert "A/B report: 2 decisions" in printed and "sequential on success" in printed


def test_cli_report_ab_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "ab", "--data-dir", str(tmp_path / "none")]) == 2
    assert "no store" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()  # reporting never creates a store
    assert main(["report", "ab", "--data-dir", str(tmp_path), "--since", "soon"]) == 2
    assert main(["report", "ab", "--config", str(tmp_path / "missing.yaml")]) == 2
