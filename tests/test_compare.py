"""compare: verdicts over runs (never steps), Holm-corrected, with a minimum effect and a
minimum of runs; the false-positive rate on simulated A/A sweeps; the command's exit codes."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench import compare
from conftest import ROOT, fake_set

ALPHA = 0.05


def _runs(rng, n, level=1000.0, spread=0.15):
    """n runs' tokens/s with this VM's between-process drift (lognormal, 15%)."""
    return level * np.exp(spread * rng.standard_normal(n))


def test_a_real_difference_is_found_and_noise_is_not():
    rng = np.random.default_rng(1)
    base = _runs(rng, 5, spread=0.02)
    [slower] = compare.verdicts([(base, 0.8 * _runs(rng, 5, spread=0.02))])
    assert slower["verdict"] == "slower" and slower["ratio"] == pytest.approx(0.8, abs=0.03)
    [same] = compare.verdicts([(base, _runs(rng, 5, spread=0.02))])
    assert same["verdict"] == "within noise"
    steady = np.array([1000.0, 1002.0, 998.0, 1001.0, 999.0])
    [tiny] = compare.verdicts([(steady, 1.03 * steady)])  # significant, but under --min-ratio 5%
    assert tiny["p_value"] < 0.01 and tiny["verdict"] == "within noise"


def test_too_few_runs_give_no_verdict_whatever_the_ratio():
    [v] = compare.verdicts([([1000.0, 1010.0], [500.0, 505.0])])
    assert v["verdict"] == "no verdict (2 run(s); use repeats=3)" and np.isnan(v["p_value"])
    assert v["ratio"] == pytest.approx(0.5, abs=0.01)
    assert np.isnan(v["ci_low"]) and np.isnan(v["ci_high"])  # no interval without a verdict: nothing looks found
    [v] = compare.verdicts([([1000.0, 1010.0, 990.0], [500.0, 505.0, 495.0])])
    assert v["ci_low"] <= v["ratio"] <= v["ci_high"]  # 3 a side: shown


def test_the_advice_is_the_repeats_that_give_three_runs_a_side():
    assert compare.repeats_needed(aa=False) == 3
    assert compare.repeats_needed(aa=True) == 6  # even/odd split of repeats=6: 3 a side; of repeats=3: 2 and 1
    [v] = compare.verdicts([([1000.0, 1010.0], [500.0])], repeats=compare.repeats_needed(True))
    assert v["verdict"] == "no verdict (1 run(s); use repeats=6)"


def test_the_correction_spans_every_configuration():
    rng = np.random.default_rng(2)
    pairs = [(_runs(rng, 5, spread=0.02), 0.9 * _runs(rng, 5, spread=0.02)) for _ in range(20)]
    out = compare.verdicts(pairs)
    assert all(o["p_holm"] >= o["p_value"] for o in out)
    assert max(o["p_holm"] for o in out) <= 1.0


def test_false_positives_on_simulated_aa_sweeps_stay_under_alpha():
    """A/A: both sides are runs of the same thing with 15% between-run drift, 5 runs a side,
    40 configurations a sweep. Holm keeps the chance that a sweep flags anything at alpha."""
    rng = np.random.default_rng(3)
    sweeps, configs = 300, 40
    flagged = rows_flagged = 0
    for _ in range(sweeps):
        out = compare.verdicts([(_runs(rng, 5), _runs(rng, 5)) for _ in range(configs)], ALPHA, 0.05,
                               intervals=False)
        bad = sum(o["verdict"] in ("faster", "slower") for o in out)
        flagged += bad > 0
        rows_flagged += bad
    assert flagged / sweeps <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / sweeps)  # within Monte Carlo error
    assert rows_flagged / (sweeps * configs) <= ALPHA


def _run(*args):
    return subprocess.run([sys.executable, "-m", "bench.compare", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})


def test_cli_flags_a_planted_slowdown_and_passes_identical_sets(tmp_path):
    a = fake_set(tmp_path / "a", runs=5, spread=0.03, seed=1)
    b = fake_set(tmp_path / "b", scale=1.25, runs=5, spread=0.03, seed=2)
    r = _run(a, b, "--pdf", str(tmp_path / "c.pdf"))
    assert r.returncode == 1 and "slower" in r.stdout and (tmp_path / "c.pdf").exists(), r.stdout + r.stderr
    assert "Holm-adjusted over 1 configuration(s)" in r.stdout
    assert (tmp_path / "c.compare.csv").exists()  # the page's table beside the report, as the report's pages
    r = _run(a, fake_set(tmp_path / "a2", runs=5, spread=0.03, seed=3))
    assert r.returncode == 0 and "within noise" in r.stdout
    r = _run(fake_set(tmp_path / "one", runs=1), fake_set(tmp_path / "slow1", scale=1.25, runs=1))
    assert r.returncode == 0 and "no verdict (1 run(s); use repeats=3)" in r.stdout  # never a regression


def test_aa_check_splits_one_set_alternately(tmp_path):
    r = _run("--aa", fake_set(tmp_path / "aa", runs=10, spread=0.01, seed=4))  # 1% drift: under --min-ratio
    assert r.returncode == 0 and "(odd runs)" in r.stdout and "within noise" in r.stdout, r.stdout + r.stderr


def test_two_machines_in_one_set_are_two_rows(tmp_path):
    from bench.results import load
    x = load([fake_set(tmp_path / "x", runs=3, seed=1)])  # machine M1.0
    y = load([fake_set(tmp_path / "y", scale=3.0, runs=3, seed=2)])  # machine M3.0, a third as fast
    z = load([fake_set(tmp_path / "z", scale=2.0, runs=3, seed=3)])
    t = compare.compare([pd.concat([x, y], ignore_index=True), z], ["xy", "z"])
    assert len(t) == 2 and sorted(t["baseline_runs"]) == [3, 3]
    assert sorted(round(r, 1) for r in t["ratio"]) == [0.5, 1.5]  # never the median of both machines


# -- the A/A advice, intervals, the drift line, the error, the CSV, the page's footer -------

def _main(capsys, *args):
    """`python -m bench.compare ARGS` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        compare.main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _patch(folder, fn):
    """Rewrite each result file under `folder` with fn(result) (fake_set writes no times nor data)."""
    import json

    from bench.results import find_result_files
    for f in find_result_files([str(folder)]):
        with open(f) as fh:
            r = json.load(fh)
        fn(r)
        with open(f, "w") as fh:
            json.dump(r, fh)


