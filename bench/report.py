"""`python -m bench.report RESULTS... -o reports/NAME.pdf`: result files -> PDF (+ CSV, Markdown).

Reads result files only, so a report can be re-made anywhere from results copied from many
machines. Pages, each skipped with a note on the summary page when its data is missing:
summary, scaling with devices, model size, memory, batch size, best strategy, step-time
spread, pipeline bubble, loss curves, hardware comparison, repeats, appendix (every run).
The figures are pure functions in bench/figures.py; nothing is aggregated across what
changes the work or the machine (bench/identity.py); each page's data is written beside the
PDF as `NAME.<page>.csv`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from bench import figures  # noqa: E402
from bench.stats import CI_LEVEL  # noqa: E402
from bench.figures import A4, variant  # noqa: E402,F401  (variant: re-exported for callers)
from bench.results import load  # noqa: E402

matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType, selectable text
                            "svg.hashsalt": "scalebench", "font.size": 9})
logging.getLogger("fontTools").setLevel(logging.WARNING)  # font subsetting chatter at INFO
TABLE_COLS = ["size", "strategy", "devices", "degree_dp", "degree_tp", "degree_pp", "schedule", "batch_size",
              "precision", "status", "tokens_per_s", "step_time_s", "step_time_s_iqr", "mem_peak_bytes", "loss_last"]
ROWS_PER_PAGE = 28


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
    t["error"] = df["error"].fillna("").str.slice(0, 48) if "error" in df else ""  # whole in the CSV
    return t.sort_values(["size", "strategy", "devices"], na_position="last", kind="stable").reset_index(drop=True)


def _fmt(v) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, float):
        if pd.isna(v):
            return ""
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


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


# -- pages ---------------------------------------------------------------------------------

def _text_page(title: str, lines: list[str], size: int = 10) -> plt.Figure:
    fig = plt.figure(figsize=A4)
    fig.text(0.05, 0.93, title, fontsize=16, weight="bold")
    fig.text(0.05, 0.88, "\n".join(lines), fontsize=size, va="top", family="monospace")
    return fig


def summary_lines(df: pd.DataFrame, skipped: list[str]) -> list[str]:
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    lines = [f"{len(df)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()), ""]
    for label in sorted(df["hardware_label"].dropna().unique()) if not df.empty else []:
        lines.append(f"hardware: {label}")
    if "software_torch" in df:
        lines.append("software: torch " + ", ".join(sorted(df["software_torch"].dropna().unique())))
    best = figures.best_data(df)
    if not best.empty:
        lines += ["", "best layout per setting (median tokens/s of its runs; '~': the runs cannot separate them;",
                  "'=': layouts that compute the same; the best-strategy page has every setting):"]
        for r in best.itertuples():
            lines.append(f"  {r.cell[:58]:<58} {r.devices:>3} dev: {r.winner} ({r.tokens_per_s:,.0f} tokens/s, "
                         f"{r.runs} run(s))")
        lines = lines[:40] + (["  ..."] if len(lines) > 40 else [])
    if skipped:
        lines += ["", "pages left out (no data for them):"] + [f"  - {s}" for s in skipped]
    return lines


def fig_table(t: pd.DataFrame, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=A4)
    ax.axis("off")
    ax.set_title(title, loc="left", fontsize=12)
    cells = [[_fmt(v) for v in row] for row in t.itertuples(index=False)]
    tab = ax.table(cellText=cells or [[""] * len(t.columns)], colLabels=list(t.columns), loc="upper left",
                   cellLoc="left")
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    tab.scale(1, 1.4)
    tab.auto_set_column_width(list(range(len(t.columns))))
    return fig


def _fig_repeats(r: pd.DataFrame) -> plt.Figure:
    cols = ["size", "variant", "devices", "batch_size", "hardware_label", "runs", "tokens_per_s_median", "ci_low",
            "ci_high", "between_runs_spread", "within_run_spread"]
    return fig_table(r[cols], f"Repeats: the median of runs' tokens/s and its {CI_LEVEL:.0%} bootstrap interval "
                              "over runs;\nspread between runs (max/min - 1) beside the spread of steps within a run "
                              "(IQR / median)")


# (slug: the page's CSV is NAME.<slug>.csv; title when it has no data; data; draw)
PAGES = (
    ("scaling", "scaling with devices", figures.scaling_data, figures.fig_scaling),
    ("size", "model size (needs two or more sizes)", figures.size_data, figures.fig_size),
    ("memory", "memory", figures.memory_data, figures.fig_memory),
    ("batch", "batch size (needs two or more batch sizes)", figures.batch_data, figures.fig_batch),
    ("best", "best strategy map", figures.best_data, figures.fig_best),
    ("spread", "step-time spread", figures.spread_data, figures.fig_spread),
    ("bubble", "pipeline bubble (needs a pure pipeline and the reference on 1 device, same work)",
     figures.bubble_data, figures.fig_bubble),
    ("loss", "loss curves (needs one model on the same tokens under two or more layouts)", figures.loss_data,
     figures.fig_loss),
    ("hardware", "hardware comparison (needs results from two or more hardware labels)", figures.hardware_data,
     figures.fig_hardware),
    ("repeats", "repeats (needs a configuration run more than once: repeats=3, or seed=0,1,2)",
     figures.repeats_data, _fig_repeats),
)


def page_data(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The data behind each page, by its slug (empty where the page has nothing to show)."""
    return {slug: data(df) for slug, _, data, _ in PAGES}


