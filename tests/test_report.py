"""Report pages on synthetic result rows: the data behind each figure, and the PDF."""
import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader

from bench import figures, report

GIB = 2**30


def row(**kw):
    base = {"status": "ok", "error": None, "size": "mini", "n_params": 891_648, "strategy": "dp", "schedule": None,
            "devices": 1, "batch_size": 8, "global_batch_size": 8, "seq_len": 256, "seed": 0, "data": "synthetic",
            "precision": "fp32", "scaling": "weak", "hardware_label": "X-2c-24GB", "point_key": None,
            "tokens_per_s": 1000.0, "tokens_per_step": 2048, "step_time_s": 2.048, "step_time_s_iqr": 0.01,
            "step_times_s": [2.0, 2.05, 2.1], "loss": [6.0, 5.9, 5.8], "mem_peak_bytes": GIB,
            "mem_predicted_bytes": 0.9 * GIB, "capacity_bytes": 24 * GIB, "mfu": None, "mfu_measured_peak": 0.5,
            "degree_dp": 1, "degree_tp": 1, "degree_pp": 1, "degree_bubble_ideal": None, "loss_last": 5.8}
    base.update(kw)
    if base["point_key"] is None:
        base["point_key"] = f"{base['size']}-{base['strategy']}-{base['schedule']}-{base['devices']}-{base['batch_size']}"
    return base


def frame():
    rows = []
    for strat, eff in (("dp", 0.9), ("mp", 0.5)):
        sched = "naive" if strat == "mp" else None
        for d in (1, 2, 4):
            rows.append(row(strategy=strat, schedule=sched, devices=d, tokens_per_s=1000 * d * (eff if d > 1 else 1),
                            step_time_s=2.048 / (eff if d > 1 else 1), degree_pp=d if strat == "mp" else 1,
                            degree_dp=d if strat == "dp" else 1,
                            degree_bubble_ideal=(d - 1) / d if strat == "mp" and d > 1 else None))
    rows.append(row(size="small", n_params=124_475_904, tokens_per_s=100.0, mem_peak_bytes=5 * GIB,
                    mem_predicted_bytes=4.5 * GIB, loss=[11.0, 10.9, 10.8]))
    rows.append(row(status="predicted_oom", size="large", n_params=774e6, tokens_per_s=np.nan, mem_peak_bytes=np.nan,
                    mem_predicted_bytes=40 * GIB, error="predicted 40 GiB", step_times_s=None, loss=None))
    rows.append(row(status="invalid", strategy="mp", devices=8, error="too many stages", tokens_per_s=np.nan))
    return pd.DataFrame(rows)


def test_scaling_data_efficiency():
    d = figures.scaling_data(frame())
    dp = d[(d["variant"] == "dp") & (d["size"] == "mini")].set_index("devices")
    assert dp.loc[2, "tokens_per_s"] == 1800 and dp.loc[4, "efficiency"] == pytest.approx(0.9)
    mp = d[d["variant"] == "mp/naive"].set_index("devices")
    assert mp.loc[1, "efficiency"] == 1 and mp.loc[4, "efficiency"] == pytest.approx(0.5)
    assert set(d["scaling"]) == {"weak"}


def test_memory_data_marks_what_did_not_fit():
    m = figures.memory_data(frame())
    assert set(m["status"]) == {"ok", "predicted_oom"}  # invalid runs have no memory to show
    big = m[m["status"] == "predicted_oom"].iloc[0]
    assert big["predicted_gib"] == 40 and np.isnan(big["measured_gib"]) and big["capacity_gib"] == 24


def test_size_best_bubble_and_spread():
    s = figures.size_data(frame())
    assert set(s["size"]) == {"mini", "small"}
    best = figures.best_data(frame()).set_index(["size", "devices"])
    assert best.loc[("mini", 4), "variant"] == "dp" and best.loc[("mini", 4), "tokens_per_s"] == 3600
    b = figures.bubble_data(frame()).set_index("pp")
    # t1 = 2.048 s on one device; the mp step at p=2 takes 2.048 / 0.5: 1 - t1 / (2 * 4.096)
    assert b.loc[2, "measured"] == pytest.approx(0.75) and b.loc[2, "ideal"] == pytest.approx(0.5)
    sp = figures.spread_data(frame())
    assert len(sp) == 7 and all(len(t) == 3 for t in sp["step_times_ms"])


def test_bubble_page_holds_pure_pipelines_only():
    rows = frame().assign(degree_data_parallel=None)
    wrapped = row(strategy="hybrid", schedule="1f1b", devices=2, degree_pp=2, degree_data_parallel="fsdp",
                  step_time_s=3.0)  # dp = 1, but FSDP-wrapped stages: its wrapper's cost is no bubble
    b = figures.bubble_data(pd.concat([rows, pd.DataFrame([wrapped])], ignore_index=True))
    assert list(b["variant"]) == ["mp/naive", "mp/naive"]


def test_loss_groups_are_the_same_model_on_the_same_tokens():
    groups = figures.loss_data(frame())
    assert len(groups) == 1  # the mini runs share size, global batch, seq, seed, data, precision
    label, g = groups[0]
    assert label.startswith("mini:") and len(g) == 6


def test_batch_page_needs_two_batch_sizes():
    assert figures.batch_data(frame()).empty
    df = pd.concat([frame(), pd.DataFrame([row(batch_size=16, tokens_per_s=1500.0)])], ignore_index=True)
    b = figures.batch_data(df)
    assert list(b[(b["size"] == "mini") & (b["variant"] == "dp") & (b["devices"] == 1)]["batch_size"]) == [8, 16]


def test_hardware_comparison_matches_configs_not_machines():
    other = frame().assign(hardware_label="Y-8c-64GB", tokens_per_s=lambda d: d["tokens_per_s"] * 2)
    h = figures.hardware_data(pd.concat([frame(), other], ignore_index=True))
    y = h[h["hardware_label"] == "Y-8c-64GB"]
    assert len(y) == 7 and np.allclose(y["ratio"], 2.0)


def test_repeats_median_and_interval():
    reps = [row(seed=s, tokens_per_s=1000.0 + s, step_times_s=list(2.048 + 0.01 * np.arange(5) + 0.001 * s))
            for s in range(3)]
    r = report.repeats_data(pd.DataFrame(reps))
    assert len(r) == 1 and r.iloc[0]["repeats"] == 3 and r.iloc[0]["tokens_per_s_median"] == 1001
    assert r.iloc[0]["ci_low"] <= 2048 / 2.07 <= r.iloc[0]["ci_high"]


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


def test_pdf_pages_text_and_determinism(tmp_path):
    out = report.write_report(frame(), str(tmp_path / "r.pdf"), title="unit report")
    pdf = PdfReader(out)
    text = [p.extract_text() for p in pdf.pages]
    # summary, scaling, size, memory, best, spread, bubble, loss, appendix (batch, hardware, repeats left out)
    assert len(pdf.pages) == 9
    assert "unit report" in text[0] and "pages left out" in text[0] and "batch size" in text[0]
    assert "best configuration per size" in text[0] and "mini: dp on 4 device(s)" in text[0]
    assert "Scaling with devices" in text[1] and "Appendix" in text[-1]
    assert (tmp_path / "r.csv").exists() and "| size |" in (tmp_path / "r.md").read_text()
    again = report.write_report(frame(), str(tmp_path / "r2.pdf"), title="unit report")
    assert open(out, "rb").read() == open(again, "rb").read()
