"""The GPU acceptance command's plan (bench/acceptance.py): the steps the issue asks for, and
every sweep in it composes and plans, on an 8-GPU node (planned, never run) and on this CPU."""
import pytest

from bench.acceptance import figures, plan_steps
from bench.plan import InvalidConfig
from bench.run import compose_points
from bench.plan import make_spec
from conftest import GPU_HOST, HOST


def _runs(steps):
    return [s for s in steps if s.argv[0] == "bench.run"]


def test_gpu_plan_has_every_step_of_the_issue(tmp_path):
    one = plan_steps(str(tmp_path), gpus=1, rehearsal=False)
    names = [s.name for s in one]
    assert names[0] == "gpu tests" and names[-3:] == ["perf, bf16", "single: compile", "report"]
    assert "2 devices, bf16" not in names  # one GPU: no 2-device step
    joined = [" ".join(s.argv) for s in one]
    assert any("strategy=single,dp,fsdp,tp,mp,dataparallel" in j and "precision=bf16" in j and "size=small" in j
               for j in joined)
    assert any("precision=fp32,fp16" in j for j in joined) and any("compile=true" in j for j in joined)
    perf = next(s for s in one if s.name == "perf, bf16")
    assert "small,medium,large,xl" in perf.argv and "bf16" in perf.argv and "seq_len=1024" in perf.argv
    assert "--compile" in perf.argv
    two = plan_steps(str(tmp_path), gpus=2, rehearsal=False)
    assert any("strategy=dp,fsdp,tp" in " ".join(s.argv) and "devices=2" in s.argv for s in two)


@pytest.mark.parametrize("rehearsal,host", [(False, GPU_HOST), (True, HOST)])
def test_every_sweep_of_the_plan_composes_and_plans(tmp_path, rehearsal, host):
    """On the GPU host every point plans; on this CPU only the CUDA-only ones (fp16,
    nn.DataParallel) are invalid, and they say why."""
    for step in _runs(plan_steps(str(tmp_path), gpus=2, rehearsal=rehearsal)):
        overrides = [a for a in step.argv[1:] if a != "-m"]
        points, _ = compose_points(overrides, True)
        assert points
        for what, cfg in points:
            try:
                make_spec(cfg, host)
            except InvalidConfig as e:
                assert rehearsal and ("fp16" in what or "dataparallel" in what), f"{what}: {e}"


def test_figures_reads_results(tmp_path):
    import json
    d = tmp_path / "results" / "s" / "p"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({
        "status": "ok", "config": {"size": {"name": "small"}, "strategy": {"name": "dp"}, "devices": 1},
        "spec": {"precision": "bf16"}, "prediction": {"total_bytes": 5, "model_bytes": 2},
        "metrics": {"tokens_per_s": 10.0, "mfu": 0.4, "mem_peak_bytes": 7, "mem_source": "nvml (used, peak over the window)",
                    "mem_torch_max_reserved_bytes": 6, "energy_j": 2.0, "tokens_per_j": 5.0,
                    "mem_baseline_bytes": 3, "mem_peak_above_baseline_bytes": 4}}))
    [row] = figures(str(tmp_path / "results"))
    assert row["precision"] == "bf16" and row["mem_nvml_used_peak_bytes"] == 7 and row["mfu_datasheet"] == 0.4
    assert row["mem_torch_max_reserved_bytes"] == 6 and row["mem_predicted_bytes"] == 5 and row["point"] == "s/p"
    # the like-for-like pair beside the totals: measured above the runtime baseline, the model's part
    assert (row["mem_baseline_bytes"], row["mem_peak_above_baseline_bytes"], row["mem_predicted_model_bytes"]) == (3, 4, 2)


def test_a_used_out_folder_is_refused_before_anything_runs(tmp_path, capsys):
    """A second run into the same folder would pool both runs' results in one report."""
    from bench.acceptance import main
    (tmp_path / "log.txt").write_text("an earlier run\n")
    assert main(["--out", str(tmp_path), "--cpu-rehearsal"]) == 2
    assert "is not empty; give a new folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt"]


def test_a_step_past_its_limit_is_ended_with_its_children(tmp_path, monkeypatch):
    """A hung step (here: a module that starts a child and sleeps) is ended, child too, after
    its limit, recorded 124, and the command goes on."""
    import io
    import os
    import time
    from pathlib import Path

    from bench.acceptance import Step, run_step
    pidfile = tmp_path / "child.pid"
    (tmp_path / "sleeper.py").write_text(
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    log = io.StringIO()
    t0 = time.monotonic()
    rc, took = run_step(Step("hang", ("sleeper",), timeout_s=2.0), log)
    assert rc == 124 and 2.0 <= took < 30 and time.monotonic() - t0 < 30
    assert "started" in log.getvalue() and "ended after its limit of 2 s" in log.getvalue()
    child = int(pidfile.read_text())
    for _ in range(50):  # the child was in the step's process group: gone (or a zombie being reaped)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        try:
            if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                break
        except FileNotFoundError:  # reaped between the two looks
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the step's child outlived it")


def test_a_step_keeps_its_exit_code(tmp_path, monkeypatch):
    import io

    from bench.acceptance import Step, run_step
    (tmp_path / "three.py").write_text("import sys\nprint('done', flush=True)\nsys.exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    log = io.StringIO()
    rc, took = run_step(Step("exits 3", ("three",), timeout_s=60.0), log)
    assert rc == 3 and took < 60 and "done" in log.getvalue() and "limit" not in log.getvalue()
