"""Statistics for A/B comparisons, written with math and numpy (scipy is not a dependency).

- Wilson score interval for a proportion: honest near 0 and 1 and at small n, where the Wald interval is not.
- Two-proportion z-test (pooled standard error under H0) with Newcombe's hybrid score interval for the difference.
- Welch's t-test for a difference in means (unequal variances and arm sizes), with its Welch–Satterthwaite interval.
- The mixture SPRT of Johari, Pekelis and Walsh ("Always valid inference", 2017) with a normal mixture
  N(0, tau²) over the difference in means: its likelihood ratio is a martingale under H0, so by Ville's
  inequality the chance that it ever reaches 1/alpha is at most alpha, however often one looks. The variance
  is a plug-in estimate (as in the paper's applied use), so validity is asymptotic; a burn-in per arm guards
  small samples.

t probabilities are exact (regularised incomplete beta by continued fraction); quantiles are found by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CONTROL = "control"
TREATMENT = "treatment"
DEFAULT_ALPHA = 0.05
MIXTURE_SD = 0.1
"""tau of the mSPRT mixture in standard deviations of the metric: it is most powerful for effects of about
this size, e.g. 5 points of a success rate near 50%, the effect the learning loop is meant to show."""
MIN_SEQUENTIAL_N = 30
"""Events per arm before the stopping rule may stop: the plug-in variance is unreliable below this."""


# --- distributions -----------------------------------------------------------------


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def normal_sf(x: float) -> float:
    """1 − Φ(x), without cancellation in the upper tail."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def _inverse(sf: Callable[[float], float], p: float) -> float:
    """The x > 0 with sf(x) = p (0 < p < 0.5) of a decreasing survival function, by bisection."""
    lo, hi = 0.0, 1.0
    while sf(hi) > p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sf(mid) > p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def normal_quantile(q: float) -> float:
    """Φ⁻¹(q)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    x = _inverse(normal_sf, min(q, 1.0 - q))
    return x if q > 0.5 else -x


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    # Lentz's method for the continued fraction of the incomplete beta function (Numerical Recipes, betacf).
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df (possibly fractional) degrees of freedom."""
    if math.isinf(df):
        return normal_sf(t)
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with df degrees of freedom."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    x = _inverse(lambda t: t_sf(t, df), min(q, 1.0 - q))
    return x if q > 0.5 else -x


# --- fixed-horizon estimates and tests ---------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A rate or mean of one arm with its (1 − alpha) confidence interval (None below two observations)."""

    n: int
    mean: float | None
    ci: tuple[float, float] | None
    sd: float | None = None


@dataclass(frozen=True)
class Comparison:
    """treatment − control for one metric: the estimate, its interval, the test and its p-value."""

    estimate: float | None
    ci: tuple[float, float] | None
    test: str
    statistic: float | None
    p_value: float | None
    significant: bool
    df: float | None = None


def wilson_interval(successes: int, n: int, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        raise ValueError("the Wilson interval needs at least one trial")
    z = normal_quantile(1.0 - alpha / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(successes: int, n: int, alpha: float = DEFAULT_ALPHA) -> Estimate:
    if n == 0:
        return Estimate(0, None, None)
    p = successes / n
    return Estimate(n, p, wilson_interval(successes, n, alpha), math.sqrt(p * (1.0 - p)))


def mean_estimate(values: Sequence[float], alpha: float = DEFAULT_ALPHA) -> Estimate:
    """Sample mean with a Student-t interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(0, None, None)
    mean = float(x.mean())
    if x.size < 2:
        return Estimate(1, mean, None)
    sd = float(x.std(ddof=1))
    half = t_quantile(1.0 - alpha / 2.0, x.size - 1) * sd / math.sqrt(x.size)
    return Estimate(int(x.size), mean, (mean - half, mean + half), sd)


def two_proportion_test(
    successes_c: int, n_c: int, successes_t: int, n_t: int, alpha: float = DEFAULT_ALPHA
) -> Comparison:
    """Two-sided two-proportion z-test (pooled SE) with Newcombe's hybrid score interval for p_t − p_c."""
    name = "two-proportion z-test (pooled), Newcombe hybrid score interval"
    if n_c == 0 or n_t == 0:
        return Comparison(None, None, name, None, None, False)
    p_c, p_t = successes_c / n_c, successes_t / n_t
    diff = p_t - p_c
    lo_c, hi_c = wilson_interval(successes_c, n_c, alpha)
    lo_t, hi_t = wilson_interval(successes_t, n_t, alpha)
    ci = (diff - math.hypot(p_t - lo_t, hi_c - p_c), diff + math.hypot(hi_t - p_t, p_c - lo_c))
    pooled = (successes_c + successes_t) / (n_c + n_t)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_t))
    if se == 0.0:  # both arms all successes or all failures: no evidence of a difference
        return Comparison(diff, ci, name, None, 1.0, False)
    z = diff / se
    p_value = 2.0 * normal_sf(abs(z))
    return Comparison(diff, ci, name, z, p_value, p_value < alpha)


