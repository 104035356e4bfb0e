"""Report pages on constructed result rows: the numbers behind each figure (never pooled across
what changes the work or the machine), the page CSVs, and the PDF."""
import json

import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader

from bench import figures, report

GIB = 2**30
KINDS = {"dp": "ddp", "fsdp": "fsdp", "hybrid": "fsdp"}


def row(**kw):
    """One tidy result row as bench.results.load makes it (strategy dp on one device unless told)."""
    base = {"status": "ok", "error": None, "size": "mini", "n_params": 891_648, "shape": "L4 a4 H128 V512 T256",
            "strategy": "dp", "strategy_options": "{}", "schedule": None, "devices": 1, "nodes": 1, "batch_size": 8,
            "global_batch_size": None, "global_batch_requested": None, "grad_accum": 1, "seq_len": 256, "seed": 0,
            "data": "synthetic", "data_path": None, "precision": "fp32", "accelerator": "cpu", "threads": 1,
            "compile": False, "oversubscribe": False, "activation_checkpointing": "none",
            "hardware_label": "X-2c-24GB", "tokens_per_s": 1000.0, "tokens_per_step": 2048, "step_time_s": 2.048,
            "step_time_s_iqr": 0.01, "step_times_s": [2.0, 2.05, 2.1], "loss": [6.0, 5.9, 5.8],
            "mem_peak_bytes": GIB, "mem_predicted_bytes": 0.9 * GIB, "capacity_bytes": 24 * GIB, "mfu": None,
            "mfu_measured_peak": 0.5, "degree_dp": None, "degree_tp": 1, "degree_pp": 1, "degree_microbatches": 1,
            "degree_data_parallel": None, "degree_bubble_ideal": None, "loss_last": 5.8, "repeat": 0, "repeats": 1}
    if kw.get("strategy") == "tp" or (kw.get("strategy") == "hybrid" and kw.get("degree_tp", 1) > 1):
        # as bench.results records a tp point now: the output layer split by vocabulary (the default)
        kw.setdefault("strategy_options", "{}")
        kw["strategy_options"] = json.dumps({**json.loads(kw["strategy_options"]), "vocab_parallel": True})
    base.update(kw)
    d, strat = base["devices"], base["strategy"]
    if base["degree_dp"] is None:
        base["degree_dp"] = d if strat in KINDS else 1
    if base["degree_data_parallel"] is None and base["degree_dp"] > 1:
        base["degree_data_parallel"] = KINDS.get(strat)
    if base["global_batch_size"] is None:
        base["global_batch_size"] = base["batch_size"] * base["degree_dp"] * base["grad_accum"]
    return base


def frame():
    rows = []
    for strat, eff in (("dp", 0.9), ("mp", 0.5)):
        sched = "naive" if strat == "mp" else None
        for d in (1, 2, 4):
            rows.append(row(strategy=strat, schedule=sched, devices=d, tokens_per_s=1000 * d * (eff if d > 1 else 1),
                            step_time_s=2.048 / (eff if d > 1 else 1), degree_pp=d if strat == "mp" else 1,
                            degree_bubble_ideal=(d - 1) / d if strat == "mp" and d > 1 else None))
    rows.append(row(size="small", shape="L12 a12 H768 V50304 T1024", n_params=124_475_904, tokens_per_s=100.0,
                    mem_peak_bytes=5 * GIB, mem_predicted_bytes=4.5 * GIB, loss=[11.0, 10.9, 10.8]))
    rows.append(row(status="predicted_oom", size="large", shape="L36", n_params=774e6, tokens_per_s=np.nan,
                    mem_peak_bytes=np.nan, mem_predicted_bytes=40 * GIB, error="predicted 40 GiB", step_times_s=None,
                    loss=None))
    rows.append(row(status="invalid", strategy="mp", devices=8, error="too many stages", tokens_per_s=np.nan))
    return pd.DataFrame(rows)


def series(d, variant):
    return d[d["variant"] == variant]


