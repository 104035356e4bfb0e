"""The launcher on one machine: nothing of a `launcher=local` job listens on the network."""
import threading
import time

import psutil
import pytest

from conftest import GPU_HOST, launch_job, plan


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


def test_malloc_env_follows_the_keys_and_leaves_the_users_own_alone():
    from bench.launch import malloc_env
    default = plan("size=tiny", "accelerator=cpu")
    tight = plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=1048576", "malloc_trim_threshold=null")
    glibc = plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=null", "malloc_trim_threshold=null")
    heap = plan("size=tiny", "accelerator=cpu", "malloc_mmap_max=0")
    # the default: blocks up to 32 MiB from the heap, never trimmed (each step reuses the last one's pages)
    assert malloc_env(default, {}) == {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1099511627776"}
    assert malloc_env(heap, {}) == {**malloc_env(default, {}), "MALLOC_MMAP_MAX_": "0"}  # and the larger ones too
    assert malloc_env(tight, {}) == {"MALLOC_MMAP_THRESHOLD_": "1048576"}
    assert malloc_env(glibc, {}) == {}  # glibc's own dynamic policy
    # the user's wins, variable by variable
    assert malloc_env(tight, {"MALLOC_MMAP_THRESHOLD_": "65536"}) == {}
    assert malloc_env(default, {"MALLOC_TRIM_THRESHOLD_": "0"}) == {"MALLOC_MMAP_THRESHOLD_": "33554432"}
    assert malloc_env(plan("size=tiny", "accelerator=cuda", "devices=1", host=GPU_HOST), {}) == {}  # CPU ranks only


def test_trim_threshold_without_an_mmap_threshold_is_refused_before_launch():
    """glibc fixes its mmap threshold at 128 KiB once the trim threshold is set: one line that
    names both keys."""
    from bench.plan import InvalidConfig
    with pytest.raises(InvalidConfig, match=r"malloc_trim_threshold=1099511627776 \(its default\) with "
                                            "malloc_mmap_threshold=null.*set malloc_mmap_threshold too"):
        plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=null")
    # so does the mmap count (glibc's do_set_mmaps_max)
    with pytest.raises(InvalidConfig, match="malloc_mmap_max=0 with malloc_mmap_threshold=null.*or malloc_mmap_max=null"):
        plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=null", "malloc_trim_threshold=null", "malloc_mmap_max=0")
    # a GPU point, also one whose accelerator is `auto` on a GPU host: not glibc's concern here
    plan("size=tiny", "devices=1", "malloc_mmap_threshold=null", "malloc_mmap_max=0", host=GPU_HOST)


def test_a_lowered_mmap_threshold_without_mmap_is_refused_before_launch():
    """With malloc_mmap_max=0 no block is mmapped: a memory study's 1 MiB threshold would do
    nothing. One line naming the key; without the lowered threshold, it plans."""
    from bench.plan import InvalidConfig
    with pytest.raises(InvalidConfig, match="malloc_mmap_threshold=1048576 does nothing with malloc_mmap_max=0.*"
                                            "set malloc_mmap_max=null"):
        plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=1048576", "malloc_mmap_max=0")
    plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=1048576")
    plan("size=tiny", "accelerator=cpu", "malloc_mmap_max=0")
    for accel in ("accelerator=cuda", "accelerator=auto"):  # CPU ranks' keys: nothing to refuse on a GPU
        plan("size=tiny", accel, "devices=1", "malloc_mmap_threshold=1048576", "malloc_mmap_max=0", host=GPU_HOST)


def test_a_rank_records_the_allocator_policy_it_ran_under(tmp_path):
    spec = plan("size=tiny", "accelerator=cpu", "seq_len=32", "warmup_steps=1", "steps=1",
                "malloc_mmap_threshold=2097152", "malloc_trim_threshold=4194304", "malloc_mmap_max=null")
    out = launch_job(spec, tmp_path)
    assert out.status == "ok", out.error
    assert (out.metrics["malloc_mmap_threshold"], out.metrics["malloc_trim_threshold"],
            out.metrics["malloc_mmap_max"]) == (2097152, 4194304, None)
    out = launch_job(plan("size=tiny", "accelerator=cpu", "seq_len=32", "warmup_steps=1", "steps=1",
                          "malloc_mmap_max=0"), tmp_path / "d")
    assert out.status == "ok", out.error
    assert out.metrics["malloc_mmap_max"] == 0
    # what the OS did to the rank over the window, per step: counted, never negative
    assert out.metrics["minor_page_faults_per_step"] >= 0
    assert out.metrics["involuntary_context_switches_per_step"] >= 0
    # no sampler thread on a CPU (VmHWM gives the window's peak): RSS read at the window's two ends only
    assert out.metrics["memory_per_rank"][0]["samples"] == 2


def test_an_environment_that_disagrees_with_the_allocator_keys_is_refused(monkeypatch):
    """A rank runs under the user's MALLOC_* variables, the config hash knows only the keys: a
    different value is refused before anything runs, naming the key; the same value passes."""
    from bench.plan import InvalidConfig
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    with pytest.raises(InvalidConfig, match="set malloc_mmap_threshold=1048576 or unset MALLOC_MMAP_THRESHOLD_"):
        plan("size=tiny", "accelerator=cpu")
    plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=1048576", "malloc_mmap_max=null")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    with pytest.raises(InvalidConfig, match="malloc_trim_threshold"):
        plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=1048576", "malloc_mmap_max=null")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1099511627776")
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    with pytest.raises(InvalidConfig, match="set malloc_mmap_max=65536 or unset MALLOC_MMAP_MAX_"):
        plan("size=tiny", "accelerator=cpu", "malloc_mmap_threshold=1048576", "malloc_mmap_max=null")
    plan("size=tiny", "accelerator=cuda", "devices=1", host=GPU_HOST)  # a GPU rank's allocator is not glibc's concern here
