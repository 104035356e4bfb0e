"""`python -m bench.compare A B [C ...]`: the same configurations across result sets.

Configurations are matched by their work (bench.identity.work: the identity without the
machine), so a set from one machine lines up with a set from another, or from another
software version. The unit of replication is a run: on a shared machine throughput drifts
10-30% between processes while the steps of one run agree to 1-2%, so the steps of a run
are never samples of a comparison. For each configuration in the baseline (the first set)
and another set:

  * the ratio of the medians of the runs' tokens/s (other / baseline; above 1 is faster)
    with a 95% bootstrap interval over runs;
  * Welch's t-test on the runs' log tokens/s, its p-values adjusted by Holm's method over
    every configuration compared (the family-wise error stays at --alpha however many
    configurations a sweep has);
  * the verdict: `faster` / `slower` when the adjusted p is below --alpha and the ratio is
    off 1 by at least --min-ratio, else `within noise`; with fewer than 3 runs on a side,
    `no verdict (n runs; use repeats=3)`, which is never a regression.

`--aa RESULTS` is the A/A check of a machine: the runs of each configuration of one set,
split alternately (even and odd repeat) into two sets and compared. With `repeats=10` the
answer should be `within noise` everywhere; alternate runs see the same drift, so this
measures the test, not the machine's trend (two sweeps one after the other do the latter).

Exit code 1 when any configuration is slower (a regression), so CI can gate on it; 2 for
bad input.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np
import pandas as pd

from bench import figures
from bench.identity import MACHINE
from bench.results import load
from bench.stats import holm, ratio_ci, welch_log

MIN_RUNS = figures.MIN_RUNS


def verdict(p_holm: float, ratio: float, alpha: float, min_ratio: float) -> str:
    if p_holm < alpha and ratio >= 1 + min_ratio:
        return "faster"
    if p_holm < alpha and ratio <= 1 - min_ratio:
        return "slower"
    return "within noise"


def verdicts(pairs: list[tuple], alpha: float = 0.05, min_ratio: float = 0.05,
             intervals: bool = True) -> list[dict]:
    """For each (baseline runs' tokens/s, other runs' tokens/s): the ratio of medians with its
    bootstrap interval (`intervals`), Welch's p on the logs (3+ runs a side), the Holm-adjusted
    p over all the pairs tested, and the verdict."""
    out = []
    for ta, tb in pairs:
        ta, tb = np.asarray(ta, dtype=float), np.asarray(tb, dtype=float)
        r, lo, hi = ratio_ci(ta, tb) if intervals else (float(np.median(tb) / np.median(ta)), np.nan, np.nan)
        enough = min(len(ta), len(tb)) >= MIN_RUNS
        out.append({"ratio": r, "ci_low": lo, "ci_high": hi, "p_value": welch_log(ta, tb)[1] if enough else np.nan,
                    "runs": min(len(ta), len(tb))})
    tested = [i for i, o in enumerate(out) if not np.isnan(o["p_value"])]
    for i, p in zip(tested, holm([out[i]["p_value"] for i in tested])):
        out[i]["p_holm"] = p
    for o in out:
        o.setdefault("p_holm", np.nan)
        o["verdict"] = (verdict(o["p_holm"], o["ratio"], alpha, min_ratio) if not np.isnan(o["p_holm"])
                        else f"no verdict ({o['runs']} run(s); use repeats={MIN_RUNS})")
        del o["runs"]
    return out


def compare(sets: list[pd.DataFrame], names: list[str], alpha: float = 0.05, min_ratio: float = 0.05) -> pd.DataFrame:
    """One row per (configuration, other set): runs a side, the ratio to the baseline with its
    interval, the raw and Holm-adjusted p-values and the verdict."""
    oks = [figures.ok_runs(df) for df in sets]
    base = oks[0]
    rows, pairs = [], []
    for name, other in zip(names[1:], oks[1:]):
        for key in [k for k in dict.fromkeys(base["work"]) if k in set(other["work"])]:
            # within a set, the same configuration on two machines is two rows, never one sample
            for (_, a), (_, b) in itertools.product(base[base["work"] == key].groupby("machine", sort=False),
                                                    other[other["work"] == key].groupby("machine", sort=False)):
                ta, tb = a["tokens_per_s"].to_numpy(dtype=float), b["tokens_per_s"].to_numpy(dtype=float)
                pairs.append((ta, tb))
                first = a.iloc[0]
                rows.append({"config": f"{first['size']} {first['variant']} {figures._int(first['devices'])}d "
                                       f"b{figures._int(first['batch_size'])}",
                             "baseline": names[0], "other": name, "baseline_runs": len(ta), "other_runs": len(tb),
                             "baseline_tokens_per_s": float(np.median(ta)), "other_tokens_per_s": float(np.median(tb)),
                             "baseline_machine": first["hardware_label"], "other_machine": b["hardware_label"].iloc[0],
                             **figures._ctx(first)})
    if not rows:
        return pd.DataFrame()
    t = pd.concat([pd.DataFrame(rows), pd.DataFrame(verdicts(pairs, alpha, min_ratio))], axis=1)
    keys = tuple(k for k in figures.CONTEXT if k not in MACHINE)
    t["config"] = figures._labels(t, t["config"], keys=keys)
    if (t["baseline_machine"] != t["other_machine"]).any() or t["baseline_machine"].nunique() > 1:
        t["config"] += " (" + t["baseline_machine"].astype(str) + " -> " + t["other_machine"].astype(str) + ")"
    return t


def format_table(t: pd.DataFrame) -> str:
    cols = ["config", "other", "baseline_runs", "other_runs", "baseline_tokens_per_s", "other_tokens_per_s", "ratio",
            "ci_low", "ci_high", "p_value", "p_holm", "verdict"]
    return t[cols].to_string(index=False, na_rep="-", formatters={
        "baseline_tokens_per_s": "{:,.0f}".format, "other_tokens_per_s": "{:,.0f}".format,
        "ratio": "{:.3f}".format, "ci_low": "{:.3f}".format, "ci_high": "{:.3f}".format,
        "p_value": "{:.3g}".format, "p_holm": "{:.3g}".format})


def fig_compare(t: pd.DataFrame):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=figures.A4)
    labels = [f"{r.config} ({r.other}; runs {r.baseline_runs}/{r.other_runs})" for r in t.itertuples()]
    y = np.arange(len(t))
    colors = [{"faster": "tab:green", "slower": "tab:red", "within noise": "tab:grey"}.get(v, "lightgrey")
              for v in t["verdict"]]
    ax.barh(y, t["ratio"] - 1, left=1, color=colors)
    ax.errorbar(t["ratio"], y, xerr=[t["ratio"] - t["ci_low"], t["ci_high"] - t["ratio"]], fmt="none", color="k")
    ax.axvline(1, color="k", lw=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"throughput ratio to {t['baseline'].iloc[0]} (median of runs; above 1: faster), 95% bootstrap "
                  "interval over runs")
    ax.set_title("Comparison: green faster, red slower, grey within noise (Welch on runs, Holm-adjusted); "
                 f"light grey: fewer than {MIN_RUNS} runs a side, no verdict", fontsize=9)
    fig.tight_layout()
    return fig


def _fail(msg: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(msg, file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="result folders; the first is the baseline")
    ap.add_argument("--aa", action="store_true", help="A/A check: one folder, each configuration's runs split "
                    "alternately (even/odd repeat) into two sets")
    ap.add_argument("--alpha", type=float, default=0.05,
                    help="family-wise error rate: Welch's test on runs, Holm-adjusted over all configurations")
    ap.add_argument("--min-ratio", type=float, default=0.05,
                    help="smallest relative change that counts as faster/slower (0.05 = 5%%)")
    ap.add_argument("--pdf", help="also write a report of all sets with the comparison page added")
    a = ap.parse_args(argv)
    if a.aa and len(a.sets) != 1:
        _fail("error: --aa takes one result folder: the runs of a repeats=N sweep")
    if not a.aa and len(a.sets) < 2:
        _fail("error: give at least two result folders: a baseline and one to compare with it")
    missing = [p for p in a.sets if not os.path.exists(p)]
    if missing:
        _fail(f"error: no such file or folder: {', '.join(missing)}")
    sets = [load([p], on_skip=lambda m: print(f"skipped {m}", file=sys.stderr)) for p in a.sets]
    if a.aa:
        df = sets[0]
        a.sets = [f"{a.sets[0]} (even runs)", f"{a.sets[0]} (odd runs)"]
        sets = [df[df["repeat"] % 2 == 0], df[df["repeat"] % 2 == 1]] if "repeat" in df else [df, df.iloc[0:0]]
    empty = [p for p, df in zip(a.sets, sets) if df.empty or (df["status"] == "ok").sum() == 0]
    if empty:
        _fail(f"error: no ok results under {', '.join(empty)}; run a sweep there first")
    t = compare(sets, a.sets, a.alpha, a.min_ratio)
    if t.empty:
        _fail("error: the result sets have no configuration in common; compare sweeps of the same "
              "sizes, strategies, devices and batch")
    print(format_table(t))
    counts = t["verdict"].value_counts().to_dict()
    print("\n" + ", ".join(f"{n} {v}" for v, n in counts.items())
          + f" (Welch's t-test on runs' log tokens/s, Holm-adjusted over {int(t['p_value'].notna().sum())} "
            f"configuration(s), alpha {a.alpha}, min ratio {a.min_ratio})")
    if a.pdf:
        from bench.report import write_report
        # each set its own `result_set` in the identity: before and after never pool in a page
        both = pd.concat([d.assign(result_set=n) for d, n in zip(sets, a.sets)], ignore_index=True)
        print(f"report: {write_report(both, a.pdf, 'scalebench comparison', extra=[fig_compare(t)])}")
    sys.exit(1 if counts.get("slower") else 0)


if __name__ == "__main__":
    main()
