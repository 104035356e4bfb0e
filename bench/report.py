"""`python -m bench.report RESULTS... -o reports/NAME.pdf`: result files -> PDF (+ CSV, Markdown).

Pure functions DataFrame -> table/Figure, one writer. Reads result files only, so a report
can be re-made anywhere from results copied from many machines.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from bench.results import load  # noqa: E402

matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType, selectable text
                            "svg.hashsalt": "scalebench", "font.size": 9})
TABLE_COLS = ["size", "strategy", "devices", "degree_dp", "degree_tp", "degree_pp", "schedule", "batch_size",
              "precision", "status", "tokens_per_s", "step_time_s", "step_time_s_iqr", "mem_peak_bytes", "loss_last"]
ROWS_PER_PAGE = 28
logging.getLogger("fontTools").setLevel(logging.WARNING)  # font subsetting chatter at INFO


def table_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The runs as a readable table: one row per run, units in the headers."""
    if df.empty:
        return pd.DataFrame(columns=["size", "strategy", "devices", "status"])
    t = df.reindex(columns=TABLE_COLS).copy()
    t["step_ms"] = t.pop("step_time_s") * 1e3
    t["iqr_ms"] = t.pop("step_time_s_iqr") * 1e3
    t["peak_MiB"] = t.pop("mem_peak_bytes") / 2**20
    t = t.rename(columns={"tokens_per_s": "tokens/s", "batch_size": "batch", "loss_last": "loss",
                          "degree_dp": "dp", "degree_tp": "tp", "degree_pp": "pp"})
    for c in ("dp", "tp", "pp", "devices", "batch"):  # integers, blank when unknown
        t[c] = t[c].astype("Int64")
    t["error"] = df["error"].fillna("").str.slice(0, 60) if "error" in df else ""
    return t.sort_values(["size", "strategy", "devices"], na_position="last", kind="stable").reset_index(drop=True)


def _fmt(v) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, float):
        if pd.isna(v):
            return ""
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return "" if v is None else str(v)


def summary_table(df: pd.DataFrame) -> str:
    """Plain-text table printed at the end of a sweep."""
    if df.empty:
        return "no results"
    t = table_frame(df).drop(columns=["error"])
    t = t.astype(object).where(t.notna(), "")  # pandas skips formatters for missing values
    counts = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
    body = t.to_string(index=False, na_rep="", formatters={c: _fmt for c in t.columns})
    errs = [f"  {r.size} {r.strategy} devices={r.devices}: {r.error}"
            for r in df.itertuples() if r.status != "ok" and isinstance(r.error, str)]
    return "\n".join([f"{len(df)} runs: {counts}", body] + (["not ok:"] + errs if errs else []))


def fig_title_page(df: pd.DataFrame, title: str) -> plt.Figure:
    fig = plt.figure(figsize=(11.69, 8.27))
    fig.text(0.05, 0.92, title, fontsize=18, weight="bold")
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    lines = [f"{len(df)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
             "hardware: " + ", ".join(sorted(df["hardware_label"].dropna().unique())) if not df.empty else ""]
    fig.text(0.05, 0.86, "\n".join(lines), fontsize=11, va="top")
    return fig


def fig_table(t: pd.DataFrame, page: int, pages: int) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(11.69, 8.27))
    ax.axis("off")
    ax.set_title(f"All runs ({page}/{pages})", loc="left", fontsize=12)
    cells = [[_fmt(v) for v in row] for row in t.itertuples(index=False)]
    tab = ax.table(cellText=cells or [[""] * len(t.columns)], colLabels=list(t.columns), loc="upper left",
                   cellLoc="left")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1, 1.5)
    tab.auto_set_column_width(list(range(len(t.columns))))
    return fig


def variant(row) -> str:
    """A strategy with what distinguishes its layouts: 'mp/1f1b', 'hybrid tp=2', 'tp+sp'."""
    def get(k):
        v = row.get(k)
        return None if v is None or (isinstance(v, float) and pd.isna(v)) else v
    name = str(get("strategy"))
    if isinstance(get("schedule"), str) and get("schedule"):
        name += f"/{get('schedule')}"
    if name.startswith("hybrid"):
        tp, pp = int(get("degree_tp") or 1), int(get("degree_pp") or 1)
        name += f" tp={tp}" if tp > 1 else f" pp={pp}"
    if get("degree_sequence_parallel") is True:
        name += "+sp"
    if get("degree_activation_checkpointing") == "full":
        name += "+ckpt"
    return name


