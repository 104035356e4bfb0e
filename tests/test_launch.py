"""The launcher on one machine: nothing of a `launcher=local` job listens on the network."""
import threading
import time

import psutil
import pytest

from conftest import launch_job, plan


@pytest.mark.slow
def test_a_one_machine_job_listens_on_loopback_only(tmp_path):
    spec = plan("size=tiny", "strategy=dp", "devices=2", "accelerator=cpu", "seq_len=32", "warmup_steps=1",
                "steps=400", "oversubscribe=true")
    done = {}
    t = threading.Thread(target=lambda: done.update(out=launch_job(spec, tmp_path)))
    t.start()
    listening = set()
    while t.is_alive():  # every socket any process of the job listens on, while it runs
        for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                listening |= {c.laddr.ip for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
            except psutil.Error:
                pass
        time.sleep(0.2)
    t.join()
    assert done["out"].status == "ok", done["out"].error
    assert listening, "gloo's own connections were never seen: the check saw nothing"
    assert listening <= {"127.0.0.1", "::1"}, listening


def test_malloc_env_follows_the_key_and_leaves_the_users_own_alone():
    from bench.launch import malloc_env
    default = plan("size=tiny", "accelerator=cpu")
    tight = plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=1048576")
    assert malloc_env(default, {}) == {}  # glibc's own policy: what a training job gets
    assert malloc_env(tight, {}) == {"MALLOC_MMAP_THRESHOLD_": "1048576"}
    assert malloc_env(tight, {"MALLOC_MMAP_THRESHOLD_": "65536"}) == {}  # the user's wins


def test_a_rank_records_the_allocator_policy_it_ran_under(tmp_path):
    spec = plan("size=tiny", "accelerator=cpu", "seq_len=32", "warmup_steps=1", "steps=1",
                "malloc_mmap_threshold=2097152")
    out = launch_job(spec, tmp_path)
    assert out.status == "ok", out.error
    assert out.metrics["malloc_mmap_threshold"] == 2097152
    # no sampler thread on a CPU (VmHWM gives the window's peak): RSS read at the window's two ends only
    assert out.metrics["memory_per_rank"][0]["samples"] == 2
