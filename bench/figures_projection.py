"""Pictures of the interconnect probe and the projection: bandwidth per message size, the
projection drawn dashed beside the measurements, held-out predictions against measurements.
Each picture's data is a table (`bandwidth_data`, projection.csv, validation.csv)."""
from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def bandwidth_data(probes: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per probe, scope, collective and size: the probe's table with its machine."""
    rows = []
    for p in probes:
        for r in p["metrics"]["probe"]["rows"]:
            rows.append({"hardware_label": p.get("hardware_label"), "backend": p["metrics"]["probe"].get("backend"),
                         "probe": p.get("path"), **r})
    return pd.DataFrame(rows)


def fig_bandwidth(probe: dict[str, Any]) -> plt.Figure:
    """busbw (GB/s) against message size for each collective, with the alpha-beta fits' text."""
    pr = probe["metrics"]["probe"]
    fig, ax = plt.subplots(figsize=(8.5, 6))
    rows = pd.DataFrame(pr["rows"])
    for (scope, op), g in rows.groupby(["scope", "op"]):
        ax.plot(g["size_bytes"], g["busbw_bytes_per_s"] / 1e9, marker="o", ms=3, label=f"{op} ({scope}, {g['ranks'].iloc[0]} ranks)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size S (bytes; nccl-tests' definition per collective)")
    ax.set_ylabel("bus bandwidth, GB/s (nccl-tests busbw)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fits = "\n".join(f"{k}: no fit ({f['error']})" if "error" in f else
                     f"{k}: alpha {f['alpha_s'] * 1e6:.0f} us, beta {f['beta_bytes_per_s'] / 1e9:.2f} GB/s, "
                     f"fit error rms {f['rel_rms']:.0%} (max {f['rel_max']:.0%})" for k, f in pr["fits"].items())
    ax.set_title(f"Interconnect: {probe.get('hardware_label')}, {pr.get('backend')}, "
                 f"{probe['metrics'].get('interconnect') or ''}\n(bench.probe, {probe.get('started_at', '')})", fontsize=10)
    fig.text(0.01, 0.01, fits, fontsize=7, family="monospace", va="bottom")
    fig.subplots_adjust(bottom=0.1 + 0.025 * len(pr["fits"]))
    return fig


def fig_projection(proj: pd.DataFrame, meta: dict[str, Any]) -> plt.Figure:
    """Tokens/s against devices per series: measured (markers) and projected (dashed, 95% band)."""
    import textwrap
    fig, ax = plt.subplots(figsize=(11, 6.5))
    ok = proj[proj["tokens_per_s"].notna()] if "tokens_per_s" in proj else proj.iloc[0:0]
    series = [k for k, g in ok.groupby("series", sort=False) if g["devices"].nunique() > 1]
    cmap = plt.get_cmap("tab20")
    for i, ser in enumerate(series):
        g = ok[ok["series"] == ser].sort_values("devices")
        color = cmap(i % 20)
        ax.plot(g["devices"], g["tokens_per_s"], ls="--", color=color, lw=1.2, label=ser)
        if g["lo"].notna().any():
            ax.fill_between(g["devices"], g["lo"], g["hi"], color=color, alpha=0.10)
        m = g[g["measured"].notna()]
        ax.plot(m["devices"], m["measured"], ls="none", marker="o", ms=5, color=color)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("devices")
    ax.set_ylabel("tokens/s (all devices)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="series (dots: measured)",
              title_fontsize=7)
    title = (f"Projection (dashed; 95% interval shaded) beside the measured medians (dots). Fitted: overlap "
             f"{meta['overlap']:.2f}, slowest-rank {meta['slowest_rank']:.2f}, wait per blocking collective "
             f"{meta.get('sync_ms', 0):.2f} ms. Links: {meta['links']}")
    ax.set_title("\n".join(textwrap.wrap(title, 110)), fontsize=8)
    fig.subplots_adjust(right=0.74)
    return fig


def fig_validation(val: pd.DataFrame) -> plt.Figure:
    """Held-out points: the prediction's error against the measured median, its 95% interval
    (relative to the measured median) and every held-out run, with the +-10% and +-15% marks."""
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.42 * len(val) + 1.5))
    v = val.reset_index(drop=True)
    y = list(range(len(v)))
    err = v["error"] * 100
    lo, hi = (v["lo"] / v["measured"] - 1) * 100, (v["hi"] / v["measured"] - 1) * 100
    ax.axvspan(-15, 15, color="0.93")
    ax.axvspan(-10, 10, color="0.86")
    ax.axvline(0, color="k", lw=0.8)
    ax.errorbar(err, y, xerr=[(err - lo).clip(lower=0), (hi - err).clip(lower=0)], fmt="o", capsize=3,
                label="prediction, 95% interval")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{s} @{d}" for s, d in zip(v["series"], v["devices"])], fontsize=8)
    ax.set_xlabel("(predicted - measured) / measured, % (measured: the median held-out run); bands: 10%, 15%")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    errs = v["error"].abs()
    inside = v["runs_inside"].sum() / max(v["runs"].sum(), 1)
    ax.set_title(f"Held-out accuracy (leave one series out): median |error| {errs.median():.1%}, "
                 f"max {errs.max():.1%};\n{inside:.0%} of {int(v['runs'].sum())} held-out runs inside their "
                 f"95% interval", fontsize=10)
    fig.tight_layout()
    return fig


def write_pdf(path: str, proj: pd.DataFrame, val: pd.DataFrame | None, probes: list[dict[str, Any]],
              meta: dict[str, Any]) -> str:
    from matplotlib.backends.backend_pdf import PdfPages
    with PdfPages(path) as pdf:
        for fig in ([fig_validation(val)] if val is not None and len(val) else []) + \
                [fig_projection(proj, meta)] + [fig_bandwidth(p) for p in probes[-1:]]:
            pdf.savefig(fig)
            plt.close(fig)
    return path

