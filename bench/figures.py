"""Report pages as pure functions: `*_data(df)` computes what a page shows from the tidy
result rows (tested on constructed frames; written beside the PDF as `NAME.<page>.csv`),
`fig_*(data)` draws it. No file I/O here.

Nothing is aggregated across what changes the work or the machine (bench/identity.py): a
figure is the median over the runs of one identity (repeats, seeds), never a median across
machines, sequence lengths, precisions, batches or options. Each page's title says what it
holds fixed; its legend says what distinguishes its lines.
"""
from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench import identity, stats  # noqa: E402
from bench.identity import MACHINE, fixed_text, varying_text  # noqa: E402

A4 = (11.69, 8.27)
GIB = 2**30
# what a page's title reports as held fixed, and its legends name where it varies
CONTEXT = MACHINE + ("accelerator", "precision", "seq_len", "grad_accum", "activation_checkpointing", "compile",
                     "data", "threads", "nodes", "loss_head", "loss_chunk_tokens", "malloc_mmap_threshold",
                     "malloc_trim_threshold", "malloc_mmap_max")
TIE_MARGIN = 0.30  # with fewer than 3 runs a side, a layout wins only by more than this (between-run drift here)
MIN_RUNS = 3  # runs a side before a test can separate two configurations


def _get(row, k):
    v = row.get(k)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def variant(row) -> str:
    """A strategy with what distinguishes its layouts: 'mp/1f1b', 'hybrid tp=2', 'tp+sp'
    (the registry's label, bench.parallel.label)."""
    from bench.parallel import label
    sched = _get(row, "schedule")
    name = label(str(_get(row, "strategy")), sched if isinstance(sched, str) and sched else None,
                 tp=int(_get(row, "degree_tp") or 1), pp=int(_get(row, "degree_pp") or 1),
                 sequence_parallel=_get(row, "degree_sequence_parallel") is True,
                 vocab_parallel=_vocab_parallel(row),
                 checkpointing=_get(row, "degree_activation_checkpointing"))
    co = int(_get(row, "colocated") or 1)
    return name + (f" x{co} co-located" if co > 1 else "")  # bench.project's calibration runs


def _vocab_parallel(row) -> bool:
    """The point's `strategy.vocab_parallel` as configured, at every device count of a series: the
    result lists it among the options where it is on (bench.results._options). Off, or a result
    from before the key (which replicated the output layer, and shares the hash and identity of
    an `off` point): False; bench.parallel.label names it only where tp runs."""
    opts = _get(row, "strategy_options")
    return isinstance(opts, str) and bool(json.loads(opts).get("vocab_parallel"))


