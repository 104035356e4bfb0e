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