def test_scaling_efficiency_against_the_series_own_baseline():
    d = figures.scaling_data(frame())
    dp = d[(d["variant"] == "dp") & (d["size"] == "mini")].set_index("devices")
    assert dp.loc[2, "tokens_per_s"] == 1800 and dp.loc[4, "efficiency"] == pytest.approx(0.9)
    assert set(dp["baseline"]) == {"own 1 device(s)"} and set(dp["scaling"]) == {"weak"}
    mp = d[d["variant"] == "mp/naive"].set_index("devices")
    assert mp.loc[1, "efficiency"] == 1 and mp.loc[4, "efficiency"] == pytest.approx(0.5)
    assert set(mp["scaling"]) == {"strong"}  # no global_batch_size, but mp's global batch stays fixed: strong
    small = d[d["size"] == "small"]
    assert small["efficiency"].isna().all() and small["baseline"].isna().all()  # one point, no reference: none


def test_scaling_never_pools_machines_or_sequence_lengths():
    rows = [row(devices=d, tokens_per_s=1000.0 * d) for d in (1, 2)]
    rows += [row(devices=d, tokens_per_s=3000.0 * d, hardware_label="Y-8c-64GB") for d in (1, 2)]
    rows += [row(devices=d, tokens_per_s=500.0 * d, seq_len=512) for d in (1, 2)]
    d = figures.scaling_data(pd.DataFrame(rows))
    assert d["series"].nunique() == 3
    assert sorted(d.groupby("series")["tokens_per_s"].first()) == [500, 1000, 3000]  # never a median across them
    labels = list(d["series"].unique())
    assert any("Y-8c-64GB" in s for s in labels) and any("seq 512" in s for s in labels)


def test_strong_scaling_is_one_series_over_devices():
    rows = [row(devices=d, batch_size=16 // d, global_batch_size=16, global_batch_requested=16,
                tokens_per_s=1000.0 * d * (0.8 if d > 1 else 1)) for d in (1, 2)]
    d = figures.scaling_data(pd.DataFrame(rows))
    assert d["series"].nunique() == 1 and set(d["scaling"]) == {"strong"}
    assert d.set_index("devices").loc[2, "efficiency"] == pytest.approx(0.8)
    assert "global batch 16" in d["series"].iloc[0]


def test_a_series_on_two_devices_only_is_judged_by_the_reference_or_not_at_all():
    tp2 = row(strategy="tp", devices=2, degree_tp=2, tokens_per_s=1500.0)
    d = figures.scaling_data(pd.DataFrame([tp2]))
    assert d["efficiency"].isna().all()  # no own baseline, no reference: no efficiency
    ref = row(strategy="single", devices=1, tokens_per_s=1000.0)
    other_machine = row(strategy="single", devices=1, tokens_per_s=10.0, hardware_label="Y-8c-64GB")
    d = figures.scaling_data(pd.DataFrame([tp2, ref, other_machine])).set_index(["variant", "devices"])
    tp = d.loc[("tp", 2)]
    assert tp["baseline"] == "reference, 1 device" and tp["efficiency"] == pytest.approx(1500 / (2 * 1000))


def test_best_map_compares_equal_tokens_and_equal_settings_only():
    rows = [row(strategy="dp", devices=2, tokens_per_s=2000.0),  # global batch 16
            row(strategy="tp", devices=2, degree_tp=2, tokens_per_s=1500.0),  # global batch 8: another cell
            row(strategy="mp", schedule="naive", devices=2, degree_pp=2, tokens_per_s=1000.0)]
    b = figures.best_data(pd.DataFrame(rows))
    best = b[b["rank"] == 1].set_index("cell")
    assert len(best) == 2 and len(b) == 3  # one row per layout of each cell
    cell8 = best[best.index.str.contains("global batch 8")].iloc[0]
    assert cell8["winner"] == "tp" and cell8["verdict"] == "winner"  # 1.5x: beyond the drift margin
    mp = b[b["layout"] == "mp/naive"].iloc[0]
    assert mp["tokens_per_s"] == 1000 and mp["rank"] == 2 and mp["versus_best"].startswith("slower: x0.67")


