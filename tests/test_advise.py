"""The advisor: enumeration (counted by hand), the verdicts before launching, successive
halving and the tie rule on constructed measurements, advice.json's schema, and (slow) a
real advice run with a planted hang."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from hydra import compose
from omegaconf import OmegaConf

from bench import advise, halving
from bench.candidates import AT_RISK, INVALID, PRUNED, SURVIVOR, classify, enumerate_candidates
from bench.protocol import fault_for
from bench.stats import paired_ratio
from conftest import HOST, ROOT, compose_cfg


def advise_cfg(*overrides):
    compose_cfg()  # Hydra initialised for the session
    return OmegaConf.to_object(compose("advise", overrides=list(overrides)))


def by_strategy(cands):
    out = {}
    for c in cands:
        out[c.cfg.strategy.name] = out.get(c.cfg.strategy.name, 0) + 1
    return out


# -- enumeration, counted by hand ---------------------------------------------------------------

def test_enumeration_tiny_on_two_devices():
    # G = 16 (batch 8 x 2 devices). dp, fsdp: dp=2, a over divisors of 8: 4 splits; tp, mp, single,
    # dataparallel: dp=1 (dataparallel: dp=2 -> 4 splits), a over divisors of 16: 5 splits.
    # mp: naive 5; gpipe, 1f1b, interleaved: sum over b in 16,8,4,2,1 of d(b) = 5+4+3+2+1 = 15 each.
    # hybrid: no inner degree strictly between 1 and 2. Checkpointing doubles everything.
    cands = enumerate_candidates(advise_cfg("size=tiny", "devices=2"))
    assert by_strategy(cands) == {"single": 10, "dp": 8, "fsdp": 16, "tp": 20, "mp": 100, "dataparallel": 8}
    assert len(cands) == 162 == len({c.name for c in cands})  # each layout once


def test_enumeration_hybrid_on_four_devices_without_checkpointing():
    # G = 16 on 4 devices: hybrid inner degree 2, dp = 2, b x a = 8: 4 splits.
    # dp x tp: 2 (sp off/on) x 4 = 8; dp x pp: naive 4 + 3 schedules x (d(8)+d(4)+d(2)+d(1) = 10) = 34.
    cands = enumerate_candidates(advise_cfg("size=tiny", "devices=4", "global_batch_size=16"), ["hybrid"],
                                 checkpointing=False)
    assert len(cands) == 42
    assert {(c.cfg.strategy.tp, c.cfg.strategy.pp) for c in cands} == {(2, 1), (1, 2)}
    assert all(c.cfg.global_batch_size == 16 for c in cands)


def test_enumeration_mp_mini_global_batch_8():
    # naive: d(8) = 4 splits; each micro-batched schedule: 4+3+2+1 = 10 (m over the divisors of b)
    cands = enumerate_candidates(advise_cfg("size=mini", "devices=2", "global_batch_size=8"), ["mp"],
                                 checkpointing=False)
    assert len(cands) == 34
    assert sorted({c.cfg.strategy.microbatches for c in cands if c.cfg.strategy.schedule.value == "gpipe"}) == [1, 2, 4, 8]


def test_each_candidate_keeps_the_global_batch_and_reproduces():
    cfg = advise_cfg("size=mini", "devices=2", "global_batch_size=8")
    for c in enumerate_candidates(cfg, ["dp", "tp"]):
        assert "global_batch_size=8" in c.name and c.name.startswith(f"strategy={c.cfg.strategy.name}")
        v = classify(c, HOST)
        if v.spec is not None:
            assert v.spec.global_batch_size == 8
            assert v.spec.batch_size * v.spec.layout.dp * v.spec.grad_accum == 8


# -- pruning --------------------------------------------------------------------------------------

def test_invalid_layouts_carry_the_validators_message():
    cands = enumerate_candidates(advise_cfg("size=tiny", "devices=2"), ["single", "tp", "mp"], checkpointing=False)
    reasons = {classify(c, HOST).reason for c in cands if classify(c, HOST).fate == INVALID}
    assert any("strategy=single runs on one device" in r for r in reasons)
    assert any("schedule=1f1b needs strategy.microbatches=1 to be at least the 2 stages" in r for r in reasons)
    assert any("needs 4 layers but size=tiny has 2" in r for r in reasons)  # interleaved, 2 chunks x 2 stages


def test_memory_fates_against_a_capacity():
    c = enumerate_candidates(advise_cfg("size=mini", "devices=2"), ["dp"], checkpointing=False)[0]
    v = classify(c, HOST)
    assert v.fate == SURVIVOR and v.need_low_bytes < v.need_bytes
    # the lower bound above the capacity: pruned, with both figures; between the lower bound and
    # the prediction (or within 10% of it): measured, flagged
    pruned = classify(c, HOST, capacity_bytes=v.need_low_bytes - 1)
    assert pruned.fate == PRUNED and "GiB" in pruned.reason and "at least" in pruned.reason
    assert classify(c, HOST, capacity_bytes=v.need_low_bytes).fate == AT_RISK
    assert classify(c, HOST, capacity_bytes=int(v.need_bytes / 0.9) + 1).fate == SURVIVOR


# -- halving and the verdict ---------------------------------------------------------------------

def test_keep_better_halves_and_never_keeps_a_failure():
    scores = {"a": 10.0, "b": 30.0, "c": None, "d": 20.0, "e": 5.0}
    assert halving.keep_better(scores, finalists=1) == ["b", "d"]  # ceil(4 measured / 2)
    assert halving.keep_better(scores, finalists=3) == ["b", "d", "a"]
    assert halving.keep_better({"a": None}, finalists=2) == []


def test_rung_steps_double_up_to_the_final_steps():
    assert [halving.rung_steps(2, 8, r) for r in range(5)] == [2, 4, 8, 8, 8]


def test_paired_ratio_by_hand():
    # per-process ratios 2, 2, 2: the ratio is 2 with no spread (p = 0); the pairing removes the
    # processes' drift (the second process is twice as slow for both)
    r, lo, hi, p = paired_ratio([4.0, 2.0, 8.0], [2.0, 1.0, 4.0])
    assert (r, lo, hi) == (pytest.approx(2.0),) * 3 and p == pytest.approx(0.0, abs=1e-12)
    r, lo, hi, p = paired_ratio([1.1, 1.0, 1.2], [1.0, 1.0, 1.0])  # logs .0953, 0, .1823: mean .0925, sd .0912
    assert r == pytest.approx(math.exp(0.09255), rel=1e-3)
    assert lo == pytest.approx(math.exp(0.09255 - 4.3027 * 0.09117 / math.sqrt(3)), rel=1e-3)
    # t = .09254 / (.09119 / sqrt 3) = 1.7577 on 2 degrees of freedom, where the two-sided p is
    # 1 - t / sqrt(t^2 + 2) exactly = 1 - 1.7577 / 2.2560 = 0.2209
    assert p == pytest.approx(0.2209, abs=1e-3)


def test_tie_rule():
    # 3% apart, consistently in every process: beyond noise; 1% apart with 5% jitter: a tie;
    # 2 processes: never beyond noise, however consistent
    s = halving.verdict({"a": [103, 51.5, 206], "b": [100, 50, 200]})
    assert s[0].key == "a" and s[1].significant and s[1].margin == pytest.approx(0.03)
    s = halving.verdict({"a": [101, 95, 108], "b": [100, 100, 100]})
    assert not s[1].significant and halving.separated(s) is False
    s = halving.verdict({"a": [110, 110], "b": [100, 100]})
    assert not s[1].significant and s[1].pairs == 2


def test_holm_applies_over_the_runners_up():
    runs = {"a": [100, 100, 100, 100], "b": [97, 96.5, 98, 97], "c": [99, 97, 101, 98.5]}
    s = {x.key: x for x in halving.verdict(runs)}
    assert s["b"].significant and not s["c"].significant
    assert s["c"].p_adjusted >= s["c"].p


def _fake_measure(true: dict[str, float], log: list, drift=(1.0, 0.8, 1.2, 0.9, 1.1, 1.05)):
    """Tokens/s = true speed x the process's drift (shared by everything in it)."""
    def measure(keys, steps, job, final):
        log.append((tuple(keys), steps, job))
        return {k: (None if true[k] is None else true[k] * drift[job % len(drift)]) for k in keys}
    return measure


