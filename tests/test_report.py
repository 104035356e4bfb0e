import pandas as pd
from pypdf import PdfReader

from bench import report


def _df():
    rows = []
    for strat, eff in (("dp", 0.9), ("mp", 0.5)):
        for d in (1, 2, 4):
            rows.append({"status": "ok", "size": "mini", "strategy": strat, "devices": d, "tokens_per_s":
                         1000 * d * (eff if d > 1 else 1), "error": None, "hardware_label": "X-2c-24GB",
                         "batch_size": 8, "step_time_s": 0.1, "step_time_s_iqr": 0.01,
                         "mem_peak_bytes": 2**28, "loss_last": 6.0, "schedule": None, "precision": "fp32"})
    rows.append({"status": "invalid", "size": "mini", "strategy": "mp", "devices": 8, "error": "too many stages",
                 "hardware_label": "X-2c-24GB"})
    return pd.DataFrame(rows)


def test_scaling_data_keeps_ok_runs_only():
    d = report.scaling_data(_df())
    assert len(d) == 6
    dp = d[d["strategy"] == "dp"].set_index("devices")["tokens_per_s"]
    assert dp[2] == 1800 and dp[4] == 3600


def test_summary_table_lists_failures():
    s = report.summary_table(_df())
    assert "7 runs: 6 ok, 1 invalid" in s and "too many stages" in s


def test_pdf_pages_and_text(tmp_path):
    out = report.write_report(_df(), str(tmp_path / "r.pdf"), title="unit report")
    pdf = PdfReader(out)
    assert len(pdf.pages) == 3  # title, table, scaling
    text = "".join(p.extract_text() for p in pdf.pages)
    assert "unit report" in text and "tokens/s" in text and "devices" in text
    assert (tmp_path / "r.csv").exists() and (tmp_path / "r.md").exists()
    # deterministic: the same results make the same bytes
    again = report.write_report(_df(), str(tmp_path / "r2.pdf"), title="unit report")
    assert open(out, "rb").read() == open(again, "rb").read()


def test_variant_names_the_layout():
    assert report.variant({"strategy": "mp", "schedule": "1f1b"}) == "mp/1f1b"
    assert report.variant({"strategy": "hybrid", "schedule": float("nan"), "degree_tp": 2.0, "degree_pp": 1.0}) \
        == "hybrid tp=2"
    assert report.variant({"strategy": "tp", "degree_sequence_parallel": True,
                           "degree_activation_checkpointing": "full"}) == "tp+sp+ckpt"
    assert report.variant({"strategy": "dp", "schedule": None}) == "dp"
