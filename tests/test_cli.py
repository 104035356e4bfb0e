"""The command line as a user types it: sweeps, bad input, the report."""
import glob
import json
import os

import pytest

from bench.results import load

pytestmark = pytest.mark.slow


def test_bad_input_from_the_real_command_line(cli, tmp_path):
    # the whole table is tests/test_bad_input.py; here one row through a real interpreter
    r = cli("size=huge")
    assert r.returncode == 2 and r.stderr.startswith("error: size=huge does not exist")
    assert r.stderr.count("\n") == 1 and not (tmp_path / "results").exists()


def test_invalid_point_of_a_sweep_is_recorded_with_its_reason(cli, tmp_path):
    r = cli("-m", "strategy=mp", "devices=1,2", "size=tiny", "size.n_layer=1", "steps=1", "seq_len=32")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "note: 1 of 2 points cannot run and will be recorded as invalid" in r.stdout
    assert "invalid: 2 pipeline stages need at least 2 layers but size=tiny has 1" in r.stdout
    df = load([str(tmp_path / "results")]).set_index("devices")
    assert df.loc[1, "status"] == "ok" and df.loc[2, "status"] == "invalid"
    assert "use at most 1 stages" in df.loc[2, "error"]
    [res] = [p for p in df["path"] if "devices=2" in p]
    d = json.load(open(res))
    assert d["metrics"] is None and d["hardware"]["cpu_usable"] >= 1
    assert not glob.glob(os.path.join(os.path.dirname(res), "rank*"))


def test_users_sweep_shape_on_cpu_sizes(cli, tmp_path):
    r = cli("-m", "size=tiny,mini", "strategy=dp,mp", "devices=2", "steps=3", "seq_len=64")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[point 4/4]" in r.stdout and "4 runs: 4 ok" in r.stdout
    df = load([str(tmp_path / "results")])
    assert len(df) == 4 and set(df["status"]) == {"ok"}
    assert set(zip(df["size"], df["strategy"])) == {(s, t) for s in ("tiny", "mini") for t in ("dp", "mp")}
    assert (df["tokens_per_s"] > 0).all() and (df["mem_peak_bytes"] > 0).all()
    assert set(df["mem_source"]) == {"rss (peak, per process)"}
    assert set(df[df.strategy == "dp"]["degree_dp"]) == {2} and set(df[df.strategy == "mp"]["degree_pp"]) == {2}
    for f in glob.glob(str(tmp_path / "results" / "*" / "*" / "result.json")):
        d = json.load(open(f))
        assert len(d["metrics"]["step_times_s"]) == 3 and len(d["metrics"]["loss"]) == 5
        assert d["software"]["torch"] and d["config_hash"] and d["started_at"] and d["finished_at"]
    # the end-of-sweep callback wrote the report into reports/
    [pdf] = glob.glob(str(tmp_path / "reports" / "*.pdf"))
    assert os.path.getsize(pdf) > 10_000


def test_end_of_sweep_report_survives_a_failed_point(cli, tmp_path):
    r = cli("-m", "size=tiny", "strategy=single", "devices=1,2", "steps=2", "seq_len=32")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 runs: 1 ok, 1 invalid" in r.stdout and "report: reports/" in r.stdout
    from pypdf import PdfReader
    [pdf] = glob.glob(str(tmp_path / "reports" / "*.pdf"))
    text = "".join(p.extract_text() for p in PdfReader(pdf).pages)
    assert "1 ok" in text and "strategy=single runs on one device" in text
    assert glob.glob(str(tmp_path / "reports" / "*.csv")) and glob.glob(str(tmp_path / "reports" / "*.md"))


def test_resume_skips_ok_points_and_reruns_the_rest(cli, tmp_path):
    base = ("size=tiny", "strategy=dp", "steps=2", "seq_len=32", "warmup_steps=1")
    r = cli("-m", *base, "devices=1")
    assert r.returncode == 0, r.stderr[-2000:]
    [first] = glob.glob(str(tmp_path / "results" / "*" / "*" / "result.json"))
    before = open(first).read()
    # a failed point from an earlier sweep is rerun, not skipped
    from bench.plan import config_hash
    from bench.results import write_result
    from conftest import compose_cfg
    failed = json.loads(before)
    failed.update(status="failed", error="planted", config_hash=config_hash(compose_cfg(*base, "devices=2")))
    write_result(str(tmp_path / "results" / "earlier" / "devices=2"), failed)
    r = cli("-m", *base, "devices=1,2", "resume=true")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resume: 1 point(s) skipped" in r.stdout and "-> skipped: resume: an ok result exists" in r.stdout
    assert "2 runs: 2 ok" in r.stdout  # the report holds the reused result and the new one
    assert open(first).read() == before  # never touched
    files = glob.glob(str(tmp_path / "results" / "*" / "*" / "result.json"))
    assert len(files) == 3 and len(glob.glob(str(tmp_path / "results" / "*" / "*" / "skipped.json"))) == 1
    # without resume, the same sweep measures again, into a new folder
    r = cli("-m", *base, "devices=1")
    assert r.returncode == 0 and len(glob.glob(str(tmp_path / "results" / "*" / "*" / "result.json"))) == 4


def test_two_sweeps_at_once_do_not_collide(tmp_path):
    """Started in the same second: separate folders and reports, separate rendezvous ports,
    and the second takes its turn on the cores instead of sharing them."""
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
    assert any("waiting: another scalebench job holds the cores" in o for o in outs)
    waits = sorted(r["cores"]["waited_for_cores_s"] for r in results)
    assert waits[0] < 1 and waits[1] > 1 and not any(r["cores"]["shared_with_other_jobs"] for r in results)
