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
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from bench import figures  # noqa: E402
from bench.figures import A4, variant  # noqa: E402  (variant: also re-exported for callers)
from bench.results import load  # noqa: E402

matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType, selectable text
                            "svg.hashsalt": "scalebench", "font.size": 9})
logging.getLogger("fontTools").setLevel(logging.WARNING)  # font subsetting chatter at INFO
TABLE_COLS = ["size", "strategy", "devices", "degree_dp", "degree_tp", "degree_pp", "schedule", "batch_size",
              "precision", "repeat", "status", "tokens_per_s", "step_time_s", "step_time_s_iqr", "mem_peak_bytes",
              "loss_last"]
LINES_PER_PAGE = 28  # rows of one line that an appendix page holds (a run whose error wraps takes more room)
ERROR_CHARS = 300  # an error longer than this is cut, with an ellipsis (whole in NAME.csv)
ERROR_WIDTH = 60  # characters per line of a wrapped error in the PDF


def table_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The runs as a readable table: one row per run, units in the headers."""
    if df.empty:
        return pd.DataFrame(columns=["size", "strategy", "devices", "status"])
    t = df.reindex(columns=TABLE_COLS).copy()
    records = df.to_dict("records")
    t["repeat"] = [repeat_text(r) for r in records]
    # the layout's label (bench.parallel.label: 'tp+full-head', 'tp+sp', 'dp+ckpt'), not only the
    # strategy's name: two layouts of one strategy must not read as one in the table
    t["strategy"] = [variant(r) if isinstance(r.get("strategy"), str) else r.get("strategy") for r in records]
    t["step_ms"] = t.pop("step_time_s") * 1e3
    t["iqr_ms"] = t.pop("step_time_s_iqr") * 1e3
    t["peak_MiB"] = t.pop("mem_peak_bytes") / 2**20
    t = t.rename(columns={"tokens_per_s": "tokens/s", "batch_size": "batch", "loss_last": "loss",
                          "degree_dp": "dp", "degree_tp": "tp", "degree_pp": "pp"})
    for c in ("dp", "tp", "pp", "devices", "batch"):  # integers, blank when unknown
        t[c] = t[c].astype("Int64")
    t["error"] = [_cut(e) for e in df["error"]] if "error" in df else ""  # whole in the CSV
    return t.sort_values(["size", "strategy", "devices"], na_position="last", kind="stable").reset_index(drop=True)


def repeat_text(r) -> str:
    """Which run of a repeated point a row is: '2/3' (the repeat index from 1, of `repeats`);
    '' for a point run once."""
    n, k = r.get("repeats"), r.get("repeat")
    if n is None or k is None or pd.isna(n) or pd.isna(k) or int(n) < 2:
        return ""
    return f"{int(k) + 1}/{int(n)}"


def _cut(e) -> str:
    """An error text whole, or its first ERROR_CHARS characters and an ellipsis."""
    e = "" if e is None or (isinstance(e, float) and pd.isna(e)) else " ".join(str(e).split())
    return e if len(e) <= ERROR_CHARS else e[:ERROR_CHARS - 1].rstrip() + "…"


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
        lines += ["", "best layout per setting (each layout's median tokens/s over its own runs; '~': the runs cannot",
                  "separate them; '(≈ ...: same computation)': layouts that compute the same, measured apart;",
                  "the best-strategy page has every setting, its CSV every layout):"]
        for r in best[best["rank"] == 1].itertuples():
            lines.append(f"  {r.cell[:58]:<58} {r.devices:>3} dev: {r.winner} ({r.tokens_per_s:,.0f} tokens/s, "
                         f"{r.runs} run(s))")
        lines = lines[:40] + (["  ..."] if len(lines) > 40 else [])
    if skipped:
        lines += ["", "pages left out (no data for them; each says what it needs):"] + [f"  - {s}" for s in skipped]
    return lines


def _wrapped(t: pd.DataFrame, wrap: dict[str, int]) -> list[list[str]]:
    """The table's cells as text, those of the `wrap` columns broken into lines of at most
    that many characters (at spaces where there are some)."""
    cells = [[_fmt(v) for v in row] for row in t.itertuples(index=False)]
    for c, width in wrap.items():
        if c in t.columns:
            j = list(t.columns).index(c)
            for row in cells:
                row[j] = "\n".join(textwrap.wrap(row[j], width, break_long_words=True)) if row[j] else ""
    return cells


def _row_height(lines: int) -> float:
    """A table row of `lines` lines of text, in rows of one line (the cell's padding once)."""
    return 0.35 + 0.65 * lines


def appendix_chunks(t: pd.DataFrame, lines: float = LINES_PER_PAGE, width: int = ERROR_WIDTH) -> list[pd.DataFrame]:
    """The run table cut into pages of at most `lines` rows of one line, a run whose error wraps
    into k lines counting as `_row_height(k)` of them (a run is never split; every page holds
    at least one)."""
    chunks, start, used = [], 0, 0.0
    heights = [_row_height(max(1, len(textwrap.wrap(str(e), width, break_long_words=True))))
               for e in (t["error"] if "error" in t else [""] * len(t))]
    for i, h in enumerate(heights):
        if used and used + h > lines:
            chunks.append(t.iloc[start:i])
            start, used = i, 0
        used += h
    chunks.append(t.iloc[start:])
    return chunks


def fig_table(t: pd.DataFrame, title: str, wrap: dict[str, int] | None = None, title_size: int = 12) -> plt.Figure:
    """A table page; the `wrap` columns' texts broken into lines ({column: characters})."""
    fig = plt.figure(figsize=A4)
    ax = fig.add_axes((0.03, 0.03, 0.94, 0.86))  # the page's width for wide tables
    ax.axis("off")
    ax.set_title(title, loc="left", fontsize=title_size)
    cells = _wrapped(t, wrap or {})
    tab = ax.table(cellText=cells or [[""] * len(t.columns)], colLabels=list(t.columns), loc="upper left",
                   cellLoc="left")
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    tab.scale(1, 1.4)
    tab.auto_set_column_width(list(range(len(t.columns))))
    wide = [j for j, c in enumerate(t.columns) if c in (wrap or {})]
    for i, row in enumerate(cells, 1):  # a row as tall as its longest cell
        n = max(v.count("\n") + 1 for v in row) if row else 1
        for j in range(len(row)):
            cell = tab[i, j]
            if j in wide:
                cell.PAD = 0.02  # (a share of the cell's width: 0.1 of a wide column is a wide gap)
            if n > 1:
                cell.set_height(cell.get_height() * _row_height(n))
    return fig


REPEATS_COLS = ["size", "variant", "devices", "batch_size", "hardware_label", "runs", "tokens_per_s_median", "ci_low",
                "ci_high", "interval", "between_runs_range", "within_run_range", "steps_per_run"]


def _fig_repeats(r: pd.DataFrame) -> plt.Figure:
    varying = [k for k in figures.CONTEXT if k in r and k not in REPEATS_COLS and r[k].astype(str).nunique() > 1]
    return fig_table(r[REPEATS_COLS + varying],  # (what the footer cannot hold fixed: e.g. the result set)
                     "Repeats: the median of the runs' tokens/s, with a distribution-free interval of that median "
                     "(order statistics of the runs);\n"
                     "`interval` says which runs bound it and how often such an interval holds the true median "
                     "(min-max of 3 runs: 75%).\n"
                     "Spread, one statistic on both scales: between_runs_range = max/min - 1 of the runs' tokens/s;\n"
                     "within_run_range = max/min - 1 of a run's step times (median over the runs). "
                     "A range grows with its count of values:\nruns against steps_per_run.", title_size=10)


# (slug: the page's CSV is NAME.<slug>.csv; its name on the summary page, with what it needs, when it has no
# data; data; draw)
PAGES = (
    ("scaling", "scaling with devices (needs runs that ended ok)", figures.scaling_data, figures.fig_scaling),
    ("size", "model size (needs two or more sizes)", figures.size_data, figures.fig_size),
    ("memory", "memory (needs runs that ended ok, oom or predicted_oom, with a measured or predicted peak)",
     figures.memory_data, figures.fig_memory),
    ("batch", "batch size (needs two or more batch sizes)", figures.batch_data, figures.fig_batch),
    ("best", "best strategy map (needs runs that ended ok)", figures.best_data, figures.fig_best),
    ("spread", "step-time spread (needs runs that ended ok, with their step times)", figures.spread_data,
     figures.fig_spread),
    ("bubble", "pipeline bubble (needs a pure pipeline and the reference on 1 device, same work)",
     figures.bubble_data, figures.fig_bubble),
    ("loss", "loss curves (needs one model on the same tokens under two or more layouts)", figures.loss_data,
     figures.fig_loss),
    ("hardware", "hardware comparison (needs results from two or more hardware labels)", figures.hardware_data,
     figures.fig_hardware),
    ("repeats", "repeats (needs a configuration run more than once: repeats=3, or seed=0,1,2)",
     figures.repeats_data, _fig_repeats),
)


def page_data(df: pd.DataFrame, advice: tuple = ()) -> dict[str, pd.DataFrame]:
    """The data behind each page, by its slug (empty where the page has nothing to show);
    `advice` (bench.advise's answers) goes to the best-strategy map."""
    return {slug: (data(df, advice=advice) if slug == "best" else data(df)) for slug, _, data, _ in PAGES}


def find_advice(paths) -> list[dict]:
    """The advice.json files (bench.advise) in the given folders and beside the given files."""
    import glob
    import json
    found = []
    for p in paths:
        folder = p if os.path.isdir(p) else os.path.dirname(os.path.dirname(os.path.abspath(p)))
        for f in sorted(glob.glob(os.path.join(folder, "**", "advice.json"), recursive=True)):
            if f not in found:
                found.append(f)
    out = []
    for f in found:
        try:
            with open(f) as fh:
                out.append(json.load(fh))
        except (OSError, ValueError):
            pass
    return out


def footer(data: pd.DataFrame, slug: str, name: str | None) -> str:
    """A page's footer: what its rows hold fixed, and the file its data is in (`name`.<slug>.csv,
    beside the PDF; no file named when the pages are made without one)."""
    fixed = figures.held_fixed(data)
    parts = ([f"held fixed on this page: {fixed}"] if fixed else []) + ([f"data: {name}.{slug}.csv"] if name else [])
    return "; ".join(parts)


def pages(df: pd.DataFrame, title: str, data: dict[str, pd.DataFrame] | None = None, name: str | None = None):
    """Every page of the report, in order; each figure's footer says what its page holds fixed
    and, given the report's `name` (the PDF's file name without .pdf), the CSV its data is in."""
    data = page_data(df) if data is None else data
    skipped = [page_name for slug, page_name, _, _ in PAGES if data[slug].empty]
    yield _text_page(title, summary_lines(df, skipped))
    for slug, page_name, _, draw in PAGES:
        if data[slug].empty:
            continue
        try:
            fig = draw(data[slug])
        except Exception as e:  # one odd page must not cost the rest of the report
            plt.close("all")
            fig = _text_page(page_name, [f"this page could not be drawn: {type(e).__name__}: {e}"])
        fig.text(0.01, 0.003, footer(data[slug], slug, name), fontsize=6, color="grey")
        yield fig
    t = table_frame(df)
    chunks = appendix_chunks(t)
    for i, chunk in enumerate(chunks):
        yield fig_table(chunk, f"Appendix: every run ({i + 1}/{len(chunks)}; repeat: which run of a repeated point)",
                        wrap={"error": ERROR_WIDTH})


def write_report(df: pd.DataFrame, out: str, title: str = "scalebench report", extra=(), first=(),
                 advice: tuple = ()) -> str:
    """Write the PDF (`first` figures before its pages, e.g. the advice page; `extra` after
    them, e.g. compare's); beside it a CSV and a Markdown
    table of every run, and each page's data as `NAME.<page>.csv`. Returns the PDF path."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # deterministic: fixed metadata, no creation date, so the same results give the same file
    meta = {"Title": title, "Creator": "scalebench", "Producer": "matplotlib", "CreationDate": None}
    base = os.path.splitext(out)[0]
    data = page_data(df, advice)
    with PdfPages(out, metadata=meta) as pdf:
        for fig in list(first) + list(pages(df, title, data, name=os.path.basename(base))) + list(extra):
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
            f.write("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |\n")
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
    from bench.results import load_probes
    probes = load_probes(a.results)  # bench.probe's results: a bandwidth page each
    if df.empty and not probes:
        _fail(f"error: no result.json under {', '.join(a.results)}; run a sweep first (python -m bench.run -m ...)")
    if df.empty:
        df = pd.DataFrame({"status": pd.Series(dtype=str)})
    else:
        print(summary_table(df))
    advice = find_advice(a.results)  # bench.advise's answers: their page first, their verdicts on the map
    first = [figures.fig_advice(x) for x in advice]
    from bench.figures_projection import bandwidth_data, fig_bandwidth
    extra = [fig_bandwidth(p) for p in probes]
    print(f"report: {write_report(df, a.output, a.title, first=first, advice=tuple(advice), extra=extra)}")
    if probes:  # the bandwidth pages' data
        bandwidth_data(probes).to_csv(os.path.splitext(a.output)[0] + ".bandwidth.csv", index=False)
    if advice:  # the advice page's data, beside the page's other CSVs
        pd.concat([figures.advice_frame(x) for x in advice]).to_csv(os.path.splitext(a.output)[0] + ".advice.csv",
                                                                    index=False)


if __name__ == "__main__":
    main()
