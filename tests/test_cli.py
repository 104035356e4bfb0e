"""The command line: the bookkeeping of a sweep in-process (an invalid point recorded, resume,
the end-of-sweep report), and real sweeps from a real interpreter (marked slow)."""
import glob
import json
import os

import pytest
from omegaconf import OmegaConf

from bench import run
from bench.callbacks import SweepReport
from bench.launch import Outcome
from bench.results import load, write_result
from conftest import compose_cfg

TINY = ("size=tiny", "accelerator=cpu", "steps=2", "seq_len=32", "warmup_steps=1")


def fake_launch(spec, out_dir):
    """What a finished job hands back, without running one: the bookkeeping under test is
    the same whatever the figures are."""
    steps = [0.01] * spec.steps
    return Outcome("ok", metrics={
        "tokens_per_step": spec.tokens_per_step, "tokens_per_s": spec.tokens_per_step / 0.01, "window_s": 0.02,
        "step_time_s": 0.01, "step_time_s_iqr": 0.0, "step_times_s": steps, "loss": [5.5] * 3,
        "loss_first": 5.5, "loss_last": 5.5, "mfu": None, "mfu_measured_peak": 0.1,
        "mem_peak_bytes": 300 * 2**20, "mem_source": "rss (peak, per process)", "warmup_times_s": [0.02]})


def never_launch(spec, out_dir):
    raise AssertionError("an invalid point must not start anything")


@pytest.fixture
def fresh_resume_index(monkeypatch):
    monkeypatch.setattr(run, "_ok_cache", {})


def test_invalid_point_of_a_sweep_is_recorded_with_its_reason(tmp_path, capsys):
    n = run.preflight(["strategy=mp", "devices=1,2", "size.n_layer=1", *TINY], multirun=True)
    assert n == 2 and "note: 1 of 2 points cannot run and will be recorded as invalid" in capsys.readouterr().out
    out = tmp_path / "devices=2"
    [r] = run.run_point(compose_cfg("strategy=mp", "devices=2", "size.n_layer=1", "repeats=3", *TINY), str(out),
                        launch=never_launch)  # decided before launching: recorded once, not three times
    assert r["status"] == "invalid" and "use at most 1 stage" in r["error"]
    assert run.summary_line(r).startswith("  -> invalid: 2 pipeline stages need at least 2 layers but size=tiny has 1")
    d = json.load(open(out / "result.json"))
    assert d["metrics"] is None and d["hardware"]["cpu_usable"] >= 1 and d["config"]["devices"] == 2
    assert os.listdir(out) == ["result.json"]  # no rank ever started


def test_resume_skips_ok_points_and_reruns_the_rest(tmp_path, fresh_resume_index):
    root = tmp_path / "results"
    one, two = (compose_cfg(*TINY, "strategy=dp", f"devices={d}", f"results_root={root}") for d in (1, 2))
    [first] = run.run_point(one, str(root / "earlier" / "devices=1"), launch=fake_launch)
    before = open(root / "earlier" / "devices=1" / "result.json").read()
    failed = {**first, "status": "failed", "error": "planted", "config_hash": run.config_hash(two)}
    write_result(str(root / "earlier" / "devices=2"), failed)  # a failed point is rerun, not skipped
    resumed = [OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(c), {"resume": True})) for c in (one, two)]
    launched = []
    [r1] = run.run_point(resumed[0], str(root / "now" / "devices=1"), launch=lambda s, o: launched.append(1))
    [r2] = run.run_point(resumed[1], str(root / "now" / "devices=2"), launch=fake_launch)
    assert r1["status"] == "skipped" and r1["error"].startswith("resume: 1 ok run(s) exist") and not launched
    assert r2["status"] == "ok"
    [reused] = json.load(open(root / "now" / "devices=1" / "skipped.json"))["results"]
    assert reused.endswith("earlier/devices=1/result.json")
    assert open(root / "earlier" / "devices=1" / "result.json").read() == before  # never touched
    # the end-of-sweep report holds the reused result beside the new one
    reports = tmp_path / "reports"
    report_config = OmegaConf.create({"hydra": {"sweep": {"dir": str(root / "now")}}, "report_dir": str(reports)})
    SweepReport().on_multirun_end(report_config)
    assert len(glob.glob(str(reports / "now.pdf"))) == 1