def with_variant(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its layouts' labels and the identity keys (bench/identity.py)."""
    if df.empty:
        return df.assign(variant=[], identity=[], machine=[], work=[], series=[], setting=[], computation=[])
    return identity.with_keys(df.assign(variant=[variant(r) for r in df.to_dict("records")]))


# bench.advise's screening passes (a halving rung, a forced run of a pruned layout): fewer steps,
# in a process that measured the same layout again, so not a replicate of anything. They stay in
# the appendix and the CSV; the pages use the finalists' passes (one process each) and bench.run's runs.
SCREENING_STAGES = ("rung", "verify_pruned")


def ok_runs(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "tokens_per_s" not in df:
        return with_variant(df.iloc[0:0])
    ok = df["status"] == "ok"
    if "advise_stage" in df:
        ok &= ~df["advise_stage"].isin(SCREENING_STAGES)
    return with_variant(df[ok])


def per_identity(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per identity: the first run's fields, the median tokens/s and step time over
    its runs, and how many runs there are."""
    if ok.empty:
        return ok.assign(runs=[])
    g = ok.groupby("identity", sort=False)
    first = g.head(1).set_index("identity")
    med = g[["tokens_per_s", "step_time_s"]].median()
    first[["tokens_per_s", "step_time_s"]] = med
    first["runs"] = g.size()
    return first.reset_index()


def _size_order(df: pd.DataFrame) -> list[str]:
    """Sizes from the smallest model to the largest."""
    if "n_params" in df and df["n_params"].notna().any():
        return list(df.sort_values("n_params")["size"].drop_duplicates())
    return sorted(df["size"].dropna().unique())


def _log2_devices(ax, devices) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(devices)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())


def _thousands(ax, axis="y") -> None:
    """Plain numbers on a log axis; minor ticks labelled only when the axis spans less than
    a decade (else they crowd the labels). Call after the data is drawn."""
    fmt = ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    a = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    a.set_major_formatter(fmt)
    a.set_minor_formatter(fmt if lo > 0 and hi / lo < 10 else ticker.NullFormatter())


def _labels(rows: pd.DataFrame, base: pd.Series, within: str | None = None, keys=CONTEXT,
            line: pd.Series | None = None) -> pd.Series:
    """`base` labels, with the `keys` fields that differ among the rows (within each group
    of `within`) appended, and where different lines (`line`: each row's line; default: every
    row its own) would still share a label, the strategy options and model shapes that tell
    them apart: two lines never share a label."""
    out = base.copy()
    line = pd.Series(rows.index, index=rows.index) if line is None else line
    groups = rows.groupby(within) if within else [(None, rows)]
    for _, g in groups:
        _, varying = identity.describe(g, keys)
        for i in g.index:
            extra = varying_text(rows.loc[i], varying)
            out[i] = f"{base[i]}, {extra}" if extra else base[i]
        for _, same in g.groupby(out[g.index]):
            if line[same.index].nunique() > 1:  # one label, several lines: name what else differs
                for i in same.index:
                    out[i] += _options_apart(rows.loc[i], same)
    return out


def _options_apart(r, group: pd.DataFrame) -> str:
    """The strategy options and shape in which row `r` differs from the rest of `group`."""
    import json
    parts = []
    if "strategy_options" in group and group["strategy_options"].nunique() > 1:
        opts = [json.loads(o) if isinstance(o, str) else {} for o in group["strategy_options"]]
        mine = json.loads(r["strategy_options"]) if isinstance(r["strategy_options"], str) else {}
        parts += [f"{k}={v}" for k, v in sorted(mine.items()) if len({str(o.get(k)) for o in opts}) > 1]
    if "shape" in group and group["shape"].nunique() > 1:
        parts.append(str(r["shape"]))
    return f" [{', '.join(parts)}]" if parts else ""


def _int(v) -> str:
    return "?" if v is None or (isinstance(v, float) and math.isnan(v)) else str(int(v))


def _ctx(r) -> dict:
    """A row's CONTEXT fields: every page's data carries them (its CSV says where each figure
    was measured, and the report's footer what the page holds fixed)."""
    return {k: _get(r, k) for k in CONTEXT}


def _cols(cols: list[str]) -> list[str]:
    """A page's columns: its own, then every CONTEXT column it does not have among them."""
    return cols + [k for k in CONTEXT if k not in cols]


def _finish(out: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """`out`'s `cols` followed by every CONTEXT column (empty where the rows do not say): every
    page's CSV carries the same context columns, so a row always says where it was measured."""
    out = out.assign(**{k: None for k in CONTEXT if k not in out})
    return out[_cols(cols)]


def held_fixed(data: pd.DataFrame) -> str:
    """What a page's rows share, for its footer: 'hardware_label X, fp32, seq 256, ...'."""
    return fixed_text(data, CONTEXT) if isinstance(data, pd.DataFrame) else ""


# -- scaling with devices ------------------------------------------------------------------

def _reference(ok: pd.DataFrame, value: str = "tokens_per_s") -> dict[tuple, float]:
    """The reference strategy on one device (bench.parallel.REFERENCE), by what must match it:
    the machine, the work without the strategy, and its batch, per micro-step ('b') or per
    optimizer step ('g'): {(match key, 'b'|'g', batch): the median of `value` over the runs of
    ONE identity}. Reference runs whose options differ in what the reference does not use (a
    schedule, say) all match, but they are different identities and never pooled: the one
    with the most runs is the reference (the first found among equals)."""
    from bench.parallel import REFERENCE
    ref = ok[(ok["strategy"] == REFERENCE) & (ok["devices"] == 1)]
    runs: dict[tuple, dict[str, list[float]]] = {}
    for r in ref.to_dict("records"):
        for kind, batch in (("b", r["batch_size"]), ("g", r["global_batch_size"])):
            runs.setdefault((_match(r), kind, _int(batch)), {}).setdefault(r["identity"], []).append(float(r[value]))
    return {k: float(np.median(max(ids.values(), key=len))) for k, ids in runs.items()}


def _match(r) -> str:
    """What a run shares with its reference: the machine and the work but the strategy (the
    node count aside: `devices` counts every device)."""
    keys = MACHINE + tuple(k for k in identity.WORK if k not in identity.STRATEGY_FIELDS)
    return identity._hash(identity.fields(r, keys))


def scaling_data(df: pd.DataFrame) -> pd.DataFrame:
    """Per series (bench.identity.series: one layout, everything fixed but the device count,
    weak scaling by the per-replica batch, strong by the global batch) and device count: the
    median tokens/s over its runs, and the scaling efficiency against each baseline there is:
    the series' own fewest devices n0 (only where the series has two or more device
    counts), tokens/s(n) / (n/n0 x tokens/s(n0)); and, where n0 > 1, the reference strategy on
    one device with the same settings on the same hardware (its batch the series' per-replica
    batch for weak scaling, the global batch for strong), tokens/s(n) / (n x tokens/s(1)).
    A series with no baseline has its throughput and no efficiency. One row per (series,
    device count, baseline)."""
    cols = ["size", "n_params", "series", "series_key", "variant", "scaling", "devices", "tokens_per_s", "runs",
            "efficiency", "baseline"]
    ok = ok_runs(df)
    pts = per_identity(ok)
    if pts.empty:
        return pd.DataFrame(columns=_cols(cols))
    ref = _reference(ok)
    # a series is the set of identities any of its runs measured (one point, e.g. dp on 2
    # devices with b=8, belongs to the weak series b=8/replica and to the strong one of global
    # batch 16 alike); a point's value is the median of all its identity's runs (the same work)
    members = ok.drop_duplicates(["series", "identity"])[["series", "identity"]]
    pts = members.merge(pts.drop(columns=["series"]), on="identity", how="left")
    # one device count measured with two node splits (8 on one node and 4 on each of 2): one
    # curve per node count there, as the points are different work
    split = pts.groupby("series")["devices"].transform(lambda d: d.duplicated().any())
    if split.any():  # (an empty selection keeps its int dtype, which a str column cannot add: pandas 3 + pyarrow)
        pts.loc[split, "series"] = (pts.loc[split, "series"].astype(str) + "-n"
                                    + pts.loc[split, "nodes"].map(_int).astype(str))
    rows = []
    for key, g in pts.groupby("series", sort=False):
        g = g.sort_values("devices")
        first = ok[ok["series"] == key.split("-n")[0]].iloc[0].to_dict()  # the anchor the series' runs fixed
        first.update(g.iloc[0][["devices", "tokens_per_s", "variant", "size"]].to_dict())
        n0, t0 = int(g.iloc[0]["devices"]), float(g.iloc[0]["tokens_per_s"])
        multi = g["devices"].nunique() > 1
        strong = identity.strong(first)
        if multi:
            mode = "strong" if g["global_batch_size"].nunique() == 1 else "weak"
        else:
            mode = "strong" if strong else "weak"
        anchor = (f"global batch {_int(first['global_batch_size'])}" if strong
                  else f"b={_int(first['batch_size'])}/replica")
        label = f"{first['variant']} ({mode}, {anchor})" if multi else f"{first['variant']} ({anchor})"
        ref_tps = ref.get((_match(first), "g", _int(first["global_batch_size"])) if strong
                          else (_match(first), "b", _int(first["batch_size"])))
        for r in g.to_dict("records"):
            base = dict(size=r["size"], n_params=r.get("n_params"), series=label, series_key=key,
                        variant=r["variant"], scaling=mode, devices=int(r["devices"]),
                        tokens_per_s=float(r["tokens_per_s"]), runs=int(r["runs"]), **_ctx(r))
            added = False
            if multi:
                rows.append({**base, "baseline": f"own {n0} device(s)",
                             "efficiency": r["tokens_per_s"] / (r["devices"] / n0 * t0)})
                added = True
            if ref_tps and n0 > 1:
                rows.append({**base, "baseline": "reference, 1 device",
                             "efficiency": r["tokens_per_s"] / (r["devices"] * ref_tps)})
                added = True
            if not added:
                rows.append({**base, "baseline": None, "efficiency": np.nan})
    out = pd.DataFrame(rows, columns=_cols(cols))
    heads = pts.drop_duplicates("series").set_index("series")  # one row per series: its context
    base = out.drop_duplicates("series_key").set_index("series_key")["series"].reindex(heads.index)
    out["series"] = out["series_key"].map(_labels(heads, base, within="size"))
    return out.sort_values(["n_params", "series", "devices"], kind="stable").reset_index(drop=True)


def scaling_note(data: pd.DataFrame) -> str:
    """Why a size's panel shows no efficiency ('' where it shows some): what is missing, said
    as it is. (A series with two or more device counts always has its own baseline, so a
    panel without efficiency holds only series of one device count each.)"""
    from bench.parallel import REFERENCE
    if data.empty or data["efficiency"].notna().any():
        return ""
    counts = data.groupby("series_key")["devices"].nunique()
    n = len(counts)
    note = ("efficiency needs 2+ device counts in a series; "
            + ("the one series here has 1" if n == 1 else f"each of the {n} series here has 1"))
    above = sorted({int(v) for v in data.groupby("series_key")["devices"].min() if v > 1})
    if above:
        note += (f";\na series on {' or '.join(map(str, above))} devices can also be judged against {REFERENCE} "
                 "on 1 device\nwith the same settings on this hardware, which is not in these results")
    return note


def fig_scaling(data: pd.DataFrame) -> plt.Figure:
    from bench.parallel import REFERENCE
    sizes = _size_order(data)
    fig, axes = plt.subplots(2, len(sizes), figsize=(max(A4[0], 4.2 * len(sizes)), A4[1]), squeeze=False)
    for j, size in enumerate(sizes):
        d = data[data["size"] == size]
        top, bot = axes[0][j], axes[1][j]
        colors = {}
        for label, g in d.drop_duplicates(["series", "devices"]).groupby("series", sort=False):
            line, = top.plot(g["devices"], g["tokens_per_s"], marker="o", label=label)
            colors[label] = line.get_color()
            if len(g) > 1:
                ideal = g["tokens_per_s"].iloc[0] * g["devices"] / g["devices"].iloc[0]
                top.plot(g["devices"], ideal, ls=":", color=line.get_color(), alpha=0.6)
        eff = d[d["efficiency"].notna()]
        for (label, baseline), g in eff.groupby(["series", "baseline"], sort=False):
            bot.plot(g["devices"], g["efficiency"], marker="o", color=colors[label],
                     ls="-" if baseline.startswith("own") else "--")
        note = scaling_note(d)
        if note:
            bot.text(0.5, 0.5, note, ha="center", va="center", transform=bot.transAxes, fontsize=8, wrap=True)
        top.set_yscale("log")
        for ax in (top, bot):
            _log2_devices(ax, d["devices"])
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel("devices")
        _thousands(top)
        top.set_ylabel("throughput (tokens/s, global; median of runs)")
        top.set_title(f"size={size}  (dotted: ideal linear from the first point)", fontsize=9)
        bot.set_ylabel("scaling efficiency (1 = linear)")
        bot.set_title(f"solid: vs the series' fewest devices; dashed: vs {REFERENCE} on 1 device", fontsize=8)
        bot.axhline(1.0, color="grey", lw=0.8)
        bot.set_ylim(0, max(1.2, float(eff["efficiency"].max()) * 1.1 if not eff.empty else 1.2))
        top.legend(fontsize=6)
    fig.suptitle("Scaling with devices (weak: batch per replica fixed; strong: global batch fixed)")
    fig.tight_layout()
    return fig


# -- model size ----------------------------------------------------------------------------

def _line_key(pts: pd.DataFrame, drop: tuple[str, ...]) -> pd.Series:
    """A key per row of everything in its identity but `drop`: the rows of one line."""
    keys = tuple(k for k in identity.IDENTITY if k not in drop)
    return pd.Series([identity._hash(identity.fields(r, keys)) for r in pts.to_dict("records")], index=pts.index)


def _lines_over(ok: pd.DataFrame, median_col: str, vary: tuple[str, ...], along: str) -> pd.DataFrame:
    """One point per identity (per_identity's medians, and the median of `median_col` over its
    runs), keyed into lines (`line_key`) that hold everything in the identity but `vary`
    fixed; only the lines with two or more values of `along` are kept."""
    pts = per_identity(ok)
    pts[median_col] = ok.groupby("identity")[median_col].median().reindex(pts["identity"]).values
    pts["line_key"] = _line_key(pts, vary)
    return pts[pts.groupby("line_key")[along].transform("nunique") > 1]


def size_data(df: pd.DataFrame) -> pd.DataFrame:
    """Lines over model size: everything in the identity but the model fixed along a line;
    the median tokens/s and MFU over runs (MFU against the datasheet peak where known, else
    the measured matmul peak: `mfu_source`)."""
    cols = ["line", "variant", "devices", "size", "n_params", "tokens_per_s", "mfu", "mfu_source", "runs"]
    ok = ok_runs(df)
    if ok.empty or ok["size"].nunique() < 2:
        return pd.DataFrame(columns=_cols(cols))
    datasheet = ok["mfu"] if "mfu" in ok else pd.Series(np.nan, index=ok.index)
    ok = ok.assign(mfu_source=np.where(datasheet.notna(), "datasheet peak", "measured matmul peak"),
                   mfu=datasheet.fillna(ok.get("mfu_measured_peak", np.nan)))
    pts = _lines_over(ok, "mfu", vary=("size", "shape"), along="shape")
    if pts.empty:
        return pd.DataFrame(columns=_cols(cols))
    base = pd.Series([f"{r['variant']}, {_int(r['devices'])} dev, b={_int(r['batch_size'])}"
                      for r in pts.to_dict("records")], index=pts.index)
    pts["line"] = _labels(pts, base, line=pts["line_key"])
    return _finish(pts.sort_values(["line", "n_params"]), cols).reset_index(drop=True)


def fig_size(data: pd.DataFrame) -> plt.Figure:
    fig, (a, b) = plt.subplots(1, 2, figsize=A4)
    for line, g in data.groupby("line", sort=False):
        a.plot(g["n_params"], g["tokens_per_s"], marker="o", label=line)
        b.plot(g["n_params"], g["mfu"], marker="o", label=line)
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.grid(True, which="both", alpha=0.3)
    a.set_yscale("log")
    _thousands(a)
    a.set_ylabel("throughput (tokens/s, global; median of runs)")
    b.set_ylabel(f"MFU (fraction of the {', '.join(sorted(set(data['mfu_source'])))})")
    b.set_ylim(0, None)
    a.legend(fontsize=6)
    fig.suptitle("Model size: each line holds everything but the model fixed")
    fig.tight_layout()
    return fig


# -- memory --------------------------------------------------------------------------------

def memory_data(df: pd.DataFrame) -> pd.DataFrame:
    """Per run (nothing pooled), like with like: the measured peak per device above the
    runtime baseline (`mem_peak_bytes - mem_baseline_bytes`: Python, torch and the process
    group's own memory, measured before the model, about 240 MiB per CPU rank) beside the
    prediction's model part (`mem_predicted_model_bytes`, the prediction without its runtime
    term; `mem_predicted_bytes` where results lack it), with `error` = predicted / measured - 1.
    Where the baseline is unknown (results that did not record it) the totals are compared
    instead, and `compared` says so. The totals, the baseline and the capacity (which bounds
    the total) are kept beside; the `line` joins runs that differ only in the model."""
    cols = ["line", "size", "n_params", "variant", "devices", "status", "compared", "measured_gib", "baseline_gib",
            "measured_total_gib", "predicted_gib", "predicted_total_gib", "error", "capacity_gib"]
    if df.empty:
        return pd.DataFrame(columns=_cols(cols))
    d = with_variant(df)
    d = d[d["status"].isin(["ok", "oom", "predicted_oom"])]
    if d.empty:
        return pd.DataFrame(columns=_cols(cols))

    def col(name):
        return d[name].astype(float) if name in d else pd.Series(np.nan, index=d.index)

    total, baseline = col("mem_peak_bytes"), col("mem_baseline_bytes")
    pred_total = col("mem_predicted_bytes")
    pred_model = col("mem_predicted_model_bytes").fillna(pred_total)
    known = baseline.notna()
    # the most loaded rank's own peak less its own baseline where the run recorded it
    measured = col("mem_peak_above_baseline_bytes").fillna(total - baseline).where(known)
    # compared: above the baseline where it is known, else the totals (older results)
    cmp_measured, cmp_pred = measured.where(known, total), pred_model.where(known, pred_total)
    compared = np.where(known, "above baseline",
                        np.where(total.notna(), "totals (baseline unknown)", "prediction only (not measured)"))
    out = d.assign(compared=compared, measured_gib=measured / GIB, baseline_gib=baseline / GIB,
                   measured_total_gib=total / GIB, predicted_gib=pred_model / GIB, predicted_total_gib=pred_total / GIB,
                   error=cmp_pred / cmp_measured - 1, capacity_gib=col("capacity_bytes") / GIB)
    out = out[out["measured_total_gib"].notna() | out["predicted_total_gib"].notna()]
    if out.empty:
        return pd.DataFrame(columns=_cols(cols))
    base = pd.Series([f"{r['variant']}, {_int(r['devices'])} dev, b={_int(r['batch_size'])}"
                      for r in out.to_dict("records")], index=out.index)
    out = out.assign(line=_labels(out, base, line=_line_key(out, ("size", "shape"))))
    return _finish(out.sort_values(["line", "n_params"], kind="stable"), cols).reset_index(drop=True)


def fig_memory(data: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=A4)
    above = data["compared"] == "above baseline"
    for line, g in data.groupby("line", sort=False):
        ok = g[(g["status"] == "ok") & above[g.index]]
        ln, = ax.plot(ok["n_params"], ok["measured_gib"], marker="o", label=f"{line}: measured above baseline")
        color = ln.get_color()
        ax.plot(ok["n_params"], ok["predicted_gib"], ls="--", marker=".", color=color, alpha=0.7,
                label=f"{line}: predicted, model part")
        old = g[(g["status"] == "ok") & (g["compared"] == "totals (baseline unknown)")]
        if not old.empty:  # the baseline unknown: totals, marked apart
            ax.plot(old["n_params"], old["measured_total_gib"], marker="s", mfc="none", ls="-", color=color,
                    alpha=0.6, label=f"{line}: measured total (baseline unknown)")
            ax.plot(old["n_params"], old["predicted_total_gib"], ls=":", marker=".", color=color, alpha=0.6,
                    label=f"{line}: predicted total (baseline unknown)")
        bad = g[g["status"] != "ok"]
        ax.scatter(bad["n_params"], bad["predicted_total_gib"], marker="x", s=80, color=color)
    cap = data["capacity_gib"].dropna()
    for c in sorted(set(cap.round(1))):
        ax.axhline(c, color="red", lw=1)
        ax.annotate(f"capacity {c:.0f} GiB (bounds the total)", (0.01, c), xycoords=("axes fraction", "data"),
                    va="bottom", color="red", fontsize=8)
    base = data["baseline_gib"].dropna()
    if not base.empty:
        ax.annotate(f"runtime baseline (left out above): {base.min() * 1024:,.0f}"
                    + (f"-{base.max() * 1024:,.0f}" if base.max() - base.min() > 1 / 1024 else "") + " MiB per device",
                    (0.01, 0.01), xycoords="axes fraction", fontsize=8, color="grey")
    n_old = int((data["compared"] == "totals (baseline unknown)").sum())
    if n_old:
        ax.annotate(f"{n_old} run(s) without a recorded baseline (older results): their totals are plotted "
                    "(squares, dotted)", (0.01, 0.05), xycoords="axes fraction", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _thousands(ax)
    ax.set_xlabel("parameters")
    ax.set_ylabel("peak memory per device above the runtime baseline (GiB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("Memory per run above the runtime baseline: measured peak - baseline (solid) beside the prediction's "
                 "model part (dashed);\nx = OOM or predicted OOM, at the total prediction", fontsize=9)
    fig.tight_layout()
    return fig


# -- batch size ----------------------------------------------------------------------------

def batch_data(df: pd.DataFrame) -> pd.DataFrame:
    """Lines over the per-replica batch: everything else in the identity fixed along a line."""
    cols = ["line", "size", "variant", "devices", "batch_size", "tokens_per_s", "mem_gib", "runs"]
    ok = ok_runs(df)
    if ok.empty or ok["batch_size"].nunique() < 2:
        return pd.DataFrame(columns=_cols(cols))
    ok = ok.assign(mem_gib=ok["mem_peak_bytes"] / GIB)
    pts = _lines_over(ok, "mem_gib", vary=("batch_size", "global_batch_size"), along="batch_size")
    if pts.empty:
        return pd.DataFrame(columns=_cols(cols))
    base = pd.Series([f"{r['size']} {r['variant']} {_int(r['devices'])} dev" for r in pts.to_dict("records")],
                     index=pts.index)
    pts["line"] = _labels(pts, base, line=pts["line_key"])
    return _finish(pts.sort_values(["line", "batch_size"]), cols).reset_index(drop=True)


def fig_batch(data: pd.DataFrame) -> plt.Figure:
    fig, (a, b) = plt.subplots(1, 2, figsize=A4)
    for line, g in data.groupby("line", sort=False):
        a.plot(g["batch_size"], g["tokens_per_s"], marker="o", label=line)
        b.plot(g["batch_size"], g["mem_gib"], marker="o", label=line)
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (sequences per replica per micro-step)")
        ax.grid(True, which="both", alpha=0.3)
    a.set_ylabel("throughput (tokens/s, global; median of runs)")
    b.set_ylabel("peak memory per device (GiB)")
    a.legend(fontsize=6)
    fig.suptitle("Batch size: each line holds everything but the batch fixed")
    fig.tight_layout()
    return fig


# -- best strategy -------------------------------------------------------------------------

def _versus_best(best: np.ndarray, other: np.ndarray, alpha: float, min_ratio: float,
                 margin: float) -> tuple[bool, str, float]:
    """Can the best identity's runs be told apart from another's? (tied, why, p): with 3+ runs
    a side, Welch's t-test on log tokens/s at `alpha` and a ratio of medians of at least
    1 + `min_ratio`; with fewer, a ratio above 1 + `margin` (this machine's drift between
    processes)."""
    ratio = float(np.median(best) / np.median(other))
    n = min(len(best), len(other))
    if n >= MIN_RUNS:
        _, p = stats.welch_log(other, best)
        if p >= alpha:
            return True, f"the runs cannot separate them (p={p:.2g})", p
        if ratio < 1 + min_ratio:
            return True, f"less than {min_ratio:.0%} apart", p
        return False, f"slower: x{1 / ratio:.2f} (p={p:.2g})", p
    if ratio <= 1 + margin:
        return True, f"{n} run(s), within the {margin:.0%} drift", math.nan
    return False, f"slower: x{1 / ratio:.2f} ({n} run(s), beyond the {margin:.0%} drift)", math.nan


def _candidate_names(firsts: pd.DataFrame) -> list[str]:
    """Names for the identities of one setting (one first run each): the layout, and where two
    share it the options and then the per-replica batch that tell them apart."""
    names = [str(v) for v in firsts["variant"]]
    for extra in (lambda r, grp: _options_apart(r, grp), lambda r, grp: f" b={_int(r['batch_size'])}"):
        dup = pd.Series(names, index=firsts.index)
        for _, same in firsts.groupby(dup.values):
            if len(same) > 1:
                for i in same.index:
                    names[firsts.index.get_loc(i)] += extra(firsts.loc[i], same)
    return names


def _cell_text(listed: list[dict], firsts: pd.DataFrame) -> str:
    """The layouts a cell names (the best and those tied with it, best first), those that
    compute the same together: 'single (≈ dp: same computation) ~ tp', 'dp ~ mp/naive (same
    computation)' (both listed), where '≈' names the layouts of that computation not listed."""
    parts = []
    for comp in dict.fromkeys(r["computation"] for r in listed):
        names = [r["layout"] for r in listed if r["computation"] == comp]
        others = [o for o, c in zip(firsts["layout"], firsts["computation"]) if c == comp and o not in names]
        text = " ~ ".join(names)
        if others:
            text += f" (≈ {', '.join(others)}: same computation)"
        elif len(names) > 1:
            text += " (same computation)"
        parts.append(text)
    return " ~ ".join(parts)


def best_data(df: pd.DataFrame, min_ratio: float = 0.05, alpha: float = 0.05,
              margin: float = TIE_MARGIN, advice: tuple = ()) -> pd.DataFrame:
    """Per setting (bench.identity.setting: one machine, model, precision, sequence, device
    count and global tokens per step, all other settings equal): every identity measured
    there (a layout with its options) is a candidate of its own, with the median tokens/s of
    its own runs; only the runs of one identity are ever aggregated. Layouts that compute the
    same (bench.identity.computation: single, dp and mp/naive on one device) are still
    measured apart (a wrapper's cost shows), and are named as equivalent in the cell:
    'single (≈ dp, mp/naive: same computation)'. The best identity is tested against every
    other (`_versus_best`: with 3+ runs a side Welch's t-test on log tokens/s at `alpha` and
    at least `min_ratio` apart; with fewer, more than `margin` apart); those it cannot beat
    share the cell ('~', a tie).

    One row per (setting, identity), the best first: `layout`, `rank`, its `tokens_per_s`
    (median of its runs) and `runs`, `ratio` (the best's median over its own), `p` (Welch's,
    where both sides have 3+ runs), `versus_best` ('best', 'tie: ...', 'slower: ...'),
    `same_computation` (the setting's other layouts that compute the same); and, the same on
    every row of a setting, `cell` (the map's row label), `winner` (the cell's text) and
    `verdict` ('winner', 'tie: ...', 'one layout measured').

    `advice`: bench.advise's answers (advice.json), whose verdicts replace the map's own in
    the setting of their winner: the advisor compared its finalists process by process
    (paired), which the map's unpaired test cannot."""
    cols = ["size", "n_params", "devices", "cell", "winner", "verdict", "rank", "layout", "tokens_per_s", "runs",
            "ratio", "p", "versus_best", "same_computation", "setting", "identity"]
    ok = ok_runs(df)
    if ok.empty:
        return pd.DataFrame(columns=_cols(cols))
    rows = []
    for key, g in ok.groupby("setting", sort=False):
        firsts = g.drop_duplicates("identity").reset_index(drop=True)
        firsts["layout"] = _candidate_names(firsts)
        runs = {i: g.loc[g["identity"] == i, "tokens_per_s"].to_numpy(dtype=float) for i in firsts["identity"]}
        firsts["tokens_per_s"] = [float(np.median(runs[i])) for i in firsts["identity"]]
        firsts = firsts.sort_values(["tokens_per_s", "layout"], ascending=[False, True], kind="stable")
        firsts = firsts.reset_index(drop=True)
        best = firsts.iloc[0]
        same = {r["identity"]: [o["layout"] for o in firsts.to_dict("records")
                                if o["computation"] == r["computation"] and o["identity"] != r["identity"]]
                for r in firsts.to_dict("records")}
        cands, tied, why = [], [], []
        for rank, r in enumerate(firsts.to_dict("records"), 1):
            c = {"size": r["size"], "n_params": r["n_params"], "devices": int(r["devices"]), "setting": key,
                 "identity": r["identity"], "layout": r["layout"], "rank": rank, "tokens_per_s": r["tokens_per_s"],
                 "runs": len(runs[r["identity"]]), "ratio": best["tokens_per_s"] / r["tokens_per_s"], "p": math.nan,
                 "versus_best": "best", "same_computation": ", ".join(same[r["identity"]]), **_ctx(r)}
            if rank > 1:
                is_tie, reason, c["p"] = _versus_best(runs[best["identity"]], runs[r["identity"]], alpha, min_ratio,
                                                      margin)
                c["versus_best"] = ("tie: " if is_tie else "") + reason
                if is_tie:
                    tied.append(r)
                    why.append(reason)
            cands.append(c)
        verdict = ("one layout measured" if len(cands) == 1 else
                   "tie: " + "; ".join(dict.fromkeys(why)) if tied else "winner")
        rows += [{**c, "winner": _cell_text([best.to_dict(), *tied], firsts), "verdict": verdict} for c in cands]
    out = pd.DataFrame(rows)
    for a in advice:
        _advisor_verdict(out, ok, a)
    ctx = ok.groupby("setting").head(1).set_index("setting").loc[out["setting"]].reset_index()
    base = pd.Series([f"{r['size']}, global batch {_int(r['global_batch_size'])}" for r in ctx.to_dict("records")],
                     index=ctx.index)
    # a row of the map is a setting less its device count: the same label across devices
    row_key = _line_key(ctx, ("devices", "batch_size", "strategy", "strategy_options"))
    out["cell"] = _labels(ctx, base, line=row_key).values
    return _finish(out.sort_values(["n_params", "cell", "devices", "rank"], kind="stable"), cols).reset_index(drop=True)


def _advisor_verdict(out: pd.DataFrame, ok: pd.DataFrame, a: dict) -> None:
    """In place: the setting holding advice `a`'s winner takes the advisor's verdict."""
    w = a.get("winner")
    if not w or "advise_candidate" not in ok:
        return
    mine = ok[(ok["advise_candidate"] == w["key"]) & (ok["advise_sweep"] == a.get("sweep_dir"))]
    if mine.empty:
        return
    ident = mine["identity"].iloc[0]
    rows = out["setting"] == out.loc[out["identity"] == ident, "setting"].iloc[0]
    n = w.get("processes") or len(w.get("tokens_per_s_runs") or [])
    text = w["label"] + "".join(f" ~ {t}" for t in w.get("tied_with") or []) + f" [advisor, paired over {n} processes]"
    out.loc[rows, "winner"] = text
    out.loc[rows, "verdict"] = ("tie: within noise (advisor)" if w.get("tie") else "winner")


def fig_best(data: pd.DataFrame) -> plt.Figure:
    data = data[data["rank"] == 1]
    rows = list(dict.fromkeys(data["cell"]))[::-1]
    devs = sorted(data["devices"].unique())
    colors = {"winner": "#b7e1b0", "tie": "#f6eba0", "one": "#e3e3e3"}
    fig, ax = plt.subplots(figsize=A4)
    for r in data.itertuples():
        i, j = rows.index(r.cell), devs.index(r.devices)
        kind = "winner" if r.verdict == "winner" else "tie" if r.verdict.startswith("tie") else "one"
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color=colors[kind]))
        text = r.winner.replace(" ~ ", "\n~ ").replace(" (≈ ", "\n(≈ ")
        ax.text(j, i, f"{text}\nbest: {r.tokens_per_s:,.0f} tok/s, {r.runs} run(s)", ha="center", va="center",
                fontsize=6)
    ax.set_xlim(-0.5, len(devs) - 0.5)
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.set_xticks(range(len(devs)), [str(d) for d in devs])
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("devices")
    ax.set_title("Best layout at equal global tokens per step and equal settings; each layout is ranked by the median "
                 "of its own runs\ngreen: a winner beyond noise; yellow: a tie ('~': layouts the runs cannot "
                 "separate); grey: one layout measured;\n'(≈ ...: same computation)': layouts that compute the "
                 "same, measured apart (each one's median and runs in the CSV)", fontsize=9)
    fig.tight_layout()
    return fig


# -- step-time spread ----------------------------------------------------------------------

def _run_numbers(ok: pd.DataFrame) -> pd.Series:
    """Each run's number among the runs of its identity, 1-based ('' for an identity measured
    once): its repeat index where those tell the runs apart, else its order in the set."""
    out = pd.Series("", index=ok.index, dtype=object)
    for _, g in ok.groupby("identity", sort=False):
        if len(g) < 2:
            continue
        rep = g["repeat"] if "repeat" in g else pd.Series(np.nan, index=g.index)
        if rep.notna().all() and rep.nunique() == len(g):
            out[g.index] = [str(int(v) + 1) for v in rep]
        else:
            out[g.index] = [str(i + 1) for i in range(len(g))]
    return out


def spread_data(df: pd.DataFrame, limit: int = 24) -> pd.DataFrame:
    """Per run: its measured step times (within-run spread; runs are never pooled here), their
    coefficient of variation (`cv`), and the run's context; the `limit` noisiest runs. A label
    names the run's layout and, where the runs shown differ in them, its context fields
    (machine, precision, ...), so two runs from two machines never share one."""
    cols = ["label", "size", "variant", "devices", "batch_size", "run", "steps", "step_time_ms_median", "cv",
            "step_times_ms"]
    ok = ok_runs(df)
    if ok.empty or "step_times_s" not in ok:
        return pd.DataFrame(columns=_cols(cols))
    ok = ok[[isinstance(t, (list, tuple, np.ndarray)) and len(t) > 0 for t in ok["step_times_s"]]]
    if ok.empty:
        return pd.DataFrame(columns=_cols(cols))
    ok = ok.assign(run=_run_numbers(ok))
    base = pd.Series([f"{r['size']} {r['variant']} {_int(r['devices'])}d b{_int(r['batch_size'])}"
                      for r in ok.to_dict("records")], index=ok.index)
    labels = _labels(ok, base, line=ok["identity"])
    rows = []
    for i, r in zip(ok.index, ok.to_dict("records")):
        t = np.asarray(r["step_times_s"], dtype=float) * 1e3
        rows.append({"label": labels[i] + (f" run {r['run']}" if r["run"] else ""), "size": r["size"],
                     "variant": r["variant"], "devices": r["devices"], "batch_size": r["batch_size"], "run": r["run"],
                     "steps": len(t), "step_time_ms_median": float(np.median(t)),
                     "cv": float(t.std() / t.mean()) if t.mean() else 0.0, "step_times_ms": t.tolist(), **_ctx(r)})
    out = pd.DataFrame(rows)
    return _finish(out.sort_values("cv", ascending=False, kind="stable").head(limit), cols).reset_index(drop=True)


def fig_spread(data: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=A4)
    ax.boxplot(data["step_times_ms"].tolist(), orientation="horizontal", tick_labels=data["label"].tolist())
    ax.invert_yaxis()  # the first row (the noisiest) on top
    ax.set_xscale("log")
    _thousands(ax, "x")
    ax.set_xlabel("step time (ms), measured steps of one run")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Step-time spread within each run (noisiest first, by coefficient of variation)")
    ax.grid(True, which="both", axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# -- pipeline bubble -----------------------------------------------------------------------

def bubble_data(df: pd.DataFrame) -> pd.DataFrame:
    """For pure pipeline runs (pp > 1, no tp, no data-parallel wrapper): the ideal bubble of
    the schedule, and the measured one, 1 - t1 / (p * t_p), with t1 the median step time of
    the reference strategy on one device with the same work (same machine, model, precision,
    sequence, batch) and t_p the pipeline's (median of its runs): the share of the p
    devices' time not spent on the one device's work."""
    cols = ["size", "variant", "pp", "ideal", "measured", "runs"]
    ok = ok_runs(df)
    pts = per_identity(ok)
    if pts.empty or "degree_pp" not in pts:
        return pd.DataFrame(columns=_cols(cols))
    t1 = _reference(ok, "step_time_s")
    pure = (pts["degree_pp"] > 1) & (pts["degree_dp"] == 1) & (pts["degree_tp"] == 1)
    if "degree_data_parallel" in pts:  # (results before it was recorded: dp == 1 says enough)
        pure &= pts["degree_data_parallel"].isna()
    rows = []
    for r in pts[pure].to_dict("records"):
        one = t1.get((_match(r), "b", _int(r["batch_size"])))  # dp = 1: the same batch per micro-step
        if one is None:
            continue
        p = int(r["degree_pp"])
        rows.append({"size": r["size"], "variant": r["variant"], "pp": p, "ideal": r.get("degree_bubble_ideal"),
                     "measured": 1 - one / (p * r["step_time_s"]), "runs": int(r["runs"]), **_ctx(r)})
    return pd.DataFrame(rows, columns=_cols(cols))


def fig_bubble(data: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=A4)
    labels = [f"{r.size} {r.variant} p={r.pp}" for r in data.itertuples()]
    y = np.arange(len(labels))
    ax.barh(y - 0.2, data["ideal"], height=0.4, label="ideal (schedule)")
    ax.barh(y + 0.2, data["measured"], height=0.4, label="measured")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("bubble fraction (idle share of the pipeline's device time)")
    ax.legend()
    ax.set_title("Pipeline bubble: measured against the schedule's ideal (t1: the reference on 1 device, same work)")
    fig.tight_layout()
    return fig


# -- loss curves ---------------------------------------------------------------------------

LOSS_KEYS = ["size", "shape", "global_batch_size", "seq_len", "seed", "data", "data_path", "precision"]


def loss_data(df: pd.DataFrame) -> pd.DataFrame:
    """Runs that train the same model on the same tokens (so their loss curves must
    coincide), in groups of two or more: one row per (group, run, step)."""
    cols = ["group", "variant", "devices", "hardware_label", "run", "step", "loss"]
    ok = ok_runs(df)
    if ok.empty or "loss" not in ok:
        return pd.DataFrame(columns=_cols(cols))
    rows, n = [], 0
    keys = [k for k in LOSS_KEYS if k in ok]
    for key, g in ok.groupby(keys, dropna=False, sort=False):
        if len(g) < 2 or n == 6:
            continue
        n += 1
        k = dict(zip(keys, key))
        label = (f"{k['size']}: global batch {_int(k['global_batch_size'])} x seq {_int(k['seq_len'])}, "
                 f"seed {k['seed']}, "
                 f"{k['data']}, {k['precision']}")
        for run, r in enumerate(g.to_dict("records")):
            rows += [{**_ctx(r), "group": label, "variant": r["variant"], "devices": r["devices"], "run": run,
                      "step": i, "loss": v} for i, v in enumerate(r["loss"] or [])]
    return pd.DataFrame(rows, columns=_cols(cols))


def fig_loss(data: pd.DataFrame) -> plt.Figure:
    groups = list(dict.fromkeys(data["group"]))
    n = len(groups)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=A4, squeeze=False)
    for ax, label in zip(axes.flat, groups):
        g = data[data["group"] == label]
        colors: dict = {}  # the runs of one layout share its colour and its legend entry
        runs = g.groupby(["variant", "devices", "hardware_label", "run"], sort=False, dropna=False)
        for (var, dev, hw, _), c in runs:
            key = (var, dev, hw)
            line, = ax.plot(c["step"], c["loss"], marker=".", alpha=0.7, color=colors.get(key),
                            label=None if key in colors else f"{var} {dev}d")
            colors.setdefault(key, line.get_color())
        ax.set_title(label, fontsize=7)
        ax.set_xlabel("optimizer step (warm-up included)")
        ax.set_ylabel("training loss (nats/token)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Loss curves of one model on the same tokens under every layout: they must coincide")
    fig.tight_layout()
    return fig


# -- hardware comparison -------------------------------------------------------------------

def hardware_data(df: pd.DataFrame) -> pd.DataFrame:
    """The same configurations (bench.identity.work) on every hardware label: the median
    tokens/s of each label's runs, and the ratio to the first label's."""
    cols = ["point", "hardware_label", "tokens_per_s", "runs", "ratio"]
    pts = per_identity(ok_runs(df))
    if pts.empty or pts["hardware_label"].nunique() < 2:
        return pd.DataFrame(columns=_cols(cols))
    labels = sorted(pts["hardware_label"].unique())
    common = pts.groupby("work")["hardware_label"].nunique()
    pts = pts[pts["work"].isin(common[common == len(labels)].index)]
    base = pts[pts["hardware_label"] == labels[0]].set_index("work")["tokens_per_s"]
    pts = pts.assign(ratio=pts["tokens_per_s"] / pts["work"].map(base),
                     point=[f"{r['size']} {r['variant']} {_int(r['devices'])}d b{_int(r['batch_size'])}"
                            for r in pts.to_dict("records")])
    first = pts[pts["hardware_label"] == labels[0]]  # the configurations' own differences, not the machines'
    names = _labels(first, first["point"], keys=tuple(k for k in CONTEXT if k not in MACHINE))
    pts["point"] = pts["work"].map(dict(zip(first["work"], names)))
    return _finish(pts, cols).sort_values(["point", "hardware_label"]).reset_index(drop=True)


def fig_hardware(data: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=A4)
    points = list(dict.fromkeys(data["point"]))
    labels = sorted(data["hardware_label"].unique())
    w = 0.8 / len(labels)
    for k, lab in enumerate(labels):
        d = data[data["hardware_label"] == lab].set_index("point").reindex(points)
        bars = ax.barh(np.arange(len(points)) + k * w, d["tokens_per_s"], height=w, label=lab)
        for b, ratio in zip(bars, d["ratio"]):
            if k and not np.isnan(ratio):
                ax.annotate(f"x{ratio:.2f}", (b.get_width(), b.get_y() + w / 2), va="center", fontsize=7)
    ax.set_yticks(np.arange(len(points)) + w * (len(labels) - 1) / 2, points, fontsize=7)
    ax.set_xscale("log")
    _thousands(ax, "x")
    ax.set_xlabel(f"throughput (tokens/s, global; median of runs); x = ratio to {labels[0]}")
    ax.legend()
    ax.set_title("Hardware comparison: the same configurations side by side (python -m bench.compare for verdicts)")
    fig.tight_layout()
    return fig


# -- repeats -------------------------------------------------------------------------------

def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def interval_text(values, low: float, high: float, coverage: float) -> str:
    """What an order-statistic interval of a median is, in words: 'min-max of 3 runs: 75%
    interval', '2nd lowest-2nd highest of 9 runs: 96% interval'."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    k = int(np.searchsorted(x, low, side="left")) + 1  # (ties: the lowest rank holding that value)
    which = "min-max" if k == 1 else f"{_ordinal(k)} lowest-{_ordinal(k)} highest"
    return f"{which} of {n} runs: {coverage:.0%} interval"


def _range(v) -> float:
    """max / min - 1: the spread of a sample as a ratio (the same for a throughput and its
    step time, as tokens/s = tokens per step / step time)."""
    v = np.asarray(v, dtype=float)
    return float(v.max() / v.min() - 1) if len(v) and v.min() > 0 else math.nan


def repeats_data(df: pd.DataFrame, level: float = stats.CI_LEVEL) -> pd.DataFrame:
    """Identities measured in two or more runs (the run is the unit): the median of the runs'
    tokens/s with a distribution-free interval of that median (stats.median_ci: order
    statistics of the runs; `ci_coverage` its exact coverage, e.g. min..max of 3 runs holds
    the median 75% of the time, never a claimed 95%), and one statistic of spread on both
    scales, named for what it is: `between_runs_range`, max/min - 1 of the runs' tokens/s,
    and `within_run_range`, max/min - 1 of a run's step times (the median over the runs).
    (A range grows with the number of values: `runs` against `steps_per_run`.)"""
    cols = ["size", "variant", "devices", "batch_size", "hardware_label", "runs", "tokens_per_s_median",
            "ci_low", "ci_high", "ci_coverage", "interval", "between_runs_range", "within_run_range", "steps_per_run"]
    ok = ok_runs(df)
    if ok.empty:
        return pd.DataFrame(columns=_cols(cols))
    rows = []
    for _, g in ok.groupby("identity", sort=False):
        if len(g) < 2:
            continue
        tps = g["tokens_per_s"].to_numpy(dtype=float)
        lo, hi, cov = stats.median_ci(tps, level=level)
        steps = [s for s in g["step_times_s"] if isinstance(s, (list, tuple, np.ndarray)) and len(s)] \
            if "step_times_s" in g else []
        r = g.iloc[0]
        rows.append({"size": r["size"], "variant": r["variant"], "devices": r["devices"], "batch_size": r["batch_size"],
                     "hardware_label": r["hardware_label"], "runs": len(g),
                     "tokens_per_s_median": float(np.median(tps)), "ci_low": lo, "ci_high": hi, "ci_coverage": cov,
                     "interval": interval_text(tps, lo, hi, cov), "between_runs_range": _range(tps),
                     "within_run_range": float(np.median([_range(s) for s in steps])) if steps else np.nan,
                     "steps_per_run": int(np.median([len(s) for s in steps])) if steps else np.nan, **_ctx(r)})
    return pd.DataFrame(rows, columns=_cols(cols))


# -- the advice page (bench.advise) ------------------------------------------------------------

def fig_advice(a: dict):
    """The advice page: every measured candidate's best figure as a bar (finalists with their
    runs' range), coloured by fate; pruned and invalid counted in the title."""
    rows = [f for f in a["candidates"] if f.get("tokens_per_s")]
    rows.sort(key=lambda f: -(f["tokens_per_s"] or 0))
    rows = rows[:40]
    colors = {"finalist": "tab:green", "dropped": "tab:grey", "failed": "tab:red"}
    fig, ax = plt.subplots(figsize=(8.5, 11))
    y = list(range(len(rows)))[::-1]
    for yi, f in zip(y, rows):
        color = colors.get(f["fate"], "tab:blue")
        if a["winner"] and f["key"] == a["winner"]["key"]:
            color = "tab:orange"
        ax.barh(yi, f["tokens_per_s"], color=color)
        runs = [x for x in f.get("runs") or [] if x]
        if runs:
            ax.plot([min(runs), max(runs)], [yi, yi], color="black", lw=2)
        ax.text(f["tokens_per_s"], yi, f" {f.get('rung', 'final') if f['fate'] == 'dropped' else f['fate']}",
                va="center", fontsize=6)
    ax.set_yticks(y, [f["label"] for f in rows], fontsize=6)
    ax.set_xlabel("tokens/s (dropped: at the rung it was dropped, fewer steps; finalists: median, bar = runs' range)")
    c = a["counts"]
    q = a["question"]
    ax.set_title(f"advice for {q['size']} on {q['devices']} device(s), global batch {q['global_batch_size']}: "
                 f"{a['winner']['label'] if a['winner'] else 'none'}\n{c['enumerated']} layouts: "
                 f"{c.get('invalid', 0)} invalid, {c.get('pruned', 0)} pruned (memory), {c.get('failed', 0)} failed; "
                 "orange winner, green finalists, grey dropped by halving", fontsize=8)
    fig.tight_layout()
    return fig


def advice_frame(a: dict):
    """The advice page's data: one row per candidate."""
    return pd.DataFrame([{k: f.get(k) for k in ("key", "label", "fate", "tokens_per_s", "rung", "reason",
                                                   "predicted_need_bytes", "capacity_bytes", "overrides")}
                         for f in a["candidates"]])
