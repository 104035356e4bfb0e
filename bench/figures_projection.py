"""Pictures of the interconnect probe and the projection: bandwidth per message size, the
projection drawn dashed beside the measurements, held-out predictions against measurements.
Each picture's data is a table (`bandwidth_data`, projection.csv, validation.csv)."""
from __future__ import annotations

import math
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
    fits = "\n".join(f"{k}: alpha {f['alpha_s'] * 1e6:.0f} us, beta {f['beta_bytes_per_s'] / 1e9:.2f} GB/s, "
                     f"fit error rms {f['rel_rms']:.0%} (max {f['rel_max']:.0%})" for k, f in pr["fits"].items())
    ax.set_title(f"Interconnect: {probe.get('hardware_label')}, {pr.get('backend')}, "
                 f"{probe['metrics'].get('interconnect') or ''}\n(bench.probe, {probe.get('started_at', '')})", fontsize=10)
    fig.text(0.01, 0.01, fits, fontsize=7, family="monospace", va="bottom")
    fig.subplots_adjust(bottom=0.1 + 0.025 * len(pr["fits"]))
    return fig


def fig_projection(proj: pd.DataFrame, meta: dict[str, Any]) -> plt.Figure:
    """Tokens/s against devices per series: measured (markers) and projected (dashed, 95% band)."""
    fig, ax = plt.subplots(figsize=(8.5, 6))
    ok = proj[proj["tokens_per_s"].notna()] if "tokens_per_s" in proj else proj.iloc[0:0]
    for i, (ser, g) in enumerate(ok.groupby("series", sort=False)):
        g = g.sort_values("devices")
        color = f"C{i % 10}"
        ax.plot(g["devices"], g["tokens_per_s"], ls="--", color=color, label=f"{ser} (projected)")
        if g["lo"].notna().any():
            ax.fill_between(g["devices"], g["lo"], g["hi"], color=color, alpha=0.12)
        m = g[g["measured"].notna()]
        ax.plot(m["devices"], m["measured"], ls="none", marker="o", color=color, label=f"{ser} (measured)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("devices")
    ax.set_ylabel("tokens/s (all devices)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"Projection (dashed, 95% interval shaded) beside measurements (dots)\n"
                 f"fitted overlap {meta['overlap']:.2f}, slowest-rank {meta['slowest_rank']:.3f}; links: "
                 f"{str(meta['links'])[:80]}", fontsize=9)
    return fig


def fig_validation(val: pd.DataFrame) -> plt.Figure:
    """Held-out points: predicted (with the 95% interval) against measured, and each error."""
    fig, ax = plt.subplots(figsize=(8.5, 6))
    v = val.reset_index(drop=True)
    y = range(len(v))
    ax.errorbar(v["predicted"], list(y), xerr=[v["predicted"] - v["lo"], v["hi"] - v["predicted"]], fmt="o",
                capsize=3, label="predicted (95% interval)")
    ax.plot(v["measured"], list(y), "kx", ms=8, label="measured (median run)")
    ax.set_yticks(list(y))
    ax.set_yticklabels([f"{s} @{d}  {e:+.1%}" for s, d, e in zip(v["series"], v["devices"], v["error"])], fontsize=8)
    ax.set_xlabel("tokens/s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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


def finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))
