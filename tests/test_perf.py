"""bench.perf as a user runs it: one command prints the side-by-side table, the targets and,
where asked, the profile by kind of op. (The figures are for the command's reader; a test
cannot hold a shared machine to them.)"""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_perf_prints_the_table_targets_and_profile(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.perf", "--sizes", "tiny", "--precisions", "fp32", "--repeats", "1",
                        "--no-dp", "--profile", "always", "seq_len=32", "accelerator=cpu"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "measured matmul peak fp32" in out and "tiny   fp32  no" in out
    assert "fixed cost of a point (launch, init, teardown)" in out
    assert "harness overhead, tiny fp32" in out and "fixed cost of a point" in out.split("targets")[1]
    assert "profile, bare loop, tiny fp32" in out and "matmul (mm, addmm, bmm, linear)" in out
    assert "[measure]" not in out  # the ranks' progress lines are kept out of the table