def _stamp(folder, first_minute, every=2, with_start=True):
    """Run `repeat` i started at 13:<first_minute + every * i> UTC on 2026-11-30, 50 s long."""
    import datetime as dt

    def fn(r):
        start = dt.datetime(2026, 11, 30, 13, tzinfo=dt.timezone.utc) + dt.timedelta(
            minutes=first_minute + every * r["repeat"])
        if with_start:
            r["started_at"] = start.isoformat(timespec="seconds")
        r["finished_at"] = (start + dt.timedelta(seconds=50)).isoformat(timespec="seconds")
        r["duration_s"] = 50.0
    _patch(folder, fn)
    return str(folder)


def _row_of(out, config="mini"):
    return next(line for line in out.splitlines() if line.lstrip().startswith(config))


def test_aa_with_three_repeats_asks_for_six_and_shows_no_interval(tmp_path, capsys):
    code, out, _ = _main(capsys, "--aa", fake_set(tmp_path / "aa", runs=3, spread=0.1, seed=4))
    row = _row_of(out)
    assert code == 0 and "no verdict (1 run(s); use repeats=6)" in row, out  # repeats=3 was used: 2 and 1 runs
    assert "[" not in row and " - " in row  # the ratio alone: no interval to read as a finding
    code, out, _ = _main(capsys, fake_set(tmp_path / "two", runs=2, seed=1), fake_set(tmp_path / "one", runs=1))
    row = _row_of(out)
    assert code == 0 and "no verdict (1 run(s); use repeats=3)" in row and "[" not in row, out


def test_intervals_are_shown_with_three_runs_a_side(tmp_path, capsys):
    code, out, _ = _main(capsys, fake_set(tmp_path / "a", runs=3, seed=1), fake_set(tmp_path / "b", runs=3, seed=2))
    assert code == 0 and "[" in _row_of(out) and "bootstrap over runs" in out, out


def test_timing_of_the_two_sides():
    def at(*minutes):
        return pd.Series([pd.Timestamp("2026-11-30 13:00", tz="UTC") + pd.Timedelta(minutes=m) for m in minutes])
    one, two = at(0, 2, 4), at(6, 8, 10)
    order, share = compare.timing(one, one + pd.Timedelta(seconds=50), two, two + pd.Timedelta(seconds=50))
    assert (order, share) == ("one after the other", 1.0)
    assert compare.timing(two, two + pd.Timedelta(seconds=50), one, one + pd.Timedelta(seconds=50))[1] == 0.0
    a, b = at(0, 2, 4), at(1, 3, 5)  # alternated: a before b in 6 of 9 pairs
    assert compare.timing(a, a + pd.Timedelta(seconds=50), b, b + pd.Timedelta(seconds=50)) == \
        ("interleaved", pytest.approx(6 / 9))
    a, b = at(0, 1, 2, 4), at(3, 5, 6, 7)  # AAABABBB: overlapping spans, a first in 15 of 16 pairs
    assert compare.timing(a, a + pd.Timedelta(seconds=30), b, b + pd.Timedelta(seconds=30)) == \
        ("overlapping", pytest.approx(15 / 16))
    assert compare.timing(a, a, pd.Series([pd.NaT] * 2), pd.Series([pd.NaT] * 2))[0] == "unknown"
    # a start derived from whole-second times may be a second early: still one after the other
    assert compare.timing(at(0), at(1), at(1) - pd.Timedelta(seconds=1), at(2))[0] == "one after the other"


