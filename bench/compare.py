"""`python -m bench.compare A B [C ...]`: the same configurations across result sets.

Configurations are matched by their benchmark config (`point_key`: the config hash without
the seed, and without anything about the machine), so a set from one machine lines up with
a set from another, or from another software version. For each configuration present in
the baseline (the first set) and another set: the throughput ratio (other / baseline, from
the medians of their measured step times; above 1 is faster), a 95% bootstrap interval of
that ratio, and a Mann-Whitney U test on the two step-time samples. Verdict per row:
`faster` / `slower` when the test rejects "same distribution" at --alpha AND the ratio is
off 1 by at least --min-ratio, else `within noise`. Exit code 1 when any row is slower
(a regression), so CI can gate on it; 2 for bad input.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from bench import figures
from bench.results import load
from bench.stats import mann_whitney_u, pooled_steps, ratio_ci


def verdict(p: float, ratio: float, alpha: float, min_ratio: float) -> str:
    if p < alpha and ratio >= 1 + min_ratio:
        return "faster"
    if p < alpha and ratio <= 1 - min_ratio:
        return "slower"
    return "within noise"


def compare(sets: list[pd.DataFrame], names: list[str], alpha: float = 0.05, min_ratio: float = 0.05) -> pd.DataFrame:
    """One row per (configuration, other set): the ratio to the baseline and the verdict."""
    oks = [figures.ok_runs(df) for df in sets]
    base = oks[0]
    rows = []
    for name, other in zip(names[1:], oks[1:]):
        for key in sorted(set(base["point_key"]) & set(other["point_key"])):
            a, b = base[base["point_key"] == key], other[other["point_key"] == key]
            ta, tb = pooled_steps(a["step_times_s"]), pooled_steps(b["step_times_s"])
            r, lo, hi = ratio_ci(ta, tb)
            _, p = mann_whitney_u(ta, tb)
            first = a.iloc[0]
            rows.append({"config": f"{first['size']} {first['variant']} {first['devices']}d b{first['batch_size']}",
                         "baseline": names[0], "other": name,
                         "baseline_tokens_per_s": float(a["tokens_per_s"].median()),
                         "other_tokens_per_s": float(b["tokens_per_s"].median()),
                         "ratio": r, "ci_low": lo, "ci_high": hi, "p_value": p,
                         "verdict": verdict(p, r, alpha, min_ratio)})
    return pd.DataFrame(rows)


def format_table(t: pd.DataFrame) -> str:
    return t.to_string(index=False, formatters={
        "baseline_tokens_per_s": "{:,.0f}".format, "other_tokens_per_s": "{:,.0f}".format,
        "ratio": "{:.3f}".format, "ci_low": "{:.3f}".format, "ci_high": "{:.3f}".format,
        "p_value": "{:.3g}".format})


def fig_compare(t: pd.DataFrame):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=figures.A4)
    labels = [f"{r.config} ({r.other})" for r in t.itertuples()]
    y = np.arange(len(t))
    colors = t["verdict"].map({"faster": "tab:green", "slower": "tab:red", "within noise": "tab:grey"})
    ax.barh(y, t["ratio"] - 1, left=1, color=colors)
    ax.errorbar(t["ratio"], y, xerr=[t["ratio"] - t["ci_low"], t["ci_high"] - t["ratio"]], fmt="none", color="k")
    ax.axvline(1, color="k", lw=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"throughput ratio to {t['baseline'].iloc[0]} (above 1: faster), 95% bootstrap interval")
    ax.set_title("Comparison: green faster, red slower, grey within noise")
    fig.tight_layout()
    return fig


def _fail(msg: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(msg, file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="result folders; the first is the baseline")
    ap.add_argument("--alpha", type=float, default=0.05, help="significance level of the Mann-Whitney U test")
    ap.add_argument("--min-ratio", type=float, default=0.05,
                    help="smallest relative change that counts as faster/slower (0.05 = 5%%)")
    ap.add_argument("--pdf", help="also write a report of all sets with the comparison pages added")
    a = ap.parse_args(argv)
    if len(a.sets) < 2:
        _fail("error: give at least two result folders: a baseline and one to compare with it")
    missing = [p for p in a.sets if not os.path.exists(p)]
    if missing:
        _fail(f"error: no such file or folder: {', '.join(missing)}")
    sets = [load([p], on_skip=lambda m: print(f"skipped {m}", file=sys.stderr)) for p in a.sets]
    empty = [p for p, df in zip(a.sets, sets) if df.empty or (df["status"] == "ok").sum() == 0]
    if empty:
        _fail(f"error: no ok results under {', '.join(empty)}; run a sweep there first")
    t = compare(sets, a.sets, a.alpha, a.min_ratio)
    if t.empty:
        _fail("error: the result sets have no configuration in common; compare sweeps of the same "
                 "sizes, strategies, devices and batch")
    print(format_table(t))
    counts = t["verdict"].value_counts().to_dict()
    print("\n" + ", ".join(f"{n} {v}" for v, n in counts.items()))
    if a.pdf:
        from bench.report import write_report
        both = pd.concat(sets, ignore_index=True)
        print(f"report: {write_report(both, a.pdf, 'scalebench comparison', extra=[fig_compare(t)])}")
    sys.exit(1 if counts.get("slower") else 0)


if __name__ == "__main__":
    main()
