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


def test_order_statistic_coverage_by_hand():
    # 1 - 2 * sum_{i<k} C(n, i) / 2^n
    assert stats.order_coverage(3, 1) == 0.75  # 1 - 2/8
    assert stats.order_coverage(6, 1) == 0.96875  # 1 - 2/64
    assert stats.order_coverage(10, 2) == pytest.approx(1 - 2 * (1 + 10) / 1024)  # 0.978515625
    assert stats.order_coverage(10, 3) == pytest.approx(1 - 2 * (1 + 10 + 45) / 1024)  # 0.890625
    assert stats.order_coverage(1, 1) == 0.0 and stats.order_coverage(4, 3) == 0.0  # one point, or none


def test_median_interval_states_the_coverage_it_has():
    assert stats.median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0, 0.75)  # min..max, 75%, not 95%
    assert stats.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) == (1.0, 5.0, 0.9375)  # widest there is, still short
    assert stats.median_ci([6.0, 1.0, 5.0, 2.0, 4.0, 3.0]) == (1.0, 6.0, 0.96875)  # from 6 runs on: 95% reached
    x = [10.0, 3.0, 7.0, 1.0, 9.0, 2.0, 8.0, 4.0, 6.0, 5.0]
    lo, hi, cov = stats.median_ci(x)
    assert (lo, hi) == (2.0, 9.0) and cov == pytest.approx(0.978515625)  # x(2)..x(9); x(3)..x(8) is 0.89
    assert stats.median_ci(x, level=0.99) == (1.0, 10.0, 1 - 2 / 1024)
    assert stats.median_ci(x, level=0.80)[:2] == (3.0, 8.0)  # 0.89 >= 0.8; x(4)..x(7) is 1 - 2*176/1024 = 0.66
    assert stats.median_ci([4.0, np.nan, 2.0, 3.0]) == (2.0, 4.0, 0.75)  # NaN left out
    assert stats.median_ci([5.0]) == (5.0, 5.0, 0.0)
    assert all(np.isnan(v) for v in stats.median_ci([]))
    with pytest.raises(ValueError):
        stats.median_ci(x, level=95)


def test_median_interval_coverage_holds_for_a_skewed_distribution():
    """Distribution-free: the stated coverage is what exponential draws (median ln 2) see."""
    rng = np.random.default_rng(5)
    for n, k in ((3, 1), (6, 1), (10, 2)):  # k: the order statistic median_ci takes at 95%
        x = np.sort(rng.exponential(size=(20000, n)), axis=1)
        lo, hi, coverage = stats.median_ci(x[0])
        assert (lo, hi) == (x[0, k - 1], x[0, n - k])
        hit = np.mean((x[:, k - 1] < np.log(2)) & (np.log(2) < x[:, n - k]))
        assert hit == pytest.approx(coverage, abs=0.01)  # Monte Carlo error about 0.003


def test_the_bootstrap_of_few_runs_claims_more_than_it_holds():
    # the motivating case: a "95%" bootstrap of the median of 3 runs is min..max, which holds the median 75%
    assert stats.bootstrap_ci([1.0, 2.0, 3.0]) == (1.0, 3.0)
    # the ratio of medians with 3 lognormal runs a side: about 90%, under the 95% it is named for
    rng = np.random.default_rng(6)
    hit = sum(lo <= 1.0 <= hi for lo, hi in
              (stats.ratio_ci(np.exp(0.15 * rng.standard_normal(3)), np.exp(0.15 * rng.standard_normal(3)))[1:]
               for _ in range(400)))
    assert 0.84 <= hit / 400 <= 0.94