def test_successive_halving_on_constructed_measurements():
    true = {f"c{i}": 100.0 + i for i in range(16)}
    true["c3"] = None  # fails whenever measured
    log = []
    h = halving.successive_halving(list(true), _fake_measure(true, log), first_steps=2, steps=8, repeats=3,
                                   finalists=2)
    # rungs on process 0: 16 (15 measured) -> 8 -> 4 -> 2; steps 2, 4, 8, 8
    assert [(len(k), s, j) for k, s, j in log[:3]] == [(16, 2, 0), (8, 4, 0), (4, 8, 0)]
    assert h.finalists == ["c15", "c14"]
    # then the finalists at 8 steps in processes 0, 1, 2, and the drift cancels in the pairs
    assert [(len(k), s, j) for k, s, j in log[3:]] == [(2, 8, 0), (2, 8, 1), (2, 8, 2)]
    assert h.standings[0].key == "c15" and h.standings[1].significant and h.stopped == "separated"


def test_halving_adds_processes_while_tied_then_names_the_tie():
    true = {"a": 100.0, "b": 100.0, "c": 50.0}
    log = []
    h = halving.successive_halving(list(true), _fake_measure(true, log), first_steps=2, steps=4, repeats=3,
                                   finalists=2)
    assert h.stopped == "repeats" and len(h.final_runs["a"]) == 6  # up to twice the repeats
    assert not h.standings[1].significant


