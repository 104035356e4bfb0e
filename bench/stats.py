"""The statistics, once: bootstrap intervals, ratio intervals, the Mann-Whitney U test, and
the pooling of step times. Report and compare import them from here.

Pure numpy; deterministic (fixed seeds), so the same results give the same report.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

CI_LEVEL = 0.95


def pooled_steps(step_lists: Iterable) -> np.ndarray:
    """The measured step times of several runs, concatenated (s)."""
    return np.concatenate([np.asarray(s, dtype=float) for s in step_lists])


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
    """Throughput ratio other/base = median(base step) / median(other step), with a
    percentile bootstrap interval: (ratio, low, high)."""
    base, other = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    r = float(np.median(base) / np.median(other))
    rng = np.random.default_rng(seed)
    rb = (np.median(rng.choice(base, (n, len(base))), axis=1)
          / np.median(rng.choice(other, (n, len(other))), axis=1))
    lo, hi = np.quantile(rb, [(1 - level) / 2, 1 - (1 - level) / 2])
    return r, float(lo), float(hi)


def mann_whitney_u(a, b) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test, normal approximation with tie and continuity
    correction (fine from ~5 samples a side). Returns (U of `a`, p-value)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return math.nan, 1.0
    allv = np.concatenate([a, b])
    ranks = _average_ranks(allv)
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    _, counts = np.unique(allv, return_counts=True)
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - (counts**3 - counts).sum() / (n * (n - 1)))
    if var <= 0:
        return float(u1), 1.0
    z = (abs(u1 - mu) - 0.5) / math.sqrt(var)
    return float(u1), min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]
