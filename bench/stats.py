"""The statistics, once: bootstrap intervals, ratio intervals, Welch's t-test on log
throughputs and the Holm correction. Report and compare import them from here.

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


def bootstrap_ci(samples, stat: Callable = np.median, n: int = 2000, level: float = CI_LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over `samples`: (low, high)."""
    samples = np.asarray(samples, dtype=float)
    if len(samples) < 2:
        return (float(stat(samples)),) * 2 if len(samples) else (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boots = stat(rng.choice(samples, size=(n, len(samples)), replace=True), axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def ratio_ci(base, other, n: int = 2000, level: float = CI_LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """The ratio of medians median(other) / median(base) of two samples (runs' throughputs:
    above 1, `other` is faster), with a percentile bootstrap interval: (ratio, low, high)."""
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