def test_budget_ends_the_measuring():
    true = {f"c{i}": 100.0 + i for i in range(8)}
    calls = []
    h = halving.successive_halving(list(true), _fake_measure(true, calls), first_steps=2, steps=8, repeats=3,
                                   finalists=2, budget_left=lambda: len(calls) < 2)
    assert h.stopped == "budget" and len(calls) == 2


def test_exhaustive_and_halving_agree_on_constructed_measurements():
    true = {f"c{i}": 100.0 * (1 + 0.02 * i) for i in range(10)}
    ex = halving.successive_halving(list(true), _fake_measure(true, []), first_steps=8, steps=8, repeats=3,
                                    finalists=len(true), max_repeats=3)
    sh = halving.successive_halving(list(true), _fake_measure(true, []), first_steps=2, steps=8, repeats=3)
    assert ex.standings[0].key == sh.standings[0].key == "c9"


# -- advice.json --------------------------------------------------------------------------------

class _Runner:
    sweep_dir = "/s"

    def __init__(self, results):
        self.results = results


def test_advice_schema_and_fates():
    cfg = advise_cfg("size=tiny", "devices=2", "global_batch_size=4")
    cands = {f"c{i}": c for i, c in enumerate(enumerate_candidates(cfg, ["dp", "tp"], checkpointing=False))}
    verdicts = {k: classify(c, HOST) for k, c in cands.items()}
    keys = list(cands)  # dp b=2x1, dp b=1x2, tp b=4x1, tp b=2x2, tp b=1x4, then tp+sp ...
    h = halving.History()
    h.rungs = [halving.Rung(0, 2, 0, {k: 100.0 + i for i, k in enumerate(keys)}, keys[-2:])]
    h.finalists = keys[-2:]
    h.final_runs = {keys[-1]: [110.0, 88.0, 132.0], keys[-2]: [100.0, 80.0, 120.0]}
    h.standings = halving.verdict(h.final_runs)
    h.stopped = "separated"
    ok = {"status": "ok", "config": {"steps": cfg.steps}, "path": "/s/x/result.json",
          "metrics": {"mem_peak_bytes": 300 * 2**20, "mem_peak_above_baseline_bytes": 60 * 2**20, "mem_source": "rss"},
          "prediction": {"model_bytes": 50 * 2**20, "total_bytes": 50 * 2**20}}
    failed = {"status": "timeout", "error": "no result after timeout_s=5", "config": {"steps": 2}, "path": "/s/y/result.json"}
    a = advise.build_advice(cfg, cands, verdicts, h, _Runner({keys[-1]: [ok] * 3, keys[0]: [failed]}),
                            ["size=tiny"], {})
    json.dumps(a)  # serialisable
    assert {"schema_version", "mode", "question", "winner", "runners_up", "candidates", "counts", "halving",
            "stopped", "statistics"} <= set(a)
    w = a["winner"]
    assert w["key"] == keys[-1] and w["tokens_per_s_median"] == 110.0 and not w["tie"]
    assert w["tokens_per_s_interval"] == [88.0, 132.0] and w["interval_coverage"] == 0.75
    assert w["mem_peak_bytes"] == 300 * 2**20 and w["mem_predicted_model_bytes"] == 50 * 2**20
    assert w["command"].startswith("python -m bench.run size=tiny strategy=")
    r = a["runners_up"][0]
    assert r["significant"] and r["leader_faster_by"] == pytest.approx(0.1) and r["verdict"] == "slower beyond noise"
    fates = {f["key"]: f for f in a["candidates"]}
    assert fates[keys[0]]["fate"] == "failed" and "timeout" in fates[keys[0]]["reason"]
    assert fates[keys[1]]["fate"] == "dropped" and "below that rung's best" in fates[keys[1]]["reason"]
    assert a["counts"]["enumerated"] == len(cands) == sum(v for k, v in a["counts"].items()
                                                        if k not in ("enumerated", "at_risk"))