def test_repeats_are_runs_of_their_own_and_resume_adds_the_missing_ones(tmp_path, fresh_resume_index):
    cfg = compose_cfg(*TINY, "strategy=dp", "repeats=3", f"results_root={tmp_path}")
    launched = []

    def counting(spec, out_dir):
        launched.append(1)
        return fake_launch(spec, out_dir)

    rs = run.run_point(cfg, str(tmp_path / "a"), launch=counting)
    assert [r["repeat"] for r in rs] == [0, 1, 2] and len(launched) == 3
    assert sorted(os.listdir(tmp_path / "a")) == ["result.1.json", "result.2.json", "result.json"]
    assert len({r["config_hash"] for r in rs}) == 1
    more = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cfg), {"repeats": 5, "resume": True}))
    rs = run.run_point(more, str(tmp_path / "b"), launch=counting)
    assert [r["repeat"] for r in rs] == [3, 4] and len(launched) == 5  # the 3 runs there are reused
    assert len(json.load(open(tmp_path / "b" / "skipped.json"))["results"]) == 3


def test_resume_numbers_new_runs_after_the_ones_it_reuses(tmp_path, fresh_resume_index):
    cfg = compose_cfg(*TINY, "strategy=dp", "repeats=3", f"results_root={tmp_path}")
    rs = run.run_point(cfg, str(tmp_path / "a"), launch=fake_launch)
    os.remove(tmp_path / "a" / "result.1.json")  # run 1 lost: runs 0 and 2 remain
    again = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cfg), {"resume": True}))
    [new] = run.run_point(again, str(tmp_path / "b"), launch=fake_launch)
    assert [r["repeat"] for r in rs] == [0, 1, 2] and new["repeat"] == 1


def test_a_point_that_left_no_result_fails_the_sweep(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    run.run_point(compose_cfg(*TINY, "strategy=single"), str(sweep / "ok"), launch=fake_launch)
    (sweep / "killed").mkdir()  # a submitit job killed before it wrote anything
    monkeypatch.setenv("SCALEBENCH_SWEEP_TOTAL", "2")
    monkeypatch.setattr(SweepReport, "exit_code", 0)
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}},
                                                    "report_dir": str(tmp_path / "reports")}))
    assert SweepReport.exit_code == 1


def test_a_sweep_exits_1_when_a_point_failed_and_0_for_benchmark_outcomes(tmp_path, monkeypatch):
    from bench.results import sweep_exit_code
    assert sweep_exit_code(["ok", "oom", "predicted_oom", "invalid", "skipped"]) == 0
    for bad in ("failed", "timeout", "diverged"):
        assert sweep_exit_code(["ok", bad]) == 1
    sweep = tmp_path / "sweep"
    run.run_point(compose_cfg(*TINY, "strategy=single"), str(sweep / "ok"), launch=fake_launch)
    run.run_point(compose_cfg(*TINY, "strategy=single"), str(sweep / "failed"),
                  launch=lambda spec, out: Outcome("failed", error="rank 1 killed by signal 9"))
    monkeypatch.setattr(SweepReport, "exit_code", 0)
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}},
                                                    "report_dir": str(tmp_path / "reports")}))
    assert SweepReport.exit_code == 1


def test_end_of_sweep_report_survives_a_failed_point(tmp_path, capsys):
    sweep = tmp_path / "results" / "sweep"
    run.run_point(compose_cfg(*TINY, "strategy=single"), str(sweep / "devices=1"), launch=fake_launch)
    run.run_point(compose_cfg(*TINY, "strategy=single", "devices=2"), str(sweep / "devices=2"), launch=never_launch)
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}},
                                                    "report_dir": str(tmp_path / "reports")}))
    out = capsys.readouterr().out
    assert "2 runs: 1 ok, 1 invalid" in out and "report: " in out
    from pypdf import PdfReader
    [pdf] = glob.glob(str(tmp_path / "reports" / "*.pdf"))
    text = "".join(p.extract_text() for p in PdfReader(pdf).pages)
    assert "1 ok" in text and "strategy=single runs on one device" in text
    assert glob.glob(str(tmp_path / "reports" / "*.csv")) and glob.glob(str(tmp_path / "reports" / "*.md"))


