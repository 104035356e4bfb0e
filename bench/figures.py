"""Report pages as pure functions: `*_data(df)` computes what a page shows from the tidy
result rows (tested on synthetic frames), `fig_*(data)` draws it. No file I/O here.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

A4 = (11.69, 8.27)
GIB = 2**30


def _get(row, k):
    v = row.get(k)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def variant(row) -> str:
    """A strategy with what distinguishes its layouts: 'mp/1f1b', 'hybrid tp=2', 'tp+sp'
    (the registry's label, bench.parallel.label)."""
    from bench.parallel import label
    sched = _get(row, "schedule")
    return label(str(_get(row, "strategy")), sched if isinstance(sched, str) and sched else None,
                 tp=int(_get(row, "degree_tp") or 1), pp=int(_get(row, "degree_pp") or 1),
                 sequence_parallel=_get(row, "degree_sequence_parallel") is True,
                 checkpointing=_get(row, "degree_activation_checkpointing"))


def with_variant(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(variant=[variant(r) for r in df.to_dict("records")]) if not df.empty else df.assign(variant=[])


def ok_runs(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "tokens_per_s" not in df:
        return df.iloc[0:0]
    return with_variant(df[df["status"] == "ok"])


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


# -- scaling with devices ------------------------------------------------------------------

def scaling_data(df: pd.DataFrame) -> pd.DataFrame:
    """Median tokens/s per (size, variant, scaling, batch, devices), and the efficiency
    against the fewest devices of the same series: tps(d) / (tps(d0) * d / d0)."""
    ok = ok_runs(df)
    cols = ["size", "n_params", "variant", "scaling", "batch_size", "devices", "tokens_per_s", "efficiency"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    g = (ok.groupby(["size", "n_params", "variant", "scaling", "batch_size", "devices"], as_index=False)
         ["tokens_per_s"].median().sort_values(["n_params", "variant", "scaling", "batch_size", "devices"]))
    first = g.groupby(["size", "variant", "scaling", "batch_size"])[["devices", "tokens_per_s"]].transform("first")
    g["efficiency"] = g["tokens_per_s"] / (first["tokens_per_s"] * g["devices"] / first["devices"])
    return g[cols]


def fig_scaling(data: pd.DataFrame) -> plt.Figure:
    sizes = _size_order(data)
    fig, axes = plt.subplots(2, len(sizes), figsize=(max(A4[0], 4.2 * len(sizes)), A4[1]), squeeze=False)
    for j, size in enumerate(sizes):
        d = data[data["size"] == size]
        top, bot = axes[0][j], axes[1][j]
        for (var, scaling, batch), g in d.groupby(["variant", "scaling", "batch_size"]):
            label = f"{var} ({scaling}, b={batch})"
            line, = top.plot(g["devices"], g["tokens_per_s"], marker="o", label=label)
            ideal = g["tokens_per_s"].iloc[0] * g["devices"] / g["devices"].iloc[0]
            top.plot(g["devices"], ideal, ls=":", color=line.get_color(), alpha=0.6)
            bot.plot(g["devices"], g["efficiency"], marker="o", color=line.get_color(), label=label)
        top.set_yscale("log")
        for ax in (top, bot):
            _log2_devices(ax, d["devices"])
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel("devices")
        _thousands(top)
        top.set_ylabel("throughput (tokens/s, global)")
        top.set_title(f"size={size}  (dotted: ideal linear)")
        bot.set_ylabel("scaling efficiency (1 = linear)")
        bot.axhline(1.0, color="grey", lw=0.8)
        bot.set_ylim(0, max(1.2, float(d["efficiency"].max() or 1) * 1.1))
        top.legend(fontsize=6)
    fig.suptitle("Scaling with devices (weak: fixed batch per replica; strong: fixed global batch)")
    fig.tight_layout()
    return fig


# -- model size ----------------------------------------------------------------------------

def size_data(df: pd.DataFrame) -> pd.DataFrame:
    ok = ok_runs(df)
    cols = ["variant", "devices", "size", "n_params", "tokens_per_s", "mfu"]
    if ok.empty or ok["size"].nunique() < 2:
        return pd.DataFrame(columns=cols)
    ok = ok.assign(mfu=ok["mfu"].fillna(ok["mfu_measured_peak"]) if "mfu" in ok else ok.get("mfu_measured_peak"))
    return (ok.groupby(["variant", "devices", "size", "n_params"], as_index=False)[["tokens_per_s", "mfu"]]
            .median().sort_values(["variant", "devices", "n_params"]))[cols]


def fig_size(data: pd.DataFrame) -> plt.Figure:
    fig, (a, b) = plt.subplots(1, 2, figsize=A4)
    for (var, dev), g in data.groupby(["variant", "devices"]):
        a.plot(g["n_params"], g["tokens_per_s"], marker="o", label=f"{var}, {dev} dev")
        b.plot(g["n_params"], g["mfu"], marker="o", label=f"{var}, {dev} dev")
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.grid(True, which="both", alpha=0.3)
    a.set_yscale("log")
    _thousands(a)
    a.set_ylabel("throughput (tokens/s, global)")
    b.set_ylabel("MFU (fraction of peak; datasheet peak where known, else measured matmul peak)")
    b.set_ylim(0, None)
    a.legend(fontsize=6)
    fig.suptitle("Model size")
    fig.tight_layout()
    return fig


# -- memory --------------------------------------------------------------------------------

def memory_data(df: pd.DataFrame) -> pd.DataFrame:
    """Per run: measured peak per device, predicted, capacity, and the status."""
    if df.empty:
        return pd.DataFrame(columns=["size", "n_params", "variant", "devices", "status", "measured_gib",
                                     "predicted_gib", "capacity_gib"])
    d = with_variant(df)
    measured = d["mem_peak_bytes"] if "mem_peak_bytes" in d else pd.Series(np.nan, index=d.index)
    out = pd.DataFrame({"size": d["size"], "n_params": d["n_params"], "variant": d["variant"],
                        "devices": d["devices"], "status": d["status"], "measured_gib": measured / GIB,
                        "predicted_gib": d["mem_predicted_bytes"] / GIB, "capacity_gib": d["capacity_bytes"] / GIB})
    out = out[out["status"].isin(["ok", "oom", "predicted_oom"])]
    out = out[out["measured_gib"].notna() | out["predicted_gib"].notna()]
    return out.sort_values(["variant", "devices", "n_params"])


def fig_memory(data: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=A4)
    for (var, dev), g in data.groupby(["variant", "devices"]):
        ok = g[g["status"] == "ok"]
        line, = ax.plot(ok["n_params"], ok["measured_gib"], marker="o", label=f"{var}, {dev} dev: measured")
        ax.plot(g["n_params"], g["predicted_gib"], ls="--", marker=".", color=line.get_color(), alpha=0.7,
                label=f"{var}, {dev} dev: predicted")
        bad = g[g["status"] != "ok"]
        ax.scatter(bad["n_params"], bad["predicted_gib"], marker="x", s=80, color=line.get_color())
    cap = data["capacity_gib"].dropna()
    if not cap.empty:
        ax.axhline(cap.max(), color="red", lw=1)
        ax.annotate(f"capacity {cap.max():.0f} GiB", (0.01, cap.max()), xycoords=("axes fraction", "data"),
                    va="bottom", color="red", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _thousands(ax)
    ax.set_xlabel("parameters")
    ax.set_ylabel("peak memory per device (GiB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("Memory: measured (solid) beside predicted (dashed); x = OOM or predicted OOM, at the prediction")
    fig.tight_layout()
    return fig


# -- batch size ----------------------------------------------------------------------------

def batch_data(df: pd.DataFrame) -> pd.DataFrame:
    ok = ok_runs(df)
    cols = ["size", "variant", "devices", "batch_size", "tokens_per_s", "mem_gib"]
    if ok.empty or ok["batch_size"].nunique() < 2:
        return pd.DataFrame(columns=cols)
    ok = ok.assign(mem_gib=ok["mem_peak_bytes"] / GIB)
    return (ok.groupby(["size", "variant", "devices", "batch_size"], as_index=False)[["tokens_per_s", "mem_gib"]]
            .median())[cols]


def fig_batch(data: pd.DataFrame) -> plt.Figure:
    fig, (a, b) = plt.subplots(1, 2, figsize=A4)
    for (size, var, dev), g in data.groupby(["size", "variant", "devices"]):
        if len(g) < 2:
            continue
        a.plot(g["batch_size"], g["tokens_per_s"], marker="o", label=f"{size} {var} {dev} dev")
        b.plot(g["batch_size"], g["mem_gib"], marker="o", label=f"{size} {var} {dev} dev")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (sequences per replica per micro-step)")
        ax.grid(True, which="both", alpha=0.3)
    a.set_ylabel("throughput (tokens/s, global)")
    b.set_ylabel("peak memory per device (GiB)")
    a.legend(fontsize=6)
    fig.suptitle("Batch size")
    fig.tight_layout()
    return fig


# -- best strategy -------------------------------------------------------------------------

def best_data(df: pd.DataFrame) -> pd.DataFrame:
    """The fastest variant per (size, devices)."""
    ok = ok_runs(df)
    if ok.empty:
        return pd.DataFrame(columns=["size", "n_params", "devices", "variant", "tokens_per_s"])
    med = ok.groupby(["size", "n_params", "devices", "variant"], as_index=False)["tokens_per_s"].median()
    return med.loc[med.groupby(["size", "devices"])["tokens_per_s"].idxmax()].reset_index(drop=True)


def fig_best(data: pd.DataFrame) -> plt.Figure:
    sizes = _size_order(data)[::-1]
    devs = sorted(data["devices"].unique())
    grid = np.full((len(sizes), len(devs)), np.nan)
    fig, ax = plt.subplots(figsize=A4)
    for r in data.itertuples():
        i, j = sizes.index(r.size), devs.index(r.devices)
        row_max = data[data["size"] == r.size]["tokens_per_s"].max()
        grid[i, j] = r.tokens_per_s / row_max
        ax.text(j, i, f"{r.variant}\n{r.tokens_per_s:,.0f} tok/s", ha="center", va="center", fontsize=8)
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto", alpha=0.8)
    ax.set_xticks(range(len(devs)), [str(d) for d in devs])
    ax.set_yticks(range(len(sizes)), sizes)
    ax.set_xlabel("devices")
    ax.set_ylabel("model size")
    fig.colorbar(im, ax=ax, label="tokens/s of the winner, relative to the size's best (fraction)")
    ax.set_title("Best strategy per size and device count")
    fig.tight_layout()
    return fig


# -- step-time spread ----------------------------------------------------------------------

def spread_data(df: pd.DataFrame, limit: int = 24) -> pd.DataFrame:
    ok = ok_runs(df)
    if ok.empty or "step_times_s" not in ok:
        return pd.DataFrame(columns=["label", "step_times_ms", "cv"])
    rows = []
    for r in ok.to_dict("records"):
        t = np.asarray(r["step_times_s"] or [], dtype=float) * 1e3
        if len(t):
            rows.append({"label": f"{r['size']} {r['variant']} {r['devices']}d b{r['batch_size']}",
                         "step_times_ms": t.tolist(), "cv": float(t.std() / t.mean()) if t.mean() else 0.0})
    out = pd.DataFrame(rows)
    return out.sort_values("cv", ascending=False).head(limit) if not out.empty else out


def fig_spread(data: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=A4)
    ax.boxplot(data["step_times_ms"].tolist(), orientation="horizontal", tick_labels=data["label"].tolist())
    ax.invert_yaxis()  # the first row (the noisiest) on top
    ax.set_xscale("log")
    ax.set_xlabel("step time (ms), measured steps")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Step-time spread (noisiest first; coefficient of variation ordering)")
    ax.grid(True, which="both", axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# -- pipeline bubble -----------------------------------------------------------------------

def bubble_data(df: pd.DataFrame) -> pd.DataFrame:
    """For pure pipeline runs (pp > 1, no tp, no data-parallel wrapper): the ideal bubble of the schedule, and
    the measured one, 1 - t1 / (p * t_p), with t1 the one-device step time of the same
    configuration and t_p the pipeline's: the share of the p devices' time not spent on the
    one device's work."""
    ok = ok_runs(df)
    cols = ["size", "variant", "pp", "ideal", "measured"]
    if ok.empty or "degree_pp" not in ok:
        return pd.DataFrame(columns=cols)
    one = ok[(ok["devices"] == 1)].groupby(["size", "batch_size", "seq_len", "precision"])["step_time_s"].median()
    rows = []
    pure = (ok["degree_pp"] > 1) & (ok["degree_dp"] == 1) & (ok["degree_tp"] == 1)
    if "degree_data_parallel" in ok:  # (results before it was recorded: dp == 1 says enough)
        pure &= ok["degree_data_parallel"].isna()
    for r in ok[pure].to_dict("records"):
        t1 = one.get((r["size"], r["batch_size"], r["seq_len"], r["precision"]))
        if t1 is None:
            continue
        p = int(r["degree_pp"])
        rows.append({"size": r["size"], "variant": r["variant"], "pp": p, "ideal": r.get("degree_bubble_ideal"),
                     "measured": 1 - t1 / (p * r["step_time_s"])})
    return pd.DataFrame(rows, columns=cols)


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
    ax.set_title("Pipeline bubble: measured against the schedule's ideal")
    fig.tight_layout()
    return fig


# -- loss curves ---------------------------------------------------------------------------

LOSS_KEYS = ["size", "global_batch_size", "seq_len", "seed", "data", "precision"]


def loss_data(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Groups of runs that train the same model on the same tokens (so their loss curves
    must coincide), with more than one strategy or device count in them."""
    ok = ok_runs(df)
    if ok.empty or "loss" not in ok:
        return []
    groups = []
    for key, g in ok.groupby(LOSS_KEYS, dropna=False):
        if len(g) > 1:
            size, gbs, seq, seed, data, prec = key
            label = f"{size}: global batch {gbs} x seq {seq}, seed {seed}, {data}, {prec}"
            groups.append((label, g[["variant", "devices", "loss"]].reset_index(drop=True)))
    return groups[:6]


def fig_loss(groups: list[tuple[str, pd.DataFrame]]) -> plt.Figure:
    n = len(groups)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=A4, squeeze=False)
    for ax, (label, g) in zip(axes.flat, groups):
        for r in g.itertuples():
            ax.plot(range(len(r.loss)), r.loss, marker=".", alpha=0.7, label=f"{r.variant} {r.devices}d")
        ax.set_title(label, fontsize=7)
        ax.set_xlabel("optimizer step (warm-up included)")
        ax.set_ylabel("training loss (nats/token)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Loss curves of the same configuration under every strategy: they must coincide")
    fig.tight_layout()
    return fig


# -- hardware comparison -------------------------------------------------------------------

def hardware_data(df: pd.DataFrame) -> pd.DataFrame:
    """The same configurations on every hardware label, with the ratio to the first label."""
    ok = ok_runs(df)
    if ok.empty or ok["hardware_label"].nunique() < 2:
        return pd.DataFrame(columns=["point", "hardware_label", "tokens_per_s", "ratio"])
    med = ok.groupby(["point_key", "hardware_label"], as_index=False).agg(
        tokens_per_s=("tokens_per_s", "median"), size=("size", "first"), variant=("variant", "first"),
        devices=("devices", "first"))
    labels = sorted(med["hardware_label"].unique())
    common = med.groupby("point_key")["hardware_label"].nunique()
    med = med[med["point_key"].isin(common[common == len(labels)].index)]
    base = med[med["hardware_label"] == labels[0]].set_index("point_key")["tokens_per_s"]
    med = med.assign(ratio=med["tokens_per_s"] / med["point_key"].map(base),
                     point=med["size"] + " " + med["variant"] + " " + med["devices"].astype(str) + "d")
    return med[["point", "hardware_label", "tokens_per_s", "ratio"]].sort_values(["point", "hardware_label"])


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
    ax.set_xlabel(f"throughput (tokens/s, global); x = ratio to {labels[0]}")
    ax.legend()
    ax.set_title("Hardware comparison: the same configurations side by side")
    fig.tight_layout()
    return fig