def test_best_map_ties_what_the_runs_cannot_separate():
    close = [row(strategy="tp", devices=2, degree_tp=2, tokens_per_s=1010.0),
             row(strategy="mp", schedule="naive", devices=2, degree_pp=2, tokens_per_s=1000.0)]
    b = figures.best_data(pd.DataFrame(close)).iloc[0]
    assert b["verdict"].startswith("tie: 1 run(s)") and b["winner"] == "tp ~ mp/naive"
    rng = np.random.default_rng(0)
    many = [row(strategy="tp", devices=2, degree_tp=2, tokens_per_s=1100.0 * (1 + 0.01 * rng.standard_normal()),
                seed=s) for s in range(4)]
    many += [row(strategy="mp", schedule="naive", devices=2, degree_pp=2,
                 tokens_per_s=1000.0 * (1 + 0.01 * rng.standard_normal()), seed=s) for s in range(4)]
    b = figures.best_data(pd.DataFrame(many)).iloc[0]
    assert b["verdict"] == "winner" and b["winner"] == "tp" and b["runs"] == 4  # 10% apart, 1% noise, 4 runs each
    noisy = [row(strategy="tp", devices=2, degree_tp=2, tokens_per_s=t, seed=s)
             for s, t in enumerate((1300, 900, 1200, 800))]
    noisy += [row(strategy="mp", schedule="naive", devices=2, degree_pp=2, tokens_per_s=t, seed=s)
              for s, t in enumerate((1000, 1100, 950, 1050))]
    assert figures.best_data(pd.DataFrame(noisy)).iloc[0]["verdict"].startswith("tie: the runs cannot separate")


def test_best_map_never_pools_identities_that_compute_the_same():
    """single and dp on one device compute the same, but each is an identity of its own: its own
    median over its own runs, tested against the other like any layout; the cell names them as
    equivalent."""
    same = [row(strategy="single", devices=1, tokens_per_s=t, seed=s) for s, t in enumerate((51000, 56000, 53000))]
    same += [row(strategy="dp", devices=1, tokens_per_s=t, seed=s) for s, t in enumerate((32000, 42000, 34500))]
    b = figures.best_data(pd.DataFrame(same))
    assert len(b) == 2 and b["cell"].nunique() == 1
    single, dp = b.set_index("layout").loc["single"], b.set_index("layout").loc["dp"]
    assert single["tokens_per_s"] == 53000 and single["runs"] == 3 and single["rank"] == 1  # never a pooled 46,000
    assert dp["tokens_per_s"] == 34500 and dp["runs"] == 3 and dp["versus_best"].startswith("slower")
    assert single["same_computation"] == "dp" and dp["same_computation"] == "single"
    assert single["winner"] == "single (≈ dp: same computation)" and single["verdict"] == "winner"
    assert dp["p"] < 0.05
    # one run a side and within the drift: a tie, still two candidates with their own medians
    close = [row(strategy="single", devices=1, tokens_per_s=1000.0),
             row(strategy="mp", schedule="naive", devices=1, degree_pp=1, tokens_per_s=1280.0)]
    b = figures.best_data(pd.DataFrame(close))
    assert list(b["layout"]) == ["mp/naive", "single"] and list(b["tokens_per_s"]) == [1280, 1000]
    assert b["winner"].iloc[0] == "mp/naive ~ single (same computation)"
    assert b["verdict"].iloc[0].startswith("tie: 1 run(s)")
    three = close + [row(strategy="dp", devices=1, tokens_per_s=500.0),
                     row(strategy="tp", devices=1, tokens_per_s=1100.0, strategy_options='{"sequence_parallel": true}')]
    b = figures.best_data(pd.DataFrame(three))  # dp: half as fast, not tied, still named as computing the same
    assert b["winner"].iloc[0] == "mp/naive ~ tp ~ single (≈ dp: same computation)"
    assert b["layout"].nunique() == 4 and b.set_index("layout").loc["dp", "tokens_per_s"] == 500
    alone = figures.best_data(pd.DataFrame([row(strategy="single")]))
    assert alone["verdict"].iloc[0] == "one layout measured" and alone["winner"].iloc[0] == "single"