def welch_test(control: Sequence[float], treatment: Sequence[float], alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Two-sided Welch's t-test for mean(treatment) − mean(control), with its Welch–Satterthwaite interval."""
    name = "Welch's t-test"
    c, t = np.asarray(control, dtype=float), np.asarray(treatment, dtype=float)
    if c.size == 0 or t.size == 0:
        return Comparison(None, None, name, None, None, False)
    diff = float(t.mean() - c.mean())
    if c.size < 2 or t.size < 2:
        return Comparison(diff, None, name, None, None, False)
    v_c, v_t = float(c.var(ddof=1)) / c.size, float(t.var(ddof=1)) / t.size
    se = math.sqrt(v_c + v_t)
    if se == 0.0:
        return Comparison(diff, (diff, diff), name, None, None, False)
    df = (v_c + v_t) ** 2 / (v_c**2 / (c.size - 1) + v_t**2 / (t.size - 1))
    stat = diff / se
    p_value = min(1.0, 2.0 * t_sf(abs(stat), df))
    half = t_quantile(1.0 - alpha / 2.0, df) * se
    return Comparison(diff, (diff - half, diff + half), name, stat, p_value, p_value < alpha, float(df))


# --- sequential: mixture SPRT ----------------------------------------------------------


@dataclass(frozen=True)
class Sequential:
    """The always-valid verdict on one metric after every event so far."""

    metric: str
    test: str
    looks: int
    """Events at which the rule was evaluated (both arms past the burn-in)."""
    likelihood_ratio: float | None
    """The mixture likelihood ratio at the latest look."""
    p_value: float
    """Always valid: the chance under H0 of ever seeing evidence this strong, at any look."""
    ci: tuple[float, float] | None
    """Always-valid (confidence-sequence) interval for treatment − control at the latest look."""
    decision: str
    """`stop: treatment better`, `stop: control better` or `continue`."""
    stopped_at_event: int | None
    """1-based index of the event (both arms, time order) at which the rule first stopped."""


def msprt(
    arms: Sequence[str],
    values: Sequence[float],
    *,
    metric: str = "quality",
    alpha: float = DEFAULT_ALPHA,
    mixture_sd: float = MIXTURE_SD,
    min_n: int = MIN_SEQUENTIAL_N,
    lower_is_better: bool = False,
) -> Sequential:
    """Mixture SPRT for treatment − control in means, looked at after every event (arms[i] labels values[i]).

    At each look, with Δ̂ the difference of the arm means, V = s_t²/n_t + s_c²/n_c and τ² = (mixture_sd · s̄)²
    (s̄² the mean of the two arm variances), the mixture likelihood ratio against Δ = 0 is
    Λ = sqrt(V / (V + τ²)) · exp(τ² Δ̂² / (2V (V + τ²))); the rule stops once Λ ≥ 1/alpha.
    """
    name = f"mSPRT, normal mixture tau = {mixture_sd} sd (Johari et al. 2017), plug-in variance"
    labels = np.asarray(arms)
    x = np.asarray(values, dtype=float)
    x = x - (x.mean() if x.size else 0.0)  # variances are shift-invariant; centring keeps the sums small
    is_t, is_c = labels == TREATMENT, labels == CONTROL
    n_t, n_c = np.cumsum(is_t), np.cumsum(is_c)
    ready = (n_t >= max(min_n, 2)) & (n_c >= max(min_n, 2))
    if not ready.any():
        return Sequential(metric, name, 0, None, 1.0, None, "continue", None)
    n_t, n_c = n_t[ready].astype(float), n_c[ready].astype(float)
    s_t, s_c = np.cumsum(np.where(is_t, x, 0.0))[ready], np.cumsum(np.where(is_c, x, 0.0))[ready]
    q_t, q_c = np.cumsum(np.where(is_t, x * x, 0.0))[ready], np.cumsum(np.where(is_c, x * x, 0.0))[ready]
    var_t = np.maximum(q_t - s_t**2 / n_t, 0.0) / (n_t - 1)
    var_c = np.maximum(q_c - s_c**2 / n_c, 0.0) / (n_c - 1)
    diff = s_t / n_t - s_c / n_c
    v = var_t / n_t + var_c / n_c
    tau2 = mixture_sd**2 * (var_t + var_c) / 2.0
    informative = (v > 0) & (tau2 > 0)  # a look where both arms are constant carries no usable evidence
    safe_v, safe_tau2 = np.where(informative, v, 1.0), np.where(informative, tau2, 1.0)
    log_lr = np.where(
        informative,
        0.5 * np.log(safe_v / (safe_v + safe_tau2)) + safe_tau2 * diff**2 / (2 * safe_v * (safe_v + safe_tau2)),
        0.0,
    )
    threshold = math.log(1.0 / alpha)
    p_value = float(min(1.0, math.exp(-float(log_lr.max()))))
    crossed = np.flatnonzero(log_lr >= threshold)
    stopped_at, decision = None, "continue"
    if crossed.size:
        first = int(crossed[0])
        stopped_at = int(np.flatnonzero(ready)[first]) + 1
        treatment_higher = bool(diff[first] > 0)
        decision = "stop: treatment better" if treatment_higher != lower_is_better else "stop: control better"
    ci = None
    if informative[-1]:
        # The Δ0 with Λ(Δ̂ − Δ0) < 1/alpha: the mSPRT inverted at the latest look.
        vl, tl = float(v[-1]), float(tau2[-1])
        half = math.sqrt(2 * vl * (vl + tl) / tl * (threshold + 0.5 * math.log((vl + tl) / vl)))
        ci = (float(diff[-1]) - half, float(diff[-1]) + half)
    return Sequential(metric, name, int(ready.sum()), float(math.exp(log_lr[-1])), p_value, ci, decision, stopped_at)
