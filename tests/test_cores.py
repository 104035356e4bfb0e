"""Core placement and claims: one rule for every process that pins; claims keep jobs apart."""
import json
import os
import subprocess
import sys

import pytest

from bench import cores
from bench.protocol import CORES_ENV, LOCK_DIR_ENV


def test_share_gives_each_process_its_own_cores_in_order():
    assert cores.share([4, 5, 6, 7], 0, 2) == [4, 5] and cores.share([4, 5, 6, 7], 1, 2) == [6, 7]
    assert cores.share([0, 1], 2, 1) == [0]  # oversubscribed (tests only): round-robin


def test_pin_takes_the_launchers_list(monkeypatch):
    mine = cores.usable()
    monkeypatch.setenv(CORES_ENV, ",".join(map(str, reversed(mine))))
    before = os.sched_getaffinity(0)
    try:
        assert cores.pin(0, 1) == [mine[-1]] and os.sched_getaffinity(0) == {mine[-1]}
    finally:
        os.sched_setaffinity(0, before)


def test_the_tests_have_their_own_lock_folder():
    assert cores.lock_dir() == os.environ[LOCK_DIR_ENV]


def test_a_claim_is_all_or_nothing_and_released(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    mine = cores.usable()
    first = cores.CoreClaim(mine, len(mine), patience_s=1)
    assert first.cores == mine and not first.shared
    second = cores.CoreClaim(mine, 1, patience_s=0.3)  # every core is held: it waits, then shares
    assert second.shared and second.waited_s >= 0.3 and second.files == []
    first.release()
    third = cores.CoreClaim(mine, 1, patience_s=0.3)
    assert not third.shared and third.waited_s < 0.3
    third.release()


@pytest.mark.skipif(len(cores.usable()) < 2, reason="needs two cores")
def test_claimed_hands_the_cores_over_and_restores_everything(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(CORES_ENV, raising=False)
    before = os.sched_getaffinity(0)
    with cores.claimed(1, patience_s=1) as claim:
        assert os.environ[CORES_ENV] == str(claim.cores[0])
        assert claim.cores[0] not in os.sched_getaffinity(0)  # the launcher keeps off the rank's core
    assert CORES_ENV not in os.environ and os.sched_getaffinity(0) == before
    assert cores.CoreClaim(cores.usable(), 2, patience_s=0).shared is False  # released



@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a core the job does not use")
def test_a_lone_ranks_gloo_threads_leave_its_core(tmp_path):
    """A 1-rank job's gloo threads tick every 10 ms and run no collective: the threads the group
    made go onto the cores the job leaves spare (the launcher's); the rank keeps its own core."""
    first, *rest = sorted(os.sched_getaffinity(0))
    code = f"""
import json, os
os.environ["{CORES_ENV}"] = "{first}"
import torch.distributed as dist
from bench import cores
spare, before = cores.spare(), cores.threads()
cores.pin(0, 1)
dist.init_process_group("gloo", init_method="file://{tmp_path}/store", rank=0, world_size=1)
moved = cores.move_threads(cores.threads() - before, spare)
import time
time.sleep(0.2)  # the threads name themselves once they first run
loop = [sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")
        if open(f"/proc/self/task/{{t}}/comm").read().startswith("gloo_tcp_loop")]
print(json.dumps([spare, moved, loop, sorted(os.sched_getaffinity(0))]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    spare, moved, loop, own = json.loads(out.stdout.strip().splitlines()[-1])
    assert spare == rest and moved >= 1 and loop and all(c == rest for c in loop) and own == [first]
