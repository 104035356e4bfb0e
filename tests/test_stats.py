"""The statistics, against values worked by hand (and, for the t distribution, printed tables)."""
import numpy as np
import pytest

from bench import stats


def test_t_distribution_tail_against_tables():
    # two-sided 5% critical values: t(4) = 2.776, t(10) = 2.228, t(30) = 2.042 (any statistics table)
    for t, df in ((2.776, 4), (2.228, 10), (2.042, 30)):
        assert stats.t_sf(t, df) == pytest.approx(0.025, abs=2e-4)
    assert stats.t_sf(0.0, 7) == pytest.approx(0.5)
    assert stats.t_sf(-2.776, 4) == pytest.approx(0.975, abs=2e-4)
    assert stats.t_sf(1.0, 1) == pytest.approx(0.25)  # Cauchy: 1/2 - atan(1)/pi


def test_welch_on_log_throughputs():
    a, b = [100.0, 110.0, 90.0], [100.0, 110.0, 90.0]
    assert stats.welch_log(a, b) == (0.0, 1.0)
    # logs a = [0, 0, 0.1... ]: by hand: a = e^[0, .02, -.02], b = e^[.1, .12, .08]: means 0 and .1,
    # variances .0004 each, se = sqrt(2 * .0004 / 3) = .01633, t = 6.124, df = 4, p = 0.0036
    a, b = np.exp([0, 0.02, -0.02]), np.exp([0.1, 0.12, 0.08])
    t, p = stats.welch_log(a, b)
    assert t == pytest.approx(6.124, abs=1e-3) and p == pytest.approx(0.0036, abs=1e-4)
    assert stats.welch_log([1.0], [2.0, 3.0])[1] == 1.0  # one run a side: no test


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5]) == [0.5] and stats.holm([0.6, 0.7]) == [1.0, 1.0]


def test_ratio_of_medians_and_its_interval():
    assert stats.ratio_ci([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)  # other twice as fast
    rng = np.random.default_rng(0)
    r, lo, hi = stats.ratio_ci(1 + 0.1 * rng.random(30), 1 + 0.1 * rng.random(30))
    assert lo < r < hi and hi - lo < 0.1


def test_bootstrap_interval_holds_the_median_and_is_deterministic():
    x = np.arange(1.0, 21.0)  # median 10.5
    lo, hi = stats.bootstrap_ci(x)
    assert lo < 10.5 < hi and (lo, hi) == stats.bootstrap_ci(x)
    assert stats.bootstrap_ci([3.0]) == (3.0, 3.0)