def test_fault_for_names_its_points():
    assert fault_for("hang:1:2@strategy=tp,grad_accum=2", "strategy=tp global_batch_size=8 grad_accum=2") == "hang:1:2"
    assert fault_for("hang:1:2@strategy=tp,grad_accum=2", "strategy=tp grad_accum=1") == ""
    assert fault_for("kill:0:1", "anything") == "kill:0:1"
    both = "hang:1:2@grad_accum=2;kill:0:1@grad_accum=4"
    assert fault_for(both, "strategy=dp grad_accum=4") == "kill:0:1" and fault_for(both, "grad_accum=1") == ""


# -- the command ---------------------------------------------------------------------------------

def _advise_cli(*args, cwd, env=None, timeout=600):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench.advise", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, says", [
    (["strategies=[dp,nope]"], "strategies: nope not in the registry"),
    (["first_steps=9", "steps=8"], "first_steps=9 exceeds steps=8"),
    (["verify_pruned=2"], "verify_pruned needs memory_limit_gib"),
    (["budget_s=0"], "budget_s=0: need more than 0"),
    (["size=tiny", "devices=2", "strategies=[single]"], "none of the"),
    (["siez=tiny"], "siez"),
])
def test_bad_input_is_one_line_before_anything_runs(tmp_path, args, says):
    r = _advise_cli(*args, f"results_root={tmp_path}/r", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.path.exists(tmp_path / "r") or not os.listdir(tmp_path / "r")


@pytest.mark.slow
def test_advice_run_with_a_planted_hang_and_failure(tmp_path):
    """A real advice run (tiny, 2 gloo ranks, dp only: 4 layouts) in which the layout with
    grad_accum=2 hangs at its third step and the one with grad_accum=4 is killed at its second:
    the hang costs its timeout, each is recorded with its reason, the rest is measured in new
    processes and answered; every measurement is a result.json in one sweep folder."""
    r = _advise_cli("size=tiny", "devices=2", "strategies=[dp]", "try_checkpointing=false", "steps=4",
                    "first_steps=2", "repeats=3", "timeout_s=8", f"results_root={tmp_path}/r",
                    f"report_dir={tmp_path}/rep", cwd=tmp_path,
                    env={"SCALEBENCH_FAULT": "hang:1:2@grad_accum=2;kill:0:1@grad_accum=4"})
    assert r.returncode == 0, r.stdout + r.stderr
    (sweep,) = (tmp_path / "r").iterdir()
    a = json.loads((sweep / "advice.json").read_text())
    fates = {f["label"]: f for f in a["candidates"]}
    hung, killed = fates["dp b=4x2"], fates["dp b=2x4"]
    assert hung["fate"] == "failed" and "timeout_s=8" in hung["reason"]
    assert killed["fate"] == "failed" and "rank 0 killed by signal 9" in killed["reason"]
    assert a["winner"]["label"] in ("dp b=8x1", "dp b=1x8")
    assert len(a["winner"]["tokens_per_s_runs"]) >= 3 and a["winner"]["mem_peak_bytes"] > 0
    from bench.results import load
    df = load([str(sweep)])
    from collections import Counter
    assert Counter(df["status"]) == Counter({"ok": a["points_measured"] - 2, "failed": 1, "timeout": 1})
    assert "advice:" in r.stdout and os.path.exists(r.stdout.split("report: ")[1].strip())


def test_readme_lists_the_advisors_keys():
    from bench.config import advise_markdown_table
    with open(os.path.join(ROOT, "README.md")) as f:
        assert advise_markdown_table() in f.read()  # python -m bench.config prints it


def test_a_finalist_that_always_failed_is_neither_tied_nor_beaten():
    s = {x.key: x for x in halving.verdict({"a": [100.0, 90.0, 110.0], "b": [None, None, None]})}
    assert s["b"].failed and not s["b"].tied and not s["b"].significant
    assert halving.separated(list(s.values()))
    true = {"a": 100.0, "b": None, "c": 50.0}  # b fails whenever measured, c is dropped by the halving
    h = halving.successive_halving(list(true), _fake_measure(true, []), first_steps=2, steps=4, repeats=3,
                                   finalists=1)
    assert h.finalists == ["a"] and h.stopped == "one finalist" and len(h.final_runs["a"]) == 3


def test_the_looks_share_the_alpha():
    # repeats 3, up to 6: looks after 3, 4, 5 and 6 processes: 0.05 / 4 each (Bonferroni)
    h = halving.successive_halving(["a", "b"], _fake_measure({"a": 100.0, "b": 100.0}, []), first_steps=2,
                                   steps=4, repeats=3)
    assert h.looks == 4 and h.alpha_per_look == pytest.approx(0.0125)
    # the verdict turns exactly at its alpha
    runs = {"a": [1.10, 1.02, 1.20, 1.05], "b": [1.0, 1.0, 1.0, 1.0]}
    p = halving.verdict(runs)[1].p
    assert halving.verdict(runs, alpha=p * 1.01)[1].significant and not halving.verdict(runs, alpha=p / 1.01)[1].significant


def test_budget_ending_in_the_halving_gives_no_verdict_but_the_screenings_best():
    cfg = advise_cfg("size=tiny", "devices=2")
    cands = {f"c{i}": c for i, c in enumerate(enumerate_candidates(cfg, ["dp"], checkpointing=False))}
    verdicts = {k: classify(c, HOST) for k, c in cands.items()}
    true = {k: 100.0 + i for i, k in enumerate(cands)}
    calls = []
    h = halving.successive_halving(list(cands), _fake_measure(true, calls), first_steps=2, steps=8, repeats=3,
                                   finalists=1, budget_left=lambda: len(calls) < 1)
    a = advise.build_advice(cfg, cands, verdicts, h, _Runner({}), [], {})
    assert a["winner"] is None and a["provisional"]["key"] == "c3" and a["stopped"] == "budget"


def test_the_memory_lower_bound_sums_the_pipeline_stages():
    from bench.memory import predict_memory, predict_memory_stages
    from bench.plan import CPU_RANK_BASELINE_MIN_BYTES, MODEL_OVER_PREDICTION, memory_need
    from conftest import plan
    spec = plan("size=small", "strategy=mp", "devices=2", "seq_len=128", "batch_size=16")
    first, last = predict_memory_stages(spec)
    assert first.total_bytes != last.total_bytes  # the last stage holds the logits and the tied head
    low = memory_need(spec, predict_memory(spec), low=True)
    assert low == int(first.total_bytes / MODEL_OVER_PREDICTION + last.total_bytes / MODEL_OVER_PREDICTION
                      + 2 * CPU_RANK_BASELINE_MIN_BYTES)
    assert low < 2 * (max(first.total_bytes, last.total_bytes) / MODEL_OVER_PREDICTION + CPU_RANK_BASELINE_MIN_BYTES)


def test_fates_when_the_budget_ends_in_the_halving():
    cfg = advise_cfg("size=tiny", "devices=2")
    cands = {f"c{i}": c for i, c in enumerate(enumerate_candidates(cfg, ["dp"], checkpointing=False))}
    verdicts = {k: classify(c, HOST) for k, c in cands.items()}
    calls = []
    h = halving.successive_halving(list(cands), _fake_measure({k: 100.0 + i for i, k in enumerate(cands)}, calls),
                                   first_steps=2, steps=8, repeats=3, finalists=1, budget_left=lambda: False)
    fates = {f["key"]: f["fate"] for f in advise.build_advice(cfg, cands, verdicts, h, _Runner({}), [], {})["candidates"]}
    # rung 0 measured all 4 and kept the better 2; then the budget: those 2 are unconfirmed, no finalist
    assert sorted(fates.values()) == ["dropped", "dropped", "unconfirmed", "unconfirmed"]