def test_memory_data_marks_what_did_not_fit():
    m = figures.memory_data(frame())
    assert set(m["status"]) == {"ok", "predicted_oom"}  # invalid runs have no memory to show
    big = m[m["status"] == "predicted_oom"].iloc[0]
    assert big["predicted_gib"] == 40 and np.isnan(big["measured_gib"]) and big["capacity_gib"] == 24


def test_size_spread_and_bubble():
    s = figures.size_data(frame())
    assert set(s["size"]) == {"mini", "small"} and s["line"].nunique() == 1  # dp on 1 device, both sizes
    b = figures.bubble_data(frame()).set_index("pp")
    assert b.empty  # t1 must be the reference strategy on one device, which this frame lacks
    with_ref = pd.concat([frame(), pd.DataFrame([row(strategy="single", step_time_s=2.048)])], ignore_index=True)
    b = figures.bubble_data(with_ref).set_index("pp")
    # t1 = 2.048 s on one device; the mp step at p=2 takes 2.048 / 0.5: 1 - t1 / (2 * 4.096)
    assert b.loc[2, "measured"] == pytest.approx(0.75) and b.loc[2, "ideal"] == pytest.approx(0.5)
    other = pd.concat([frame(), pd.DataFrame([row(strategy="single", hardware_label="Y", step_time_s=0.1)])])
    assert figures.bubble_data(other).empty  # another machine's reference is no reference
    sp = figures.spread_data(frame())
    assert len(sp) == 7 and all(len(t) == 3 for t in sp["step_times_ms"])


def test_bubble_page_holds_pure_pipelines_only():
    rows = pd.concat([frame(), pd.DataFrame([row(strategy="single", step_time_s=2.048)])], ignore_index=True)
    wrapped = row(strategy="hybrid", schedule="1f1b", devices=2, degree_dp=1, degree_pp=2, degree_data_parallel="fsdp",
                  step_time_s=3.0)  # dp = 1, but FSDP-wrapped stages: its wrapper's cost is no bubble
    b = figures.bubble_data(pd.concat([rows, pd.DataFrame([wrapped])], ignore_index=True))
    assert list(b["variant"]) == ["mp/naive", "mp/naive"]


def test_loss_groups_are_the_same_model_on_the_same_tokens():
    g = figures.loss_data(frame())
    assert g["group"].nunique() == 1  # the mini runs with global batch 8 (dp 1, mp 1/2/4)
    assert g["group"].iloc[0].startswith("mini:") and len(g) == 4 * 3


def test_batch_page_needs_two_batch_sizes():
    assert figures.batch_data(frame()).empty
    df = pd.concat([frame(), pd.DataFrame([row(batch_size=16, tokens_per_s=1500.0)])], ignore_index=True)
    b = figures.batch_data(df)
    assert list(b["batch_size"]) == [8, 16] and b["line"].nunique() == 1


def test_hardware_comparison_matches_configurations_not_machines():
    other = frame().assign(hardware_label="Y-8c-64GB", tokens_per_s=lambda d: d["tokens_per_s"] * 2)
    h = figures.hardware_data(pd.concat([frame(), other], ignore_index=True))
    y = h[h["hardware_label"] == "Y-8c-64GB"]
    assert len(y) == 7 and np.allclose(y["ratio"], 2.0)


def test_repeats_take_the_run_as_the_unit():
    reps = [row(seed=s, tokens_per_s=t, step_times_s=[2.0, 2.01, 2.02], repeat=s, repeats=3)
            for s, t in enumerate((900, 1000, 1100))]
    r = figures.repeats_data(pd.DataFrame(reps)).iloc[0]
    assert r["runs"] == 3 and r["tokens_per_s_median"] == 1000
    # 3 runs: the order-statistic interval is min..max, and it says it holds the median 75% of the time
    assert (r["ci_low"], r["ci_high"], r["ci_coverage"]) == (900, 1100, 0.75)
    assert r["interval"] == "min-max of 3 runs: 75% interval"
    # one statistic on both scales: max/min - 1 of the runs' tokens/s, and of a run's step times
    assert r["between_runs_range"] == pytest.approx(1100 / 900 - 1)
    assert r["within_run_range"] == pytest.approx(2.02 / 2.0 - 1) and r["steps_per_run"] == 3
    nine = [row(seed=s, tokens_per_s=1000.0 + 10 * s) for s in range(9)]
    r = figures.repeats_data(pd.DataFrame(nine)).iloc[0]
    assert (r["ci_low"], r["ci_high"]) == (1010, 1070) and r["ci_coverage"] == pytest.approx(1 - 2 * 10 / 512)
    assert r["interval"] == "2nd lowest-2nd highest of 9 runs: 96% interval"


