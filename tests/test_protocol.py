"""What the launcher and the ranks agree on: the rank-0 mark, the rank error file, faults."""
import pytest

from bench import protocol


def test_rank0_mark_is_this_launchers(tmp_path, monkeypatch):
    assert not protocol.holds_rank0(str(tmp_path))
    monkeypatch.setenv(protocol.NODE_TAG_ENV, protocol.node_tag())
    protocol.mark_rank0(str(tmp_path))
    assert protocol.holds_rank0(str(tmp_path))
    monkeypatch.setenv(protocol.NODE_TAG_ENV, "otherhost-1")  # another node's rank 0, same folder
    (tmp_path / "x").mkdir()
    protocol.mark_rank0(str(tmp_path / "x"))
    assert not protocol.holds_rank0(str(tmp_path / "x"))


def test_rank_error_round_trip(tmp_path):
    try:
        raise RuntimeError("boom")
    except RuntimeError as e:
        protocol.write_rank_error(str(tmp_path), 1, e, "failed")
    (tmp_path / "rank0.error.json").write_text("{")  # a rank killed while writing: passed over
    [err] = protocol.read_rank_errors(str(tmp_path))
    assert (err["rank"], err["status"], err["error"]) == (1, "failed", "rank 1: RuntimeError: boom")
    assert "Traceback" in err["traceback"] and err["time"] > 0


def test_parse_fault():
    assert protocol.parse_fault("kill:1:3") == ("kill", 1, 3) and protocol.parse_fault("") is None
    assert protocol.parse_fault("slow:0:0.2") == ("slow", 0, 0.2)
    with pytest.raises(ValueError, match="kill, hang, nan or slow"):
        protocol.parse_fault("boom:0:1")
