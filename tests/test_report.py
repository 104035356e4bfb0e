"""Report pages on constructed result rows: the numbers behind each figure (never pooled across
what changes the work or the machine), the page CSVs, and the PDF."""
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
    b = figures.best_data(pd.DataFrame(rows)).set_index("cell")
    assert len(b) == 2
    cell8 = b[b.index.str.contains("global batch 8")].iloc[0]
    assert cell8["winner"] == "tp" and cell8["verdict"] == "winner"  # 1.5x: beyond the drift margin


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


def test_best_map_never_prefers_between_identical_computations():
    same = [row(strategy="single", devices=1, tokens_per_s=1000.0),
            row(strategy="mp", schedule="naive", devices=1, degree_pp=1, tokens_per_s=1280.0)]
    b = figures.best_data(pd.DataFrame(same)).iloc[0]
    assert b["winner"] == "mp/naive = single" and b["verdict"] == "only one computation measured"


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
    reps = [row(seed=s, tokens_per_s=t, step_times_s=[2.0, 2.01, 2.02]) for s, t in enumerate((900, 1000, 1100))]
    r = figures.repeats_data(pd.DataFrame(reps)).iloc[0]
    assert r["runs"] == 3 and r["tokens_per_s_median"] == 1000
    assert r["ci_low"] >= 900 and r["ci_high"] <= 1100 and r["between_runs_spread"] == pytest.approx(1100 / 900 - 1)
    assert r["within_run_spread"] == pytest.approx(0.01 / 2.01)  # steps: within-run spread only


def test_variant_names_the_layout():
    assert report.variant({"strategy": "mp", "schedule": "1f1b"}) == "mp/1f1b"
    assert report.variant({"strategy": "hybrid", "schedule": "gpipe", "degree_tp": 1, "degree_pp": 2}) \
        == "hybrid/gpipe pp=2"
    assert report.variant({"strategy": "from-a-later-version", "schedule": None}) == "from-a-later-version"
    assert report.variant({"strategy": "hybrid", "schedule": float("nan"), "degree_tp": 2.0, "degree_pp": 1.0}) \
        == "hybrid tp=2"
    assert report.variant({"strategy": "tp", "degree_sequence_parallel": True,
                           "degree_activation_checkpointing": "full"}) == "tp+sp+ckpt"


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
    scaling = pd.read_csv(tmp_path / "r.scaling.csv")
    assert {"series", "devices", "tokens_per_s", "efficiency", "baseline", "hardware_label"} <= set(scaling.columns)
    for page in ("size", "memory", "best", "spread", "loss"):
        assert (tmp_path / f"r.{page}.csv").exists()
    assert not (tmp_path / "r.batch.csv").exists()  # a page with no data has no CSV
    assert (tmp_path / "r.csv").exists() and "| size |" in (tmp_path / "r.md").read_text()
    again = report.write_report(frame(), str(tmp_path / "r2.pdf"), title="unit report")
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
    b = figures.best_data(pd.DataFrame(rows)).iloc[0]
    assert b["winner"] == "fsdp" and b["runs"] == 3 and b["tokens_per_s"] == 1500  # not one pooled candidate


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