def test_variant_names_the_layout():
    assert report.variant({"strategy": "mp", "schedule": "1f1b"}) == "mp/1f1b"
    assert report.variant({"strategy": "hybrid", "schedule": "gpipe", "degree_tp": 1, "degree_pp": 2}) \
        == "hybrid/gpipe pp=2"
    assert report.variant({"strategy": "from-a-later-version", "schedule": None}) == "from-a-later-version"
    split = '{"vocab_parallel": true}'
    assert report.variant({"strategy": "hybrid", "schedule": float("nan"), "degree_tp": 2.0, "degree_pp": 1.0,
                           "strategy_options": split}) == "hybrid tp=2"
    assert report.variant({"strategy": "tp", "degree_sequence_parallel": True, "strategy_options": split,
                           "degree_activation_checkpointing": "full"}) == "tp+sp+ckpt"
    # the output layer whole on every tp rank (strategy.vocab_parallel=false, and results from before
    # the key, which replicated it) is named, at every device count of its series; split is not
    whole = {"strategy": "tp", "degree_tp": 2, "degree_vocab_parallel": False, "strategy_options": "{}"}
    assert report.variant(whole) == "tp+full-head"
    assert report.variant({**whole, "degree_tp": 1}) == "tp+full-head"
    assert report.variant({**whole, "degree_tp": 1, "strategy_options": '{"vocab_parallel": true}'}) == "tp"
    assert report.variant({**whole, "degree_vocab_parallel": None, "strategy_options": None}) == "tp+full-head"
    assert report.variant({"strategy": "hybrid", "degree_tp": 1, "degree_pp": 2, "schedule": "gpipe",
                           "degree_vocab_parallel": False}) == "hybrid/gpipe pp=2"  # no tp: nothing to split


def test_summary_table_lists_failures():
    s = report.summary_table(frame())
    assert "9 runs: 7 ok, 1 predicted_oom, 1 invalid" in s and "too many stages" in s


def test_pdf_pages_csvs_and_determinism(tmp_path):
    out = report.write_report(frame(), str(tmp_path / "r.pdf"), title="unit report")
    pdf = PdfReader(out)
    text = [p.extract_text() for p in pdf.pages]
    # summary, scaling, size, memory, best, spread, loss, appendix (batch, bubble, hardware, repeats left out)
    assert len(pdf.pages) == 8
    assert "unit report" in text[0] and "pages left out" in text[0] and "batch size" in text[0]
    assert "best layout per setting" in text[0]
    assert "Scaling with devices" in text[1] and "Appendix" in text[-1]
    assert "held fixed on this page: X-2c-24GB, cpu, fp32, seq 256" in text[1]
    # every page's footer names the CSV its data is in, by its real name, and that file is there
    slugs = ("scaling", "size", "memory", "best", "spread", "loss")
    for page, slug in zip(text[1:7], slugs):
        assert f"data: r.{slug}.csv" in page.replace("\n", "")
    assert not any("<report>" in p for p in text)
    scaling = pd.read_csv(tmp_path / "r.scaling.csv")
    assert {"series", "devices", "tokens_per_s", "efficiency", "baseline", "hardware_label"} <= set(scaling.columns)
    for page in ("size", "memory", "best", "spread", "loss"):
        assert (tmp_path / f"r.{page}.csv").exists()
    assert not (tmp_path / "r.batch.csv").exists()  # a page with no data has no CSV
    assert (tmp_path / "r.csv").exists() and "| size |" in (tmp_path / "r.md").read_text()
    again = report.write_report(frame(), str(tmp_path / "again" / "r.pdf"), title="unit report")  # (footers name r)
    assert open(out, "rb").read() == open(again, "rb").read()


