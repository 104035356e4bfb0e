"""bench.perf: the targets are data judged by a pure function (hand-checked here), and the
command as a user runs it prints the side-by-side table, the targets and the profile. (The
figures are for the command's reader; a test cannot hold a shared machine to them.)"""
import os
import subprocess
import sys

import pytest

from bench.perf import TARGETS, checks, judge
from conftest import ROOT


def test_judge_at_the_boundaries():
    assert judge(TARGETS["overhead"], 0.01) and not judge(TARGETS["overhead"], 0.0101)
    assert judge(TARGETS["overhead"], -0.01) and not judge(TARGETS["overhead"], -0.0101)  # either side
    assert judge(TARGETS["overhead_sign"], 0.05) and not judge(TARGETS["overhead_sign"], 0.049)
    assert judge(TARGETS["dp_efficiency"], 0.90) and not judge(TARGETS["dp_efficiency"], 0.899)
    assert judge(TARGETS["fixed_cost_s"], 4.99) and not judge(TARGETS["fixed_cost_s"], 5.0)  # strictly under
    t = TARGETS["overhead"]
    assert (t.value_fmt.format(-0.005), t.threshold_fmt.format(t.threshold)) == ("-0.5%", "1%")


def _row(size, precision, repeats=5, **kw):
    return {"size": size, "precision": precision, "compile": False, "repeats": repeats, "overhead": 0.01,
            "overhead_p": 0.4,
            "mfu": 0.6, "mfu_datasheet": None, **kw}


def test_what_is_judged_against_what():
    rows = [_row("mini", "fp32"), _row("mini", "bf16"), _row("small", "fp32", repeats=4),
            _row("mini", "fp32", compile=True)]
    got = checks(rows, {"mini": 1.2}, 0.91, 4.2, "cpu")
    keys = [(k, subject) for k, subject, _, _ in got]
    # overhead (its median and its sign) only with 5+ ABBA pairs, never for compiled rows; MFU for mini fp32 only
    assert keys == [("overhead", "mini fp32"), ("overhead_sign", "mini fp32"), ("overhead", "mini bf16"),
                    ("overhead_sign", "mini bf16"), ("mfu_fp32_mini", ""),
                    ("bf16_speedup", "mini"), ("dp_efficiency", ""), ("fixed_cost_s", "")]
    gpu = checks([_row("small", "bf16", mfu_datasheet=0.24), _row("xl", "bf16", mfu_datasheet=0.42),
                  _row("xl", "bf16", mfu_datasheet=0.47, compile=True), _row("xl", "fp32")], {}, None, 3.0, "cuda")
    # on a GPU, MFU is judged for xl bf16 only (the target), eager and compiled each
    assert [(k, subject, v) for k, subject, v, _ in gpu if k == "mfu_gpu_bf16"] == [
        ("mfu_gpu_bf16", "xl", 0.42), ("mfu_gpu_bf16", "xl compile", 0.47)]


@pytest.mark.slow
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


@pytest.mark.slow
def test_perf_holds_the_vocabulary_parallel_head_against_the_whole_one(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.perf", "--vocab-parallel", "--precisions", "fp32", "--repeats", "2",
                        "size=tiny", "size.vocab_size=8192", "seq_len=32", "accelerator=cpu"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "fp32 1/2: split" in out and "fp32 2/2: split" in out  # ABBA: both orders ran
    assert "split / whole:" in out and "(geometric mean of the 2 pair(s)' ratios; 95% interval" in out
    assert "size=tiny size.vocab_size=8192 seq_len=32 accelerator=cpu (a later key wins)" in out.splitlines()[0]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[-4:-1]}
    assert rows["split"][-1] == rows["whole"][-1]  # the same loss, to the printed digits
    # the model: the 8192 x 64 matrix's state (8 MiB whole) and the logits halved
    assert float(rows["split"][-3].replace(",", "")) < float(rows["whole"][-3].replace(",", ""))


@pytest.mark.slow
def test_perf_holds_the_bare_loop_against_itself(tmp_path):
    """--aa: the overhead's method with two identical sides, in ABBA pairs, judged as the overhead is."""
    r = subprocess.run([sys.executable, "-m", "bench.perf", "--aa", "--sizes", "tiny", "--precisions", "fp32",
                        "--repeats", "5", "seq_len=32", "steps=3", "accelerator=cpu"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert all(f"tiny fp32 {i}/5: A " in out for i in range(1, 6))
    assert "A/A, tiny fp32: median of the pairs" in out and "paired t-test p = " in out
    # five pairs: judged by the overhead's own targets (met or missed, by the noise of the moment)
    assert "harness overhead (median of the pairs) with identical sides" in out
    assert "harness overhead, paired t-test p (no consistent sign) with identical sides" in out


@pytest.mark.slow
def test_bare_loop_trains_as_the_suite_does(tmp_path):
    """The reference loop uses the suite's optimizer (no decay of biases and LayerNorms):
    with the same model, data and steps it reaches the suite's loss."""
    from bench.bare import bare_loop
    from bench.trainer import make_optimizer
    import torch
    from bench.model import build_model
    from conftest import plan
    spec = plan("size=tiny", "accelerator=cpu", "seq_len=32", "warmup_steps=1", "steps=2")
    model = build_model(spec.shape, torch.device("cpu"), 0)
    groups = make_optimizer(list(model.parameters()), spec.lr, torch.device("cpu")).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all(p.dim() >= 2 for p in model.parameters() if id(p) in decayed)
    before, threads = os.sched_getaffinity(0), torch.get_num_threads()
    try:  # bare_loop pins its process as a rank's (its own process in bench.perf): give the tests theirs back
        times, table, counters = bare_loop(spec)
    finally:
        os.sched_setaffinity(0, before)
        torch.set_num_threads(threads)
    assert len(times) == 2 and table is None
    assert set(counters) == {"minor_page_faults_per_step", "involuntary_context_switches_per_step"}


def _heap_kept_mib(q) -> None:
    """A spawned child: RSS kept after malloc + touch + free of one 16 MiB block (MiB)."""
    import ctypes

    import psutil
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    before = psutil.Process().memory_info().rss
    p = libc.malloc(16 * 2**20)
    ctypes.memset(p, 1, 16 * 2**20)
    libc.free(ctypes.c_void_p(p))
    q.put((psutil.Process().memory_info().rss - before) / 2**20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_bare_loop_starts_under_the_ranks_allocator_policy():
    """glibc reads MALLOC_* once, as the process starts: bench.perf's bare loop and reference
    trainers must be started under the rank's environment, not given it once running. Under the
    default policy (32 MiB mmap threshold, no trimming) a freed 16 MiB block stays in the heap;
    under glibc's own it was mmapped and goes back at once."""
    from bench.config import STEADY_MMAP_THRESHOLD, STEADY_TRIM_THRESHOLD
    from bench.perf import _spawn
    steady = {"MALLOC_MMAP_THRESHOLD_": str(STEADY_MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(STEADY_TRIM_THRESHOLD)}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    old = os.environ.copy()
    os.environ.clear()
    os.environ.update(clean)
    try:
        assert _spawn(_heap_kept_mib, (), env=steady) > 15
        assert _spawn(_heap_kept_mib, ()) < 1
    finally:
        os.environ.clear()
        os.environ.update(old)
