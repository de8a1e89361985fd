"""The two summaries every analysis uses: a success rate with its Wilson interval and a set of quantiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from proxy.evaluation.stats import wilson_interval

CONFIDENCE = 0.95
QUANTILES = (0.5, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class Rate:
    """`successes` of `n`, with the Wilson score interval at 95 % (None when n is 0)."""

    n: int
    successes: float
    rate: float | None
    ci_low: float | None
    ci_high: float | None


def rate(successes: float, n: int) -> Rate:
    """A proportion and its Wilson interval; `successes` may be a sum of scores in [0, 1] (exact for 0/1 scores)."""
    if n <= 0:
        return Rate(0, 0, None, None, None)
    low, high = wilson_interval(successes, n, 1.0 - CONFIDENCE)  # type: ignore[arg-type]  # a float sum is fine here
    return Rate(n, successes, successes / n, low, high)


@dataclass(frozen=True)
class Distribution:
    """Count, mean, extremes and quantiles (linear interpolation between order statistics, numpy's default)."""

    n: int
    mean: float | None
    min: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


def distribution(values: Sequence[float]) -> Distribution:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Distribution(0, None, None, None, None, None, None, None)
    x = np.asarray(finite)
    p50, p90, p95, p99 = (float(q) for q in np.quantile(x, QUANTILES))
    return Distribution(len(finite), float(x.mean()), float(x.min()), float(x.max()), p50, p90, p95, p99)


def mean(values: Sequence[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return math.fsum(known) / len(known) if known else None