def test_strong_series_and_bubble_match_the_reference_by_the_right_batch():
    """With grad accumulation the global batch is batch x dp x accum: the strong series' reference
    is the single run of the same global batch, the bubble's the one of the same micro-step."""
    dp2 = row(devices=2, batch_size=4, grad_accum=2, global_batch_size=16, global_batch_requested=16,
              tokens_per_s=1800.0)
    ref16 = row(strategy="single", batch_size=8, grad_accum=2, global_batch_size=16, tokens_per_s=1000.0)
    ref32 = row(strategy="single", batch_size=16, grad_accum=2, global_batch_size=32, tokens_per_s=1200.0)
    d = figures.scaling_data(pd.DataFrame([dp2, ref16, ref32]))
    assert d[d["variant"] == "dp"]["efficiency"].iloc[0] == pytest.approx(1800 / (2 * 1000))
    mp = row(strategy="mp", schedule="1f1b", devices=2, degree_pp=2, batch_size=8, grad_accum=2, step_time_s=0.8)
    t1 = [row(strategy="single", batch_size=8, grad_accum=2, step_time_s=1.0),
          row(strategy="single", batch_size=16, grad_accum=2, step_time_s=2.0)]
    b = figures.bubble_data(pd.DataFrame([mp, *t1]))
    assert b["measured"].iloc[0] == pytest.approx(1 - 1.0 / (2 * 0.8))


def test_node_counts_are_one_series_and_the_reference_pools_its_runs():
    rows = [row(devices=8 * n, nodes=n, tokens_per_s=9000.0 * n) for n in (1, 2, 4)]
    rows += [row(strategy="single", tokens_per_s=t, seed=s, strategy_options=o)
             for s, (t, o) in enumerate([(1000.0, "{}"), (1000.0, "{}"), (1000.0, "{}"),
                                         (1400.0, '{"schedule": "gpipe"}')])]
    d = figures.scaling_data(pd.DataFrame(rows))
    dp = d[d["variant"] == "dp"]
    assert dp["series"].nunique() == 1 and sorted(set(dp["devices"])) == [8, 16, 32]
    ref = dp[dp["baseline"] == "reference, 1 device"].set_index("devices")
    # the reference's runs pooled over options it does not use: median of 1000, 1000, 1000, 1400
    assert ref.loc[16, "efficiency"] == pytest.approx(18000 / (16 * 1000))


def test_fsdp_resharding_is_a_computation_of_its_own():
    rows = [row(strategy="fsdp", devices=2, degree_reshard_after_forward=r, tokens_per_s=t, seed=s,
                strategy_options='{"reshard_after_forward": %s}' % str(r).lower())
            for r, t in ((True, 1000.0), (False, 1500.0)) for s in range(3)]
    b = figures.best_data(pd.DataFrame(rows))
    assert len(b) == 2 and list(b["runs"]) == [3, 3]  # not one pooled candidate
    best = b.iloc[0]
    assert best["winner"] == "fsdp [reshard_after_forward=False]" and best["tokens_per_s"] == 1500
    assert b.iloc[1]["layout"] == "fsdp [reshard_after_forward=True]" and b.iloc[1]["tokens_per_s"] == 1000


def test_every_layout_the_best_cannot_beat_shares_the_cell():
    rows = [row(strategy="dp", devices=2, global_batch_size=8, batch_size=4, tokens_per_s=1000.0),
            row(strategy="tp", devices=2, degree_tp=2, global_batch_size=8, tokens_per_s=900.0),
            row(strategy="mp", schedule="naive", devices=2, degree_pp=2, global_batch_size=8, tokens_per_s=800.0)]
    b = figures.best_data(pd.DataFrame(rows)).iloc[0]
    assert b["winner"] == "dp ~ tp ~ mp/naive"


