"""compare: verdicts on constructed step-time samples, and the command's exit codes."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import compare, stats
from conftest import ROOT, fake_set


@pytest.mark.parametrize("slow,expected", [(1.0, "within noise"), (1.2, "slower"), (1 / 1.2, "faster"),
                                           (1.02, "within noise")])
def test_verdicts(slow, expected):
    rng = np.random.default_rng(1)
    base = 0.1 * (1 + 0.01 * rng.standard_normal(20))
    other = base * slow + 0.001 * rng.standard_normal(20)
    ratio, lo, hi = stats.ratio_ci(base, other)
    assert lo <= ratio <= hi and ratio == pytest.approx(1 / slow, rel=0.03)
    _, p = stats.mann_whitney_u(base, other)
    assert compare.verdict(p, ratio, alpha=0.05, min_ratio=0.05) == expected


def _run(*args):
    return subprocess.run([sys.executable, "-m", "bench.compare", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})


def test_cli_flags_a_planted_slowdown_and_passes_identical_sets(tmp_path):
    a, b = fake_set(tmp_path / "a"), fake_set(tmp_path / "b", scale=1.25)
    r = _run(a, b, "--pdf", str(tmp_path / "c.pdf"))
    assert r.returncode == 1 and "slower" in r.stdout and (tmp_path / "c.pdf").exists()
    r = _run(a, fake_set(tmp_path / "a2"))
    assert r.returncode == 0 and "within noise" in r.stdout