def test_a_flagged_difference_says_whether_the_sides_were_interleaved(tmp_path, capsys):
    a = _stamp(fake_set(tmp_path / "a", runs=5, spread=0.03, seed=1), 2)  # 13:02 ... 13:10:50
    b = _stamp(fake_set(tmp_path / "b", scale=1.25, runs=5, spread=0.03, seed=2), 11)  # 13:11 ... 13:19:50
    code, out, _ = _main(capsys, a, b)
    note = [line for line in out.splitlines() if line.startswith("note:")]
    assert code == 1 and len(note) == 1, out
    assert "interleaved in time" in note[0] and "one after the other" in note[0]
    assert f"{a} 13:02-13:10, {b} 13:11-13:19 UTC" in note[0] and "alternate" in note[0]
    # the same runs alternated (and with only finished_at and duration_s, as bench.results.flatten keeps them)
    b2 = _stamp(fake_set(tmp_path / "b2", scale=1.25, runs=5, spread=0.03, seed=2), 3, with_start=False)
    code, out, _ = _main(capsys, a, b2)
    [note] = [line for line in out.splitlines() if line.startswith("note:")]
    assert code == 1 and "they were here" in note and "one after the other (" not in note, note
    code, out, _ = _main(capsys, fake_set(tmp_path / "c", runs=5, spread=0.03, seed=1),
                         fake_set(tmp_path / "d", scale=1.25, runs=5, spread=0.03, seed=2))
    [note] = [line for line in out.splitlines() if line.startswith("note:")]
    assert "no run times to check" in note and "interleaved in time" in note
    code, out, _ = _main(capsys, a, _stamp(fake_set(tmp_path / "e", runs=5, spread=0.03, seed=3), 11))
    assert code == 0 and "note:" not in out  # nothing flagged: nothing to explain


def test_no_configuration_in_common_names_what_differs(tmp_path, capsys):
    a, b = fake_set(tmp_path / "a", runs=1), fake_set(tmp_path / "b", runs=1)
    _patch(a, lambda r: r["config"].update(data="text"))
    _patch(b, lambda r: r["config"].update(data="synthetic"))
    code, _, err = _main(capsys, a, b)
    assert code == 2 and f"no configuration in common: the sets differ in data ({a}: text; {b}: synthetic)" in err
    # each value in both sets, never in the same combination: nothing to name, and it says so
    x = pd.DataFrame({"size": ["mini", "tiny"], "data": ["text", "synthetic"]})
    y = pd.DataFrame({"size": ["mini", "tiny"], "data": ["synthetic", "text"]})
    assert compare.differing_settings(x, y) == []
    assert "never in the same combination" in compare.no_common_message(["x", "y"], [x, y])
    # a field whose values overlap is named only when no field keeps the sets apart by itself
    z = pd.DataFrame({"size": ["mini", "tiny"], "data": ["text", "text"]})
    assert compare.differing_settings(x, z) == [("data", ["synthetic", "text"], ["text"])]
    w = pd.DataFrame({"size": ["small", "small"], "data": ["text", "text"]})
    assert [d[0] for d in compare.differing_settings(x, w)] == ["size"]


def test_the_table_as_csv(tmp_path, capsys):
    a, b = fake_set(tmp_path / "a", sizes=("mini", "tiny"), runs=3, seed=1), \
        fake_set(tmp_path / "b", sizes=("mini", "tiny"), runs=3, seed=2)
    os.remove(os.path.join(b, "tiny", "result.2.json"))  # tiny: 3 runs against 2
    code, out, _ = _main(capsys, a, b, "--csv", str(tmp_path / "out" / "t.csv"))
    t = pd.read_csv(tmp_path / "out" / "t.csv")
    assert code == 0 and len(t) == 2, out
    for col in ("config", "size", "strategy", "devices", "batch_size", "data", "baseline_machine", "baseline_runs",
                "other_runs", "baseline_tokens_per_s", "ratio", "ci_low", "ci_high", "p_value", "p_holm", "verdict"):
        assert col in t, col
    mini, tiny = t.set_index("size").loc["mini"], t.set_index("size").loc["tiny"]
    assert mini["ci_low"] <= mini["ratio"] <= mini["ci_high"] and mini["verdict"] == "within noise"
    assert np.isnan(tiny["ci_low"]) and np.isnan(tiny["p_value"]) and tiny["other_runs"] == 2  # blank: not shown
    assert tiny["verdict"] == "no verdict (2 run(s); use repeats=3)"


def test_the_page_footer_says_what_it_holds_fixed(tmp_path):
    from bench.results import load
    a = load([fake_set(tmp_path / "a", runs=3, seed=1)])
    same = compare.compare([a, load([fake_set(tmp_path / "b", runs=3, seed=2)])], ["a", "b"])
    assert compare.footer(same).startswith("held fixed on this page: M1.0") and "compare.csv" in compare.footer(same)
    other = compare.compare([a, load([fake_set(tmp_path / "c", scale=2.0, runs=1, seed=2)])], ["a", "c"])
    assert "M1.0" not in compare.footer(other) and "M2.0" not in compare.footer(other)  # the machine differs
    fig = compare.fig_compare(other)  # 3 runs against 1: no interval drawn
    assert any(compare.footer(other) == t.get_text() for t in fig.texts)
    assert not fig.axes[0].collections  # no error bars
