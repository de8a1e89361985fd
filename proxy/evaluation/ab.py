"""`autoroute report ab`: the A/B comparison of static rules (control) and learned routing (treatment).

Pure functions over the rows of `Store.ab_outcomes`; the statistics are in `stats`. Per arm: success rate with
a Wilson interval, mean quality (over decisions with feedback), cost and latency with Student-t intervals.
treatment − control for every metric at a fixed horizon: success by the two-proportion z-test, means by
Welch's t-test; these p-values hold only when looked at once. The report is rerun while traffic flows, and
peeking at a fixed-horizon p-value until it dips below alpha inflates false positives far beyond alpha, so
the stopping rule on the primary metric (quality or success) is the mixture SPRT, evaluated after every
event in time order: its always-valid p-value holds whenever and however often one looks. Shadow decisions
were not served by the arm that chose them, so they are counted, not compared.

Beside the comparison, the logged propensities: per arm, the effective sample size of their inverse-propensity
weights, (Σ 1/p)² / Σ 1/p², with the smallest propensity and the share of randomised decisions (p < 1). It is n
when every decision had the same propensity and falls as a few unlikely decisions dominate: how much the log is
worth to off-policy evaluation, whose gate (`learning.min_ess`) asks for a large ESS before any promotion.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from .offpolicy import effective_sample_size
from .stats import (
    CONTROL,
    DEFAULT_ALPHA,
    TREATMENT,
    Comparison,
    mean_estimate,
    msprt,
    normal_quantile,
    proportion,
    two_proportion_test,
    welch_test,
)

SHADOW = "shadow"
"""The arm of decisions the learned router made without serving them: counted, never compared."""
METRICS = ("success", "quality", "cost_usd", "latency_ms")
PRIMARY_METRICS = ("quality", "success")
LOWER_IS_BETTER = frozenset({"cost_usd", "latency_ms"})
POWER = 0.8

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


# --- the report --------------------------------------------------------------


def _metric_values(rows: Sequence[Mapping[str, Any]], metric: str) -> list[tuple[str, float]]:
    """(arm, value) in time order; success is 1/0 for every row, the others only where measured."""
    if metric == "success":
        return [(str(r["ab_arm"]), 1.0 if r["status"] == "success" else 0.0) for r in rows]
    return [(str(r["ab_arm"]), float(r[metric])) for r in rows if r.get(metric) is not None]


def required_per_arm(sd: float, effect: float, alpha: float = DEFAULT_ALPHA, power: float = POWER) -> int | None:
    """Events per arm for a fixed-horizon two-sided test to detect `effect` with `power` (equal arms, common sd)."""
    if effect == 0 or sd <= 0:
        return None
    z = normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power)
    return math.ceil(2.0 * (z * sd / effect) ** 2)


def ab_report(
    rows: Sequence[Mapping[str, Any]],
    *,
    metric: str = "quality",
    alpha: float = DEFAULT_ALPHA,
    since: float | None = None,
) -> dict[str, Any]:
    """Per-arm estimates, fixed-horizon differences for every metric and the sequential rule on `metric`."""
    if metric not in PRIMARY_METRICS:
        raise ValueError(f"the primary metric is quality or success, not {metric!r}")
    rows = sorted(rows, key=lambda r: (r["created_at"], r["request_id"]))
    arm_counts = Counter(str(r["ab_arm"]) for r in rows)
    in_test = [r for r in rows if r["ab_arm"] in (CONTROL, TREATMENT)]
    arms: dict[str, dict[str, Any]] = {CONTROL: {"n": arm_counts[CONTROL]}, TREATMENT: {"n": arm_counts[TREATMENT]}}
    differences: dict[str, Any] = {}
    for name in METRICS:
        pairs = _metric_values(in_test, name)
        by_arm = {arm: [v for a, v in pairs if a == arm] for arm in (CONTROL, TREATMENT)}
        if name == "success":
            counts = {arm: (int(sum(vals)), len(vals)) for arm, vals in by_arm.items()}
            for arm, (k, n) in counts.items():
                arms[arm][name] = asdict(proportion(k, n, alpha))
            comparison = two_proportion_test(*counts[CONTROL], *counts[TREATMENT], alpha=alpha)
        else:
            for arm, vals in by_arm.items():
                arms[arm][name] = asdict(mean_estimate(vals, alpha))
            comparison = welch_test(by_arm[CONTROL], by_arm[TREATMENT], alpha)
        differences[name] = asdict(comparison)
        differences[name]["better"] = _better(comparison, name)
    pairs = _metric_values(in_test, metric)
    sequential = msprt(
        [a for a, _ in pairs],
        [v for _, v in pairs],
        metric=metric,
        alpha=alpha,
        lower_is_better=metric in LOWER_IS_BETTER,
    )
    return {
        "since": since,
        "alpha": alpha,
        "metric": metric,
        "n_in_test": len(in_test),
        "excluded": {arm: n for arm, n in sorted(arm_counts.items()) if arm not in (CONTROL, TREATMENT)},
        "arms": arms,
        "difference": differences,
        "sequential": asdict(sequential),
        "power": _power_note(arms, differences[metric], metric, alpha),
        "propensities": propensity_summary(rows),
    }


def propensity_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Per arm (and `all`): decisions with a logged propensity, the ESS of their inverse-propensity weights, the
    smallest propensity and the share of randomised decisions. None when the rows carry no propensities."""
    logged = [(str(r["ab_arm"]), float(r["propensity"])) for r in rows if r.get("propensity")]
    if not logged:
        return None
    out = {}
    for arm in ("all", *sorted({a for a, _ in logged})):
        p = [v for a, v in logged if arm in ("all", a)]
        out[arm] = {"n": len(p), "ess": round(effective_sample_size([1.0 / v for v in p]), 1),
                    "min_propensity": min(p), "randomised": round(sum(v < 1.0 for v in p) / len(p), 4)}  # fmt: skip
    return out