def test_result_sets_of_a_comparison_never_pool():
    a = frame().assign(result_set="before")
    b = frame().assign(result_set="after", tokens_per_s=lambda d: d["tokens_per_s"] * 0.8)
    d = figures.scaling_data(pd.concat([a, b], ignore_index=True))
    dp = d[(d["variant"] == "dp") & (d["devices"] == 1) & (d["size"] == "mini")]
    assert sorted(dp["tokens_per_s"]) == [800, 1000] and set(dp["runs"]) == {1}


def test_the_scaling_reference_is_one_identity_never_a_pool():
    """Reference runs that differ in options the reference does not use are different
    identities: the one with the most runs is the reference, its runs alone."""
    rows = [row(devices=d, tokens_per_s=900.0 * d) for d in (2, 4)]
    rows += [row(strategy="single", tokens_per_s=t, seed=s) for s, t in enumerate((1000.0, 1100.0, 1200.0))]
    rows += [row(strategy="single", tokens_per_s=1400.0, seed=s, strategy_options='{"schedule": "gpipe"}')
             for s in range(2)]
    d = figures.scaling_data(pd.DataFrame(rows))
    ref = d[(d["variant"] == "dp") & (d["baseline"] == "reference, 1 device")].set_index("devices")
    assert ref.loc[2, "efficiency"] == pytest.approx(1800 / (2 * 1100))  # not the pooled median, 1200


def test_scaling_note_says_what_is_missing():
    # the newcomer's set: dp and single on one device only; the reference IS there
    rows = [row(strategy=s, tokens_per_s=t) for s, t in (("dp", 35000.0), ("single", 52000.0))]
    d = figures.scaling_data(pd.DataFrame(rows))
    note = figures.scaling_note(d)
    assert note == "efficiency needs 2+ device counts in a series; each of the 2 series here has 1"
    tp2 = figures.scaling_data(pd.DataFrame([row(strategy="tp", devices=2, degree_tp=2)]))
    note = figures.scaling_note(tp2)
    assert "the one series here has 1" in note and "single" in note and "2 devices" in note
    mini = figures.scaling_data(frame())
    assert figures.scaling_note(mini[mini["size"] == "mini"]) == ""  # it has efficiency
    figures.fig_scaling(d)  # draws


def test_memory_compares_like_with_like_above_the_runtime_baseline():
    rows = [row(mem_peak_bytes=GIB, mem_baseline_bytes=0.25 * GIB, mem_predicted_bytes=0.9 * GIB,
                mem_predicted_model_bytes=0.6 * GIB),
            row(devices=2, mem_peak_bytes=GIB, mem_predicted_bytes=0.9 * GIB, mem_predicted_model_bytes=0.6 * GIB)]
    m = figures.memory_data(pd.DataFrame(rows)).set_index("devices")
    new, old = m.loc[1], m.loc[2]
    assert new["compared"] == "above baseline"
    assert (new["measured_gib"], new["baseline_gib"], new["measured_total_gib"]) == (0.75, 0.25, 1.0)
    assert (new["predicted_gib"], new["predicted_total_gib"]) == (0.6, 0.9)
    assert new["error"] == pytest.approx(0.6 / 0.75 - 1)
    # a result without a recorded baseline: said so, and the totals are compared
    assert old["compared"] == "totals (baseline unknown)" and np.isnan(old["measured_gib"])
    assert old["error"] == pytest.approx(0.9 - 1) and old["measured_total_gib"] == 1.0
    assert {"measured_gib", "baseline_gib", "measured_total_gib", "predicted_gib", "predicted_total_gib", "error",
            "capacity_gib", "status"} <= set(m.columns)
    fig = figures.fig_memory(m.reset_index())
    ax = fig.axes[0]
    assert "above the runtime baseline" in ax.get_ylabel() and "above the runtime baseline" in ax.get_title()
    assert any("without a recorded baseline" in t.get_text() for t in ax.texts)
    # the prediction's model part falls back to the whole prediction for results without it
    m = figures.memory_data(pd.DataFrame([row(mem_baseline_bytes=0.25 * GIB)]))
    assert m["predicted_gib"].iloc[0] == pytest.approx(0.9)


