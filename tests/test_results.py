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
    assert len(skipped) == 2 and any("schema version" in s for s in skipped)
