"""Faults planted through SCALEBENCH_FAULT (tests only): each becomes a status, never a crash.
The killed, hung and interrupted jobs are real; that a NaN loss is `diverged` is bookkeeping,
tested on the outcome directly."""
import time

import psutil
import pytest

from bench.launch import Outcome, describe_failures, diverged
from bench.protocol import FAULT_ENV
from conftest import launch_job, plan

BASE = ("size=tiny", "accelerator=cpu", "seq_len=32", "warmup_steps=1", "steps=4")


def run(tmp_path, monkeypatch, fault, *overrides):
    monkeypatch.setenv(FAULT_ENV, fault)
    t0 = time.perf_counter()
    out = launch_job(plan(*BASE, *overrides), tmp_path)
    ranks = [p for p in psutil.Process().children(recursive=True)
             if "resource_tracker" not in " ".join(p.cmdline())]  # spawn's tracker lives on, by design
    assert not ranks  # no rank left behind
    return out, time.perf_counter() - t0


def test_non_finite_loss_is_diverged():
    out = diverged(Outcome("ok", metrics={"loss": [5.5, 5.4, float("nan"), 5.3]}))
    assert out.status == "diverged" and out.error == "loss became nan at step 2 (warm-up included)"
    assert diverged(Outcome("ok", metrics={"loss": [5.5, float("inf")]})).error.startswith("loss became inf at step 1")
    assert diverged(Outcome("ok", metrics={"loss": [5.5, 5.4]})).status == "ok"


def test_failures_are_described_by_rank_and_signal():
    class Failure:  # what elastic's ProcessFailure carries
        def __init__(self, exitcode):
            self.exitcode = exitcode
    text = describe_failures({1: Failure(-9), 0: Failure(1)})
    assert text == ("rank 0 exited with code 1; rank 1 killed by signal 9 (SIGKILL) (out of memory, or "
                    "killed from outside)")


@pytest.mark.slow
def test_killed_rank_is_named(tmp_path, monkeypatch):
    out, _ = run(tmp_path, monkeypatch, "kill:1:2", "strategy=dp", "devices=2")
    assert out.status == "failed" and "rank 1 killed by signal 9 (SIGKILL)" in out.error


@pytest.mark.slow
def test_hung_rank_times_out(tmp_path, monkeypatch):
    out, took = run(tmp_path, monkeypatch, "hang:0:2", "strategy=dp", "devices=2", "timeout_s=20")
    assert out.status == "timeout" and "timeout_s=20" in out.error
    assert took < 40


@pytest.mark.slow
def test_a_sweep_with_a_failed_point_exits_1(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT
    env = {**os.environ, "PYTHONPATH": ROOT, FAULT_ENV: "kill:1:1"}
    r = subprocess.run([sys.executable, "-m", "bench.run", "-m", "size=tiny", "strategy=single,dp", "devices=1,2",
                        "seq_len=32", "warmup_steps=1", "steps=2", "accelerator=cpu"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    # single on 2 devices is invalid (a benchmark outcome), dp on 2 has its rank 1 killed: a failure
    assert "4 runs: 2 ok, 1 failed, 1 invalid" in r.stdout, r.stdout[-3000:]
    assert r.returncode == 1


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopping_a_sweep_keeps_what_finished(tmp_path, how):
    """Ctrl-C in a terminal is SIGINT to the whole foreground process group (the ranks too);
    a scheduler's or `kill`'s SIGTERM reaches the sweep process alone. Either way: the ranks
    end, the finished point keeps its result, the stopped one is `interrupted`, exit 130."""
    import os
    import signal
    import subprocess
    import sys

    from bench.results import load
    from conftest import ROOT
    env = {**os.environ, "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "bench.run", "-m", "size=tiny", "strategy=dp", "devices=2", "seq_len=32",
           "warmup_steps=1", "steps=2,3000", "accelerator=cpu"]
    # a shell's `cmd &` ignores SIGINT in its children; a terminal's foreground job does not
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in p.stdout:  # wait until the second point's ranks are training
        seen.append(line)
        if "[point 2/2]" in "".join(seen) and "[measure]" in line:
            break
    t0 = time.perf_counter()
    if how == "ctrl-c":
        os.killpg(p.pid, signal.SIGINT)
    else:
        os.kill(p.pid, signal.SIGTERM)
    rest, _ = p.communicate(timeout=60)
    took = time.perf_counter() - t0
    assert p.returncode == 130, "".join(seen) + rest
    assert took < 20  # promptly: the ranks are ended, not waited for
    assert "interrupted: the points finished so far keep their result.json" in rest
    df = load([str(tmp_path / "results")]).set_index("steps")
    assert df.loc[2, "status"] == "ok" and df.loc[3000, "status"] == "interrupted"
    time.sleep(1)
    # (an orphan the container's init never reaps stays a zombie: dead, not running)
    left = [q for q in psutil.process_iter(["pid", "status"])
            if _session(q) == p.pid and q.info["status"] != psutil.STATUS_ZOMBIE]
    assert not left, [q.cmdline() for q in left]  # nothing of the sweep left running


def _session(q):
    import os
    try:
        return os.getsid(q.pid)
    except OSError:
        return None