def test_bad_input_from_the_real_command_line(cli, tmp_path):
    # the whole table is tests/test_bad_input.py; here one row through a real interpreter
    r = cli("size=huge")
    assert r.returncode == 2 and r.stderr.startswith("error: size=huge does not exist")
    assert r.stderr.count("\n") == 1 and not (tmp_path / "results").exists()


def test_help_shows_the_keys(cli):
    r = cli("--help")
    assert r.returncode == 0 and "== Keys (key=value) ==" in r.stdout and "global_batch_size" in r.stdout
    assert "powered by Hydra" not in r.stdout


@pytest.mark.slow
def test_users_sweep_shape_on_cpu_sizes(cli, tmp_path):
    r = cli("-m", "size=tiny,mini", "strategy=dp,mp", "devices=2", "steps=3", "seq_len=64")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[point 4/4]" in r.stdout and "4 runs: 4 ok" in r.stdout
    df = load([str(tmp_path / "results")])
    assert len(df) == 4 and set(df["status"]) == {"ok"}
    assert set(zip(df["size"], df["strategy"])) == {(s, t) for s in ("tiny", "mini") for t in ("dp", "mp")}
    assert (df["tokens_per_s"] > 0).all() and (df["mem_peak_bytes"] > 0).all()
    assert set(df["mem_source"]) == {"rss (peak over the window, per process)"}
    assert set(df[df.strategy == "dp"]["degree_dp"]) == {2} and set(df[df.strategy == "mp"]["degree_pp"]) == {2}
    for f in glob.glob(str(tmp_path / "results" / "*" / "*" / "result.json")):
        d = json.load(open(f))
        assert len(d["metrics"]["step_times_s"]) == 3 and len(d["metrics"]["loss"]) == 5
        assert d["software"]["torch"] and d["config_hash"] and d["started_at"] and d["finished_at"]
        assert d["spec"]["layout"]["dp"] * d["spec"]["layout"]["pp"] == 2
        # precision=auto (the default) is stored as what ran
        assert d["config"]["precision"] == d["spec"]["precision"] == "fp32"
        assert d["config"]["precision_requested"] == "auto"
        assert d["metrics"]["mem_build_peak_bytes"] > 0 and d["metrics"]["mem_baseline_bytes"] > 0
    # the end-of-sweep callback wrote the report into reports/
    [pdf] = glob.glob(str(tmp_path / "reports" / "*.pdf"))
    assert os.path.getsize(pdf) > 10_000


@pytest.mark.slow
def test_two_sweeps_at_once_do_not_collide(tmp_path):
    """Started in the same second: separate folders and reports, and the second takes its
    turn on the cores instead of sharing them."""
    import subprocess
    import sys
    from conftest import ROOT
    env = {**os.environ, "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "bench.run", "-m", "size=tiny", "strategy=dp", "devices=2", "steps=30",
           "seq_len=32", "accelerator=cpu"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    sweeps = os.listdir(tmp_path / "results")
    assert len(sweeps) == 2 and len(glob.glob(str(tmp_path / "reports" / "*.pdf"))) == 2
    results = [json.load(open(f)) for f in glob.glob(str(tmp_path / "results" / "*" / "*" / "result.json"))]
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert any("waiting: another scalebench job holds the 2 core(s) this one needs" in o for o in outs)
    assert any("s for the cores; the point runs now" in o for o in outs)  # and says how long it waited
    waits = sorted(r["cores"]["waited_for_cores_s"] for r in results)
    assert waits[0] < 1 and waits[1] > 1 and not any(r["cores"]["shared_with_other_jobs"] for r in results)