def scaling_data(df: pd.DataFrame) -> pd.DataFrame:
    """ok runs, median tokens/s per (size, variant, devices): the data behind the plot."""
    ok = df[df["status"] == "ok"] if not df.empty else df
    if ok.empty:
        return pd.DataFrame(columns=["size", "strategy", "devices", "tokens_per_s"])
    ok = ok.assign(strategy=[variant(r) for r in ok.to_dict("records")])
    return (ok.groupby(["size", "strategy", "devices"], as_index=False)["tokens_per_s"].median()
            .sort_values(["size", "strategy", "devices"]))


def fig_scaling(data: pd.DataFrame) -> plt.Figure:
    sizes = list(dict.fromkeys(data["size"]))
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(7.5, 5.2 * len(sizes)), 4.8), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        d = data[data["size"] == size]
        for strat, g in d.groupby("strategy"):
            line, = ax.plot(g["devices"], g["tokens_per_s"], marker="o", label=strat)
            base = g.iloc[0]  # ideal: linear from the fewest devices measured
            ideal = base["tokens_per_s"] * g["devices"] / base["devices"]
            ax.plot(g["devices"], ideal, ls=":", color=line.get_color(), alpha=0.6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(d["devices"].unique()))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel("devices")
        ax.set_ylabel("throughput (tokens/s, global)")
        ax.set_title(f"size={size}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="strategy (dotted: ideal linear)", fontsize=7)
    fig.suptitle("Scaling with devices")
    fig.tight_layout()
    return fig


def write_report(df: pd.DataFrame, out: str, title: str = "scalebench report") -> str:
    """Write the PDF, and a CSV and a Markdown table beside it; returns the PDF path."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    t = table_frame(df)
    # deterministic: fixed metadata, no creation date, so the same results give the same file
    meta = {"Title": title, "Creator": "scalebench", "Producer": "matplotlib", "CreationDate": None}
    with PdfPages(out, metadata=meta) as pdf:
        for fig in _pages(df, t, title):
            pdf.savefig(fig)
            plt.close(fig)
    base = os.path.splitext(out)[0]
    flat = df.drop(columns=[c for c in ("step_times_s", "loss") if c in df])
    flat.to_csv(base + ".csv", index=False)
    with open(base + ".md", "w") as f:
        f.write(f"# {title}\n\n" + t.to_markdown(index=False) if _has_tabulate() else t.to_string(index=False))
    return out


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def _pages(df: pd.DataFrame, t: pd.DataFrame, title: str):
    yield fig_title_page(df, title)
    pages = max(1, -(-len(t) // ROWS_PER_PAGE))
    for i in range(pages):
        yield fig_table(t.iloc[i * ROWS_PER_PAGE:(i + 1) * ROWS_PER_PAGE], i + 1, pages)
    data = scaling_data(df)
    if not data.empty:
        yield fig_scaling(data)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description="Result files -> PDF report.")
    ap.add_argument("results", nargs="+", help="result folders or result.json files")
    ap.add_argument("-o", "--output", default="reports/report.pdf", help="PDF path (CSV and .md beside it)")
    ap.add_argument("--title", default="scalebench report")
    a = ap.parse_args(argv)
    missing = [p for p in a.results if not os.path.exists(p)]
    if missing:
        sys.exit(f"error: no such file or folder: {', '.join(missing)}; give result folders made by bench.run")
    df = load(a.results, on_skip=lambda m: print(f"skipped {m}", file=sys.stderr))
    if df.empty:
        sys.exit(f"error: no result.json under {', '.join(a.results)}; run a sweep first (python -m bench.run -m ...)")
    print(summary_table(df))
    print(f"report: {write_report(df, a.output, a.title)}")


if __name__ == "__main__":
    main()
