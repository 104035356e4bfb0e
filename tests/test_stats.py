"""The statistics, against values worked by hand."""
import numpy as np
import pytest

from bench import stats


def test_mann_whitney_against_known_values():
    # no overlap, 5 vs 5: U = 0; exact two-sided p = 2/252 = 0.0079; the normal approximation
    # with continuity correction: z = (12.5 - 0.5) / sqrt(25 * 11 / 12) = 2.5067, p = 0.0122
    u, p = stats.mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert u == 0 and p == pytest.approx(0.0122, abs=1e-3)
    u, p = stats.mann_whitney_u([1, 2, 3], [1, 2, 3])
    assert u == 4.5 and p == 1.0
    # ties share their average rank: a = [1, 2, 2], b = [2, 3]: ranks 1, 3, 3 | 3, 5; U_a = 7 - 6 = 1
    assert stats.mann_whitney_u([1, 2, 2], [2, 3])[0] == 1


def test_ratio_and_its_interval():
    base, other = [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]  # the other set's steps take half the time
    assert stats.ratio_ci(base, other) == (2.0, 2.0, 2.0)
    rng = np.random.default_rng(0)
    r, lo, hi = stats.ratio_ci(1 + 0.1 * rng.random(30), 1 + 0.1 * rng.random(30))
    assert lo < r < hi and hi - lo < 0.1


def test_bootstrap_interval_holds_the_median_and_is_deterministic():
    x = np.arange(1.0, 21.0)  # median 10.5
    lo, hi = stats.bootstrap_ci(x)
    assert lo < 10.5 < hi and (lo, hi) == stats.bootstrap_ci(x)
    assert stats.bootstrap_ci([3.0]) == (3.0, 3.0)


def test_pooled_steps_concatenates_runs():
    assert list(stats.pooled_steps([[1, 2], [3]])) == [1.0, 2.0, 3.0]