def _better(comparison: Comparison, metric: str) -> str | None:
    if not comparison.significant or comparison.estimate is None:
        return None
    treatment_higher = comparison.estimate > 0
    return TREATMENT if treatment_higher != (metric in LOWER_IS_BETTER) else CONTROL


def _power_note(arms: Mapping[str, Any], difference: Mapping[str, Any], metric: str, alpha: float) -> dict[str, Any]:
    """Fixed-horizon sizing: the smallest effect detectable now, and the events the observed effect would need."""
    sds = [arms[arm][metric]["sd"] for arm in (CONTROL, TREATMENT)]
    ns = [arms[arm][metric]["n"] for arm in (CONTROL, TREATMENT)]
    if None in sds or min(ns) < 2:
        return {"mde": None, "n_per_arm_for_observed_effect": None, "more_events_per_arm": None, "power": POWER}
    sd = math.sqrt((sds[0] ** 2 + sds[1] ** 2) / 2.0)
    z = normal_quantile(1.0 - alpha / 2.0) + normal_quantile(POWER)
    mde = z * sd * math.sqrt(1.0 / ns[0] + 1.0 / ns[1])
    needed = required_per_arm(sd, difference["estimate"] or 0.0, alpha)
    return {
        "mde": mde,
        "n_per_arm_for_observed_effect": needed,
        "more_events_per_arm": None if needed is None else max(0, needed - min(ns)),
        "power": POWER,
    }


def parse_since(text: str, now: float) -> float:
    """A unix time, an ISO date or date-time (UTC unless it names an offset), or a duration back from now (24h, 7d)."""
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * _SECONDS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a unix time, an ISO date/time or a duration like 24h, 7d, 30m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if value != 0 and abs(value) < 0.01 else f"{value:.{digits}f}"


def _fmt_ci(ci: Sequence[float] | None) -> str:
    return "-" if ci is None else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def format_ab_report(report: Mapping[str, Any]) -> str:
    """A readable table of the report."""
    level = round(100 * (1 - report["alpha"]))
    excluded = ", ".join(f"{arm} {n}" for arm, n in report["excluded"].items()) or "none"
    lines = [
        f"A/B report: {report['n_in_test']} decisions in the test (control {report['arms'][CONTROL]['n']}, "
        f"treatment {report['arms'][TREATMENT]['n']}); not compared: {excluded}",
        f"{'metric':<11} {'control: n, mean, ' + str(level) + '% CI':<44} {'treatment':<44} "
        f"{'treatment - control':<34} p-value",
    ]
    for name in METRICS:
        cells = []
        for arm in (CONTROL, TREATMENT):
            est = report["arms"][arm][name]
            cells.append(f"n={est['n']:<6} {_fmt(est['mean']):>10} {_fmt_ci(est['ci'])}")
        diff = report["difference"][name]
        mark = f"  ({diff['better']} better)" if diff["better"] else ""
        lines.append(
            f"{name:<11} {cells[0]:<44} {cells[1]:<44} {_fmt(diff['estimate']):>10} {_fmt_ci(diff['ci']):<23} "
            f"{_fmt(diff['p_value'])}{mark}"
        )
    lines.append(
        "tests: success rate by " + report["difference"]["success"]["test"] + "; means by Welch's t-test "
        "(fixed horizon: valid when looked at once)"
    )
    seq = report["sequential"]
    where = f" at event {seq['stopped_at_event']}" if seq["stopped_at_event"] else ""
    lines.append(
        f"sequential on {seq['metric']}: {seq['decision']}{where}; always-valid p {_fmt(seq['p_value'])}, "
        f"always-valid CI {_fmt_ci(seq['ci'])}, {seq['looks']} looks ({seq['test']})"
    )
    propensities = report.get("propensities")
    if propensities is None:
        lines.append("logged propensities: not in these rows (no ESS)")
    else:
        lines.append("logged propensities, ESS of 1/p (n, smallest p, randomised): " + "; ".join(
            f"{arm} {p['ess']:.1f} ({p['n']}, {_fmt(p['min_propensity'])}, {100 * p['randomised']:.1f}%)"
            for arm, p in propensities.items()
        ))  # fmt: skip
    power = report["power"]
    if power["mde"] is not None:
        more = power["more_events_per_arm"]
        lines.append(
            f"power (fixed horizon): smallest {seq['metric']} difference detectable now at "
            f"{round(100 * power['power'])}% power {_fmt(power['mde'])}"
            + ("" if more is None else f"; the observed one needs {more} more events per arm")
        )
    return "\n".join(lines)
