"""compare: verdicts over runs (never steps), Holm-corrected, with a minimum effect and a
minimum of runs; the false-positive rate on simulated A/A sweeps; the command's exit codes."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import compare
from conftest import ROOT, fake_set

ALPHA = 0.05


def _runs(rng, n, level=1000.0, spread=0.15):
    """n runs' tokens/s with this VM's between-process drift (lognormal, 15%)."""
    return level * np.exp(spread * rng.standard_normal(n))


def test_a_real_difference_is_found_and_noise_is_not():
    rng = np.random.default_rng(1)
    base = _runs(rng, 5, spread=0.02)
    [slower] = compare.verdicts([(base, 0.8 * _runs(rng, 5, spread=0.02))])
    assert slower["verdict"] == "slower" and slower["ratio"] == pytest.approx(0.8, abs=0.03)
    [same] = compare.verdicts([(base, _runs(rng, 5, spread=0.02))])
    assert same["verdict"] == "within noise"
    steady = np.array([1000.0, 1002.0, 998.0, 1001.0, 999.0])
    [tiny] = compare.verdicts([(steady, 1.03 * steady)])  # significant, but under --min-ratio 5%
    assert tiny["p_value"] < 0.01 and tiny["verdict"] == "within noise"


def test_too_few_runs_give_no_verdict_whatever_the_ratio():
    [v] = compare.verdicts([([1000.0, 1010.0], [500.0, 505.0])])
    assert v["verdict"] == "no verdict (2 run(s); use repeats=3)" and np.isnan(v["p_value"])


def test_the_correction_spans_every_configuration():
    rng = np.random.default_rng(2)
    pairs = [(_runs(rng, 5, spread=0.02), 0.9 * _runs(rng, 5, spread=0.02)) for _ in range(20)]
    out = compare.verdicts(pairs)
    assert all(o["p_holm"] >= o["p_value"] for o in out)
    assert max(o["p_holm"] for o in out) <= 1.0


def test_false_positives_on_simulated_aa_sweeps_stay_under_alpha():
    """A/A: both sides are runs of the same thing with 15% between-run drift, 5 runs a side,
    40 configurations a sweep. Holm keeps the chance that a sweep flags anything at alpha."""
    rng = np.random.default_rng(3)
    sweeps, configs = 300, 40
    flagged = rows_flagged = 0
    for _ in range(sweeps):
        out = compare.verdicts([(_runs(rng, 5), _runs(rng, 5)) for _ in range(configs)], ALPHA, 0.05,
                               intervals=False)
        bad = sum(o["verdict"] in ("faster", "slower") for o in out)
        flagged += bad > 0
        rows_flagged += bad
    assert flagged / sweeps <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / sweeps)  # within Monte Carlo error
    assert rows_flagged / (sweeps * configs) <= ALPHA


def _run(*args):
    return subprocess.run([sys.executable, "-m", "bench.compare", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})


def test_cli_flags_a_planted_slowdown_and_passes_identical_sets(tmp_path):
    a = fake_set(tmp_path / "a", runs=5, spread=0.03, seed=1)
    b = fake_set(tmp_path / "b", scale=1.25, runs=5, spread=0.03, seed=2)
    r = _run(a, b, "--pdf", str(tmp_path / "c.pdf"))
    assert r.returncode == 1 and "slower" in r.stdout and (tmp_path / "c.pdf").exists(), r.stdout + r.stderr
    assert "Holm-adjusted over 1 configuration(s)" in r.stdout
    r = _run(a, fake_set(tmp_path / "a2", runs=5, spread=0.03, seed=3))
    assert r.returncode == 0 and "within noise" in r.stdout
    r = _run(fake_set(tmp_path / "one", runs=1), fake_set(tmp_path / "slow1", scale=1.25, runs=1))
    assert r.returncode == 0 and "no verdict (1 run(s); use repeats=3)" in r.stdout  # never a regression


def test_aa_check_splits_one_set_alternately(tmp_path):
    r = _run("--aa", fake_set(tmp_path / "aa", runs=10, spread=0.01, seed=4))  # 1% drift: under --min-ratio
    assert r.returncode == 0 and "(odd runs)" in r.stdout and "within noise" in r.stdout, r.stdout + r.stderr


def test_two_machines_in_one_set_are_two_rows(tmp_path):
    import pandas as pd

    from bench.results import load
    x = load([fake_set(tmp_path / "x", runs=3, seed=1)])  # machine M1.0
    y = load([fake_set(tmp_path / "y", scale=3.0, runs=3, seed=2)])  # machine M3.0, a third as fast
    z = load([fake_set(tmp_path / "z", scale=2.0, runs=3, seed=3)])
    t = compare.compare([pd.concat([x, y], ignore_index=True), z], ["xy", "z"])
    assert len(t) == 2 and sorted(t["baseline_runs"]) == [3, 3]
    assert sorted(round(r, 1) for r in t["ratio"]) == [0.5, 1.5]  # never the median of both machines