def pages(df: pd.DataFrame, title: str, data: dict[str, pd.DataFrame] | None = None):
    """Every page of the report, in order; each figure's footer says what its page holds fixed."""
    data = page_data(df) if data is None else data
    skipped = [name for slug, name, _, _ in PAGES if data[slug].empty]
    yield _text_page(title, summary_lines(df, skipped))
    for slug, name, _, draw in PAGES:
        if data[slug].empty:
            continue
        try:
            fig = draw(data[slug])
        except Exception as e:  # one odd page must not cost the rest of the report
            plt.close("all")
            fig = _text_page(name, [f"this page could not be drawn: {type(e).__name__}: {e}"])
        fixed = figures.held_fixed(data[slug])
        fig.text(0.01, 0.003, (f"held fixed on this page: {fixed}; " if fixed else "")
                 + f"data: <report>.{slug}.csv", fontsize=6, color="grey")
        yield fig
    t = table_frame(df)
    n = max(1, -(-len(t) // ROWS_PER_PAGE))
    for i in range(n):
        yield fig_table(t.iloc[i * ROWS_PER_PAGE:(i + 1) * ROWS_PER_PAGE], f"Appendix: every run ({i + 1}/{n})")


def write_report(df: pd.DataFrame, out: str, title: str = "scalebench report", extra=()) -> str:
    """Write the PDF (plus `extra` figures, e.g. compare's); beside it a CSV and a Markdown
    table of every run, and each page's data as `NAME.<page>.csv`. Returns the PDF path."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # deterministic: fixed metadata, no creation date, so the same results give the same file
    meta = {"Title": title, "Creator": "scalebench", "Producer": "matplotlib", "CreationDate": None}
    base = os.path.splitext(out)[0]
    data = page_data(df)
    with PdfPages(out, metadata=meta) as pdf:
        for fig in list(pages(df, title, data)) + list(extra):
            pdf.savefig(fig)
            plt.close(fig)
    for slug, d in data.items():  # the data behind each page, to re-plot or check
        if not d.empty:
            d.drop(columns=[c for c in ("step_times_ms",) if c in d]).to_csv(f"{base}.{slug}.csv", index=False)
    df.drop(columns=[c for c in ("step_times_s", "loss") if c in df]).to_csv(base + ".csv", index=False)
    t = table_frame(df)
    with open(base + ".md", "w") as f:
        f.write(f"# {title}\n\n")
        f.write("| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns) + "\n")
        for row in t.itertuples(index=False):
            f.write("| " + " | ".join(_fmt(v) for v in row) + " |\n")
    return out


def _fail(msg: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(msg, file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description="Result files -> PDF report.")
    ap.add_argument("results", nargs="+", help="result folders or result.json files")
    ap.add_argument("-o", "--output", default="reports/report.pdf", help="PDF path (CSV and .md beside it)")
    ap.add_argument("--title", default="scalebench report")
    a = ap.parse_args(argv)
    missing = [p for p in a.results if not os.path.exists(p)]
    if missing:
        _fail(f"error: no such file or folder: {', '.join(missing)}; give result folders made by bench.run")
    df = load(a.results, on_skip=lambda m: print(f"skipped {m}", file=sys.stderr))
    if df.empty:
        _fail(f"error: no result.json under {', '.join(a.results)}; run a sweep first (python -m bench.run -m ...)")
    print(summary_table(df))
    print(f"report: {write_report(df, a.output, a.title)}")


if __name__ == "__main__":
    main()
