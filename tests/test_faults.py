"""Faults planted through SCALEBENCH_FAULT (tests only): each becomes a status, never a crash."""
import time

import psutil
import pytest

from bench.launch import launch
from bench.plan import make_spec
from bench.trainer import FAULT_ENV, parse_fault
from conftest import compose_cfg

pytestmark = pytest.mark.slow
BASE = ("size=tiny", "accelerator=cpu", "seq_len=32", "warmup_steps=1", "steps=4")


def run(tmp_path, monkeypatch, fault, *overrides):
    monkeypatch.setenv(FAULT_ENV, fault)
    t0 = time.perf_counter()
    out = launch(make_spec(compose_cfg(*BASE, *overrides)), str(tmp_path))
    ranks = [p for p in psutil.Process().children(recursive=True)
             if "resource_tracker" not in " ".join(p.cmdline())]  # spawn's tracker lives on, by design
    assert not ranks  # no rank left behind
    return out, time.perf_counter() - t0


def test_parse_fault():
    assert parse_fault("kill:1:3") == ("kill", 1, 3) and parse_fault("") is None
    with pytest.raises(ValueError, match="kill, hang or nan"):
        parse_fault("boom:0:1")


def test_killed_rank_is_named(tmp_path, monkeypatch):
    out, _ = run(tmp_path, monkeypatch, "kill:1:2", "strategy=dp", "devices=2")
    assert out.status == "failed" and "rank 1 killed by signal 9 (SIGKILL)" in out.error


def test_hung_rank_times_out(tmp_path, monkeypatch):
    out, took = run(tmp_path, monkeypatch, "hang:0:2", "strategy=dp", "devices=2", "timeout_s=20")
    assert out.status == "timeout" and "timeout_s=20" in out.error
    assert took < 40


def test_nan_loss_is_diverged(tmp_path, monkeypatch):
    out, _ = run(tmp_path, monkeypatch, "nan:0:2", "strategy=single")
    assert out.status == "diverged" and "loss became nan at step 2" in out.error


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
