"""The command line as a user types it: sweeps, bad input, the report."""
import glob
import json
import os

import pytest

from bench.results import load

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("args,needle", [
    (["foo=1"], "Key 'foo' not in 'BenchConfig'"),
    (["devices=abc"], "could not be converted to Integer"),
    (["size=huge"], "size=huge does not exist; choose one of: 13b, 2.7b"),
    (["-m", "size=tiny,huge"], "size=huge does not exist"),
    (["precision=fp8"], "expected one of [fp32, bf16, fp16, auto]"),
    (["strategy=nope"], "strategy=nope does not exist"),
    (["size=tiny,mini"], "needs -m"),
])
def test_bad_input_is_one_line_and_starts_nothing(cli, tmp_path, args, needle):
    r = cli(*args)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and needle in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "results").exists()  # no job, no worker, no folder


def test_invalid_point_is_recorded_with_its_reason(cli, tmp_path):
    r = cli("strategy=mp", "devices=2", "size=tiny", "size.n_layer=1")
    assert r.returncode == 2
    assert "invalid: 2 pipeline stages need at least 2 layers but size=tiny has 1" in r.stdout
    [res] = glob.glob(str(tmp_path / "results" / "*" / "*" / "result.json"))
    d = json.load(open(res))
    assert d["status"] == "invalid" and "use at most 1 stages" in d["error"]
    assert d["metrics"] is None and d["hardware"]["cpu_usable"] >= 1
    assert not glob.glob(str(tmp_path / "results" / "*" / "*" / "rank*"))


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


def test_report_cli(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-m", "bench.report", str(tmp_path / "nothing"), "-o",
                        str(tmp_path / "x.pdf")], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "no such file or folder" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "bench.report", str(tmp_path / "empty")],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "no result.json" in r.stderr


def test_end_of_sweep_report_survives_a_failed_point(cli, tmp_path):
    r = cli("-m", "size=tiny", "strategy=single", "devices=1,2", "steps=2", "seq_len=32")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 runs: 1 ok, 1 invalid" in r.stdout and "report: reports/" in r.stdout
    from pypdf import PdfReader
    [pdf] = glob.glob(str(tmp_path / "reports" / "*.pdf"))
    text = "".join(p.extract_text() for p in PdfReader(pdf).pages)
    assert "1 ok" in text and "strategy=single runs on one device" in text
    assert glob.glob(str(tmp_path / "reports" / "*.csv")) and glob.glob(str(tmp_path / "reports" / "*.md"))
