"""The statistics, once: the order-statistic interval of a median, bootstrap intervals,
ratio intervals, Welch's t-test on log throughputs and the Holm correction. Report and
compare import them from here.

The unit of replication is a run (a process): this VM's throughput drifts 10-30% between
processes while the steps of one run agree to 1-2%, so a comparison's samples are runs'
tokens/s, never the steps of a run (those are within-run spread only).

Pure numpy and math; deterministic (fixed seeds), so the same results give the same report.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

CI_LEVEL = 0.95


def order_coverage(n: int, k: int) -> float:
    """The probability that [x(k), x(n+1-k)], the k-th smallest and the k-th largest of n
    independent draws from a continuous distribution, holds that distribution's median:
    1 - 2 * P(B <= k-1) with B ~ Binomial(n, 1/2), i.e. 1 - 2 * sum_{i<k} C(n, i) / 2^n
    (each draw falls below the median with probability 1/2, whatever the distribution;
    Conover, Practical Nonparametric Statistics, 3rd ed. 1999, sec. 3.2; David & Nagaraja,
    Order Statistics, 3rd ed. 2003, sec. 7.1). Exact (integer arithmetic) up to the final
    division; 0 for k > n/2 (an empty or one-point interval)."""
    if k < 1 or 2 * k > n:
        return 0.0
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n


def median_ci(values, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """A distribution-free interval for the median of the population the `values` (e.g. runs'
    tokens/s) were drawn from, honest about its coverage: (low, high, coverage).

    The interval is [x(k), x(n+1-k)] of the sorted values with the largest k (the narrowest
    such interval) whose coverage `order_coverage(n, k)` (1 - 2 P(Binomial(n, 1/2) <= k-1);
    Conover 1999 sec. 3.2) is at least `level`. Where n is too small for `level` even at
    k = 1, the widest interval there is, min..max, with the coverage it actually has:
    1 - 2 * 0.5^n, 0.75 for 3 values, 0.875 for 4, 0.9375 for 5; from 6 values (0.96875)
    on, 95% is reached. `coverage` is the exact confidence level of the interval returned,
    never the requested one. It assumes independent draws from one continuous distribution
    (ties in the data only widen the real coverage). A percentile bootstrap of the median of
    3 values returns min..max as well, while claiming 95%.

    NaN values are left out; no values: (nan, nan, nan); one value: (x, x, 0.0)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    x = np.sort(np.asarray(values, dtype=float).ravel())
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    k = 1
    while order_coverage(n, k + 1) >= level:
        k += 1
    return float(x[k - 1]), float(x[n - k]), order_coverage(n, k)


def bootstrap_ci(samples, stat: Callable = np.median, n: int = 2000, level: float = CI_LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over `samples`: (low, high) (Efron &
    Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13). Its coverage falls short of
    `level` for few samples: for the median of 3 it is min..max, which holds the median 75%
    of the time; for a median over runs use `median_ci`, which states its coverage."""
    samples = np.asarray(samples, dtype=float)
    if len(samples) < 2:
        return (float(stat(samples)),) * 2 if len(samples) else (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boots = stat(rng.choice(samples, size=(n, len(samples)), replace=True), axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def ratio_ci(base, other, n: int = 2000, level: float = CI_LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """The ratio of medians median(other) / median(base) of two samples (runs' throughputs:
    above 1, `other` is faster), with a percentile bootstrap interval over the samples, each
    side resampled on its own (Efron & Tibshirani 1993, ch. 13): (ratio, low, high). Its
    coverage is under `level` for few samples: simulated with lognormal runs (15% spread), a
    95% interval held the true ratio in about 90% of cases with 3 runs a side, 93% with 4,
    and 95% or more from 5 on (2000 cases each; tests/test_stats.py checks the 3-run case).
    bench.compare shows it only with 3 or more runs a side."""
    base, other = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    r = float(np.median(other) / np.median(base))
    rng = np.random.default_rng(seed)
    rb = (np.median(rng.choice(other, (n, len(other))), axis=1)
          / np.median(rng.choice(base, (n, len(base))), axis=1))
    lo, hi = np.quantile(rb, [(1 - level) / 2, 1 - (1 - level) / 2])
    return r, float(lo), float(hi)


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (df > 0, not necessarily whole):
    I_x(df/2, 1/2) / 2 at x = df / (df + t^2), for t >= 0 (Abramowitz & Stegun 26.7.1)."""
    if math.isnan(t):
        return math.nan
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1 - tail


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction
    (modified Lentz; Numerical Recipes 6.4), using the symmetry where it converges faster."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1) < 1e-14:
            break
    return front * f / a


def welch_log(a, b) -> tuple[float, float]:
    """Welch's two-sided t-test on the logs of two samples of positive values (throughputs of
    runs: a ratio is what differs between machines, and the logs of runs' throughputs are
    close to normal). Returns (t, p); p = 1 with fewer than two values a side or no spread."""
    la, lb = np.log(np.asarray(a, dtype=float)), np.log(np.asarray(b, dtype=float))
    n1, n2 = len(la), len(lb)
    if n1 < 2 or n2 < 2:
        return math.nan, 1.0
    v1, v2 = la.var(ddof=1) / n1, lb.var(ddof=1) / n2
    if v1 + v2 == 0:
        diff = lb.mean() - la.mean()
        return (math.copysign(math.inf, diff) if diff else math.nan), (0.0 if diff else 1.0)
    t = (lb.mean() - la.mean()) / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    return float(t), min(1.0, 2 * t_sf(abs(t), df))


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values (controls the family-wise error rate): the i-th
    smallest of m is multiplied by m - i + 1 (i from 1), kept monotone, capped at 1."""
    p = [float(x) for x in pvalues]
    m = len(p)
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def t_quantile(q: float, df: float) -> float:
    """The q-quantile (0.5 <= q < 1) of Student's t with `df` degrees of freedom, by bisection
    on `t_sf` (monotone): t with P(T > t) = 1 - q."""
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1 - q:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_sf(mid, df) > 1 - q else (lo, mid)
    return (lo + hi) / 2


def paired_ratio(a, b, level: float = CI_LEVEL) -> tuple[float, float, float, float]:
    """Two candidates measured in the same processes (a[i] and b[i] in process i, e.g. their
    tokens/s): the ratio a/b as the geometric mean of the per-process ratios, its t interval,
    and the two-sided p-value of the paired t-test on the log ratios (Student 1908; the
    per-process ratio cancels the drift a process shares, which is 10-30% between processes
    on this VM, against 1-2% between the steps of one). Returns (ratio, low, high, p);
    fewer than 2 pairs: (ratio, nan, nan, 1.0); no spread: the interval is the ratio and
    p is 0 (a difference) or 1 (none)."""
    d = np.log(np.asarray(a, dtype=float)) - np.log(np.asarray(b, dtype=float))
    d = d[~np.isnan(d)]
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan, 1.0
    mean = float(d.mean())
    if n < 2:
        return math.exp(mean), math.nan, math.nan, 1.0
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return math.exp(mean), math.exp(mean), math.exp(mean), (0.0 if mean else 1.0)
    half = t_quantile(1 - (1 - level) / 2, n - 1) * se
    p = min(1.0, 2 * t_sf(abs(mean) / se, n - 1))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half), p
