"""`python -m bench.report RESULTS... -o reports/NAME.pdf`: result files -> PDF (+ CSV, Markdown).

Reads result files only, so a report can be re-made anywhere from results copied from many
machines. Pages, each skipped with a note on the summary page when its data is missing:
summary, scaling with devices, model size, memory, batch size, best strategy, step-time
spread, pipeline bubble, loss curves, hardware comparison, repeats, appendix (every run).
The figures are pure functions in bench/figures.py.
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
from bench.stats import CI_LEVEL, bootstrap_ci, pooled_steps  # noqa: E402
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


# -- repeats -------------------------------------------------------------------------------

def repeats_data(df: pd.DataFrame) -> pd.DataFrame:
    """Configurations run more than once (seeds, repeats): the median tokens/s over the
    repeats and a 95% bootstrap interval of the median of all their measured steps."""
    ok = figures.ok_runs(df)
    cols = ["size", "variant", "devices", "batch_size", "hardware_label", "repeats", "tokens_per_s_median",
            "ci_low", "ci_high"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (_, hw), g in ok.groupby(["point_key", "hardware_label"]):
        if len(g) < 2:
            continue
        steps = pooled_steps(g["step_times_s"])
        tokens = g["tokens_per_step"].iloc[0]
        lo_t, hi_t = bootstrap_ci(steps)
        r = g.iloc[0]
        rows.append({"size": r["size"], "variant": r["variant"], "devices": r["devices"],
                     "batch_size": r["batch_size"], "hardware_label": hw, "repeats": len(g),
                     "tokens_per_s_median": float(g["tokens_per_s"].median()),
                     "ci_low": tokens / hi_t, "ci_high": tokens / lo_t})
    return pd.DataFrame(rows, columns=cols)


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
        lines += ["", "best configuration per size (median tokens/s):"]
        for size in figures._size_order(best):
            b = best[best["size"] == size].sort_values("tokens_per_s").iloc[-1]
            lines.append(f"  {size:>6}: {b['variant']} on {b['devices']} device(s), {b['tokens_per_s']:,.0f} tokens/s")
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


def pages(df: pd.DataFrame, title: str):
    """Every page of the report, in order."""
    built, skipped = [], []

    def page(name, data, draw, empty=None):
        if (data.empty if empty is None else empty):
            skipped.append(name)
        else:
            built.append((name, lambda: draw(data)))

    page("scaling with devices", figures.scaling_data(df), figures.fig_scaling)
    page("model size (needs two or more sizes)", figures.size_data(df), figures.fig_size)
    page("memory", figures.memory_data(df), figures.fig_memory)
    page("batch size (needs two or more batch sizes)", figures.batch_data(df), figures.fig_batch)
    page("best strategy map", figures.best_data(df), figures.fig_best)
    page("step-time spread", figures.spread_data(df), figures.fig_spread)
    page("pipeline bubble (needs mp runs and a 1-device run of the same shape)", figures.bubble_data(df),
         figures.fig_bubble)
    groups = figures.loss_data(df)
    page("loss curves (needs one configuration under two or more strategies)", groups, figures.fig_loss,
         empty=not groups)
    page("hardware comparison (needs results from two or more hardware labels)", figures.hardware_data(df),
         figures.fig_hardware)
    reps = repeats_data(df)
    page("repeats (needs a configuration run more than once, e.g. seed=0,1,2)", reps,
         lambda r: fig_table(r, f"Repeats: median tokens/s and its {CI_LEVEL:.0%} bootstrap interval"))
    yield _text_page(title, summary_lines(df, skipped))
    for name, draw in built:
        try:
            yield draw()
        except Exception as e:  # one odd page must not cost the rest of the report
            plt.close("all")
            yield _text_page(name, [f"this page could not be drawn: {type(e).__name__}: {e}"])
    t = table_frame(df)
    n = max(1, -(-len(t) // ROWS_PER_PAGE))
    for i in range(n):
        yield fig_table(t.iloc[i * ROWS_PER_PAGE:(i + 1) * ROWS_PER_PAGE], f"Appendix: every run ({i + 1}/{n})")


def write_report(df: pd.DataFrame, out: str, title: str = "scalebench report", extra=()) -> str:
    """Write the PDF (plus `extra` figures, e.g. compare's), and a CSV and a Markdown table
    beside it; returns the PDF path."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # deterministic: fixed metadata, no creation date, so the same results give the same file
    meta = {"Title": title, "Creator": "scalebench", "Producer": "matplotlib", "CreationDate": None}
    with PdfPages(out, metadata=meta) as pdf:
        for fig in list(pages(df, title)) + list(extra):
            pdf.savefig(fig)
            plt.close(fig)
    base = os.path.splitext(out)[0]
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