def test_every_page_csv_carries_the_same_context_columns():
    df = pd.concat([frame(), pd.DataFrame([row(strategy="single", step_time_s=2.048, seed=s) for s in range(2)]),
                    frame().assign(hardware_label="Y-8c-64GB")], ignore_index=True)
    data = report.page_data(df)
    shown = {slug: d for slug, d in data.items() if not d.empty}
    assert {"scaling", "size", "memory", "best", "spread", "bubble", "loss", "hardware", "repeats"} <= set(shown)
    for slug, d in shown.items():
        assert set(figures.CONTEXT) <= set(d.columns), slug
    assert "result_set" in data["size"] and "result_set" in data["memory"]


def test_spread_page_holds_its_context_and_labels_never_collide():
    rows = [row(), row(hardware_label="Y-8c-64GB"), row(repeat=0, repeats=2, seed=0, strategy="single"),
            row(repeat=1, repeats=2, seed=1, strategy="single")]
    sp = figures.spread_data(pd.DataFrame(rows))
    assert sp["label"].is_unique and len(sp) == 4
    assert any("Y-8c-64GB" in label for label in sp["label"])
    assert {"single 1d b8, X-2c-24GB run 1", "single 1d b8, X-2c-24GB run 2"} <= {lab.split(" ", 1)[1]
                                                                                    for lab in sp["label"]}
    assert set(figures.CONTEXT) <= set(sp.columns)
    same = figures.spread_data(pd.DataFrame(rows[2:]))
    assert report.footer(same, "spread", "x").startswith("held fixed on this page: X-2c-24GB, cpu, fp32, seq 256")
    assert report.footer(same, "spread", "x").endswith("; data: x.spread.csv")


def test_appendix_wraps_errors_and_shows_repeats():
    oom = ("rank 1 killed by signal 9 (SIGKILL) (out of memory, or killed from outside); "
           "the last lines of its log follow for context")
    huge = "x " * 400
    rows = [row(status="failed", error=oom, tokens_per_s=np.nan), row(status="failed", error=huge),
            *[row(repeat=k, repeats=3, seed=k) for k in range(3)]]
    t = report.table_frame(pd.DataFrame(rows))
    assert oom in list(t["error"])  # whole, not cut at 48 characters
    cut = next(e for e in t["error"] if e.startswith("x x"))
    assert len(cut) == report.ERROR_CHARS and cut.endswith("…")
    assert sorted(t["repeat"]) == ["", "", "1/3", "2/3", "3/3"]
    cells = report._wrapped(t, {"error": report.ERROR_WIDTH})
    err = list(t.columns).index("error")
    assert all(len(line) <= report.ERROR_WIDTH for c in cells for line in c[err].split("\n"))
    assert any(c[err].replace("\n", " ") == oom for c in cells)
    # pages by lines: a wrapped error counts its lines, and a run is never split
    many = pd.DataFrame({"error": [""] * 40})
    assert [len(c) for c in report.appendix_chunks(many)] == [28, 12]
    tall = pd.DataFrame({"error": ["word " * 60] * 10})  # 300 characters: 5 lines each, 3.6 rows of one line
    assert [len(c) for c in report.appendix_chunks(tall)] == [7, 3]


def test_an_all_failed_sweep_says_why_each_page_is_left_out(tmp_path):
    assert all("(needs" in name for _, name, _, _ in report.PAGES)
    rows = [row(status="failed", error="rank 0 exited with code 1", tokens_per_s=np.nan, step_times_s=None,
                mem_peak_bytes=np.nan, mem_predicted_bytes=None),
            row(status="invalid", error="too many stages", tokens_per_s=np.nan, mem_predicted_bytes=None)]
    out = report.write_report(pd.DataFrame(rows), str(tmp_path / "failed.pdf"))
    text = PdfReader(out).pages[0].extract_text()
    for _, name, _, _ in report.PAGES:
        assert name.split(" (")[0] in text
    for what in ("scaling with devices (needs", "memory (needs", "best strategy map (needs", "step-time spread (needs"):
        assert what in text
