import json
import os

from bench.results import SCHEMA_VERSION, load, write_result


def _result(status="ok", **metrics):
    return {"schema_version": SCHEMA_VERSION, "status": status, "error": None if status == "ok" else "boom",
            "config": {"size": {"name": "tiny"}, "strategy": {"name": "dp"}, "devices": 2, "batch_size": 4},
            "config_hash": "abc", "degrees": {"dp": 2, "tp": 1, "pp": 1}, "hardware_label": "X-2c-24GB",
            "metrics": metrics or None}


def test_write_never_overwrites(tmp_path):
    p1 = write_result(str(tmp_path), _result(tokens_per_s=1.0))
    p2 = write_result(str(tmp_path), _result(tokens_per_s=2.0))
    assert os.path.basename(p1) == "result.json" and os.path.basename(p2) == "result.1.json"
    assert json.load(open(p1))["metrics"]["tokens_per_s"] == 1.0
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_result_files_are_readable_like_any_other_output(tmp_path):
    """0666 less the umask, as open() makes a file: 0644 under the usual 022 (mkstemp's 0600
    kept results from the others who read reports from a shared folder)."""
    import stat
    old = os.umask(0o022)
    try:
        p = write_result(str(tmp_path / "a"), _result(tokens_per_s=1.0))
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
        os.umask(0o077)  # a stricter umask is respected, not widened
        p = write_result(str(tmp_path / "b"), _result(tokens_per_s=1.0))
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    finally:
        os.umask(old)
    assert json.load(open(p))["metrics"]["tokens_per_s"] == 1.0
    assert not [f for f in os.listdir(tmp_path / "a") if f.endswith(".tmp")]


def test_load_is_tidy_and_skips_corrupt_files(tmp_path):
    write_result(str(tmp_path / "a"), _result(tokens_per_s=10.0, loss=[1.0, 0.5]))
    write_result(str(tmp_path / "b"), _result("failed"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "result.json").write_text('{"schema_version": 1, "stat')  # truncated
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "result.json").write_text(json.dumps({**_result(), "schema_version": 99}))
    skipped = []
    df = load([str(tmp_path)], on_skip=skipped.append)
    assert len(df) == 2 and sorted(df["status"]) == ["failed", "ok"]
    ok = df[df["status"] == "ok"].iloc[0]
    assert (ok["size"], ok["strategy"], ok["devices"], ok["degree_dp"]) == ("tiny", "dp", 2, 2)
    assert ok["tokens_per_s"] == 10.0 and ok["loss"] == [1.0, 0.5]
    assert len(skipped) == 2 and any("schema version 1 or 2" in s for s in skipped)


def test_ok_index_finds_ok_results_by_config_and_hardware(tmp_path):
    from bench.results import ok_index
    write_result(str(tmp_path / "a"), _result(tokens_per_s=1.0))
    write_result(str(tmp_path / "a"), _result(tokens_per_s=2.0))  # a rerun: result.1.json
    write_result(str(tmp_path / "b"), {**_result("failed"), "config_hash": "def"})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "result.json").write_text("{")  # truncated: passed over
    idx = ok_index(str(tmp_path))
    assert list(idx) == [("abc", "X-2c-24GB")]  # one entry per configuration and machine, every ok run in it
    assert [os.path.basename(p) for p in idx["abc", "X-2c-24GB"]] == ["result.1.json", "result.json"]
    assert ok_index(str(tmp_path / "nothing")) == {}


def test_corrupt_files_are_named_and_skipped_by_report_and_compare(tmp_path, capsys):
    import pytest

    from bench import compare, report
    from conftest import fake_set
    a, b = fake_set(tmp_path / "a"), fake_set(tmp_path / "b")
    for folder in (a, b):
        os.makedirs(os.path.join(folder, "broken"))
        with open(os.path.join(folder, "broken", "result.json"), "w") as f:
            f.write('{"schema_version": 1, "sta')
    report.main([a, "-o", str(tmp_path / "r.pdf")])
    assert (tmp_path / "r.pdf").exists()
    assert f"skipped {a}/broken/result.json: unreadable" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # identical sets: nothing slower, exit 0
        compare.main([a, b])
    assert e.value.code in (0, None) and "broken/result.json: unreadable" in capsys.readouterr().err


def test_schema_1_results_still_load(tmp_path):
    """Results written before the spec was nested (schema 1: flat spec) load with the same rows."""
    from bench.results import read_result
    v1 = {**_result(), "schema_version": 1,
          "spec": {"devices": 2, "nodes": 1, "schedule": "", "batch_size": 4, "global_batch_size": 8, "seq_len": 64,
                   "precision": "fp32", "accelerator": "cpu"}}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "result.json").write_text(json.dumps(v1))
    v2 = {**_result(), "spec": {"devices": 2, "batch_size": 4, "global_batch_size": 8, "seq_len": 64,
                                "precision": "fp32", "accelerator": "cpu", "layout": {"dp": 2},
                                "rendezvous": {"nodes": 1}}}
    write_result(str(tmp_path / "new"), v2)
    assert read_result(str(tmp_path / "old" / "result.json"))["schema_version"] == 1
    df = load([str(tmp_path)]).sort_values("path")
    cols = ["devices", "nodes", "batch_size", "global_batch_size", "seq_len", "precision", "schedule"]
    assert df[cols].iloc[0].tolist() == df[cols].iloc[1].tolist()
