"""`python -m bench.compare A B [C ...]`: the same configurations across result sets.

Configurations are matched by their work (bench.identity.work: the identity without the
machine), so a set from one machine lines up with a set from another, or from another
software version. The unit of replication is a run: on a shared machine throughput drifts
10-30% between processes while the steps of one run agree to 1-2%, so the steps of a run
are never samples of a comparison. For each configuration in the baseline (the first set)
and another set:

  * the ratio of the medians of the runs' tokens/s (other / baseline; above 1 is faster)
    and, with 3 or more runs a side, its 95% percentile bootstrap interval over runs
    (bench.stats.ratio_ci; with fewer runs no interval is shown: `-`, blank in the CSV);
  * Welch's t-test on the runs' log tokens/s, its p-values adjusted by Holm's method over
    every configuration compared (the family-wise error stays at --alpha however many
    configurations a sweep has);
  * the verdict: `faster` / `slower` when the adjusted p is below --alpha and the ratio is
    off 1 by at least --min-ratio, else `within noise`; with fewer than 3 runs on a side,
    `no verdict (n run(s); use repeats=3)` (`repeats=6` under --aa), never a regression.

Holm's promise (a sweep flags anything at most --alpha of the time when nothing changed)
holds when the runs of the two sides were interleaved in time: on a machine that drifts
10-30% between processes, two sweeps run one after the other differ by the drift, and the
test reads that as a difference. When anything is flagged, a line under the table says so,
and, from the runs' start and finish times, whether the two sides were interleaved.

`--aa RESULTS` is the A/A check of a machine: the runs of each configuration of one set,
split alternately (even and odd repeat) into two sets and compared. With `repeats=10` the
answer should be `within noise` everywhere; alternate runs see the same drift, so this
measures the test, not the machine's trend (two sweeps one after the other do the latter).

`--csv PATH` writes the table (one row per configuration and machine pair); `--pdf OUT.pdf`
writes the report of all sets with the comparison page added, and the table beside it as
`OUT.compare.csv`.

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

from bench import figures, identity
from bench.identity import MACHINE, SCALE, WORK
from bench.results import load
from bench.stats import CI_LEVEL, holm, ratio_ci, welch_log

MIN_RUNS = figures.MIN_RUNS
# where to read why interleaving matters, for the drift line under the table
ALTERNATE = "README, 'On a shared machine, alternate'"
# the share of (baseline run, other run) pairs in which the baseline's ran first that still
# counts as interleaved: runs alternated one by one give (n+1)/2n (2/3 at 3 a side, 3/4 at 2)
INTERLEAVED = (0.25, 0.75)
CLOCK_SLACK_S = 1.0  # result times are whole seconds: a start derived from them may be 1 s early


def repeats_needed(aa: bool) -> int:
    """The `repeats=` that gives MIN_RUNS runs a side: MIN_RUNS when the two sides are two
    sweeps; under --aa, where one sweep's repeats=N is split into even and odd runs and the
    smaller side gets floor(N/2), twice as many."""
    return 2 * MIN_RUNS if aa else MIN_RUNS


def verdict(p_holm: float, ratio: float, alpha: float, min_ratio: float) -> str:
    if p_holm < alpha and ratio >= 1 + min_ratio:
        return "faster"
    if p_holm < alpha and ratio <= 1 - min_ratio:
        return "slower"
    return "within noise"


def verdicts(pairs: list[tuple], alpha: float = 0.05, min_ratio: float = 0.05,
             intervals: bool = True, repeats: int = MIN_RUNS) -> list[dict]:
    """For each (baseline runs' tokens/s, other runs' tokens/s): the ratio of medians, and
    with MIN_RUNS or more runs a side its bootstrap interval over runs (`intervals`; NaN
    otherwise: a confident-looking interval from 2 runs against 1 is no finding), Welch's p
    on the logs, the Holm-adjusted p over all the pairs tested, and the verdict. With fewer
    runs a side the verdict says so and what to run: `repeats` (see `repeats_needed`)."""
    out = []
    for ta, tb in pairs:
        ta, tb = np.asarray(ta, dtype=float), np.asarray(tb, dtype=float)
        enough = min(len(ta), len(tb)) >= MIN_RUNS
        r, lo, hi = (ratio_ci(ta, tb) if intervals and enough
                     else (float(np.median(tb) / np.median(ta)), np.nan, np.nan))
        out.append({"ratio": r, "ci_low": lo, "ci_high": hi, "p_value": welch_log(ta, tb)[1] if enough else np.nan,
                    "runs": min(len(ta), len(tb))})
    tested = [i for i, o in enumerate(out) if not np.isnan(o["p_value"])]
    for i, p in zip(tested, holm([out[i]["p_value"] for i in tested])):
        out[i]["p_holm"] = p
    for o in out:
        o.setdefault("p_holm", np.nan)
        o["verdict"] = (verdict(o["p_holm"], o["ratio"], alpha, min_ratio) if not np.isnan(o["p_holm"])
                        else f"no verdict ({o['runs']} run(s); use repeats={repeats})")
        del o["runs"]
    return out


# -- when the runs were measured -----------------------------------------------------------

def run_times(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each run's (start, finish) as UTC timestamps (NaT where unknown): `started_at` where the
    rows carry it, else `finished_at` less `duration_s` (bench.run times a run from its start
    to the write of its result, so the two agree to the second)."""
    def ts(col):
        return (pd.to_datetime(df[col], utc=True, errors="coerce") if col in df
                else pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]"))
    end = ts("finished_at")
    start = ts("started_at")
    if "duration_s" in df:
        derived = end - pd.to_timedelta(pd.to_numeric(df["duration_s"], errors="coerce"), unit="s")
        start = start.fillna(derived) if start.notna().any() else derived
    return start, end


def first_share(a_start, b_start) -> float:
    """The share of (baseline run, other run) pairs in which the baseline's started first, ties
    counting half: the Mann-Whitney U of the start times over n_a * n_b (Mann & Whitney, Ann.
    Math. Stat. 18, 1947). 1 or 0 when one side ran entirely before the other, near 1/2 when
    the runs alternate ((n+1)/2n for n alternated a side)."""
    a, b = np.asarray(a_start, dtype="datetime64[ns]"), np.asarray(b_start, dtype="datetime64[ns]")
    if not len(a) or not len(b):
        return np.nan
    d = (b[None, :] - a[:, None]).astype("int64")
    return float(((d > 0) + 0.5 * (d == 0)).mean())


def timing(a_start, a_end, b_start, b_end) -> tuple[str, float]:
    """How the two sides' runs lay in time: ('one after the other' | 'interleaved' |
    'overlapping' | 'unknown', first_share). One after the other: every run of one side
    finished before any of the other started (within CLOCK_SLACK_S); interleaved: the spans
    overlap and the baseline ran first in between INTERLEAVED (a quarter and three quarters)
    of the pairs of runs; overlapping: the spans overlap, but mostly one side ran first."""
    a_start, a_end, b_start, b_end = (pd.to_datetime(pd.Series(x), utc=True).dropna()
                                      for x in (a_start, a_end, b_start, b_end))
    if a_start.empty or b_start.empty or a_end.empty or b_end.empty:
        return "unknown", np.nan
    share = first_share(a_start.dt.tz_localize(None), b_start.dt.tz_localize(None))
    slack = pd.Timedelta(seconds=CLOCK_SLACK_S)
    if a_end.max() <= b_start.min() + slack or b_end.max() <= a_start.min() + slack:
        return "one after the other", share
    return ("interleaved" if INTERLEAVED[0] <= share <= INTERLEAVED[1] else "overlapping"), share


def _span(start: pd.Series, end: pd.Series, fmt: str) -> str:
    return f"{start.min().strftime(fmt)}-{end.max().strftime(fmt)}"


def drift_note(t: pd.DataFrame) -> str:
    """One line for under the table when anything is flagged (faster or slower), else '':
    verdicts assume the two sides' runs were interleaved in time, and whether they were, from
    the flagged rows' run times (`timing`), per set compared with the baseline."""
    flagged = t[t["verdict"].isin(["faster", "slower"])] if not t.empty else t
    if flagged.empty:
        return ""
    cols = ["baseline_started", "baseline_finished", "other_started", "other_finished"]
    clauses, alternate = [], False
    for other, g in flagged.groupby("other", sort=False):
        kinds = set(g["timing"])
        known = g.dropna(subset=cols)
        if "unknown" in kinds or known.empty:
            clauses.append("the results carry no run times to check: a drift between sweeps run one after the "
                           "other reads as a difference")
            alternate = True
            continue
        stamps = pd.concat([known[c] for c in cols])
        fmt = "%H:%M" if stamps.dt.date.nunique() == 1 else "%Y-%m-%d %H:%M"
        spans = (f"{g['baseline'].iloc[0]} {_span(known['baseline_started'], known['baseline_finished'], fmt)}, "
                 f"{other} {_span(known['other_started'], known['other_finished'], fmt)} UTC")
        if "one after the other" in kinds:
            clauses.append(f"the two sets were measured one after the other ({spans}): a drift between them reads "
                           "as a difference")
        elif "overlapping" in kinds:
            share = float(np.mean(g["baseline_first_share"]))
            clauses.append(f"the two sets overlap in time but mostly one ran first ({spans}; the baseline's run "
                           f"first in {share:.0%} of pairs of runs): a drift between them reads as a difference")
        else:
            clauses.append(f"they were here ({spans}): a drift over that time fell on both sides")
            continue
        alternate = True
    return (f"note: {len(flagged)} flagged; verdicts assume the runs of the two sides were interleaved in time; "
            + "; ".join(clauses) + (f"; alternate the runs ({ALTERNATE})" if alternate else ""))


# -- when nothing matches ------------------------------------------------------------------

def _values(df: pd.DataFrame, key: str) -> list[str]:
    """The distinct values of one identity field in a set of runs, as text, sorted."""
    return sorted({str(identity.fields(r, [key])[key]) for r in df.to_dict("records")})


def differing_settings(a: pd.DataFrame, b: pd.DataFrame, keys=WORK + SCALE) -> list[tuple[str, list, list]]:
    """The settings (identity fields, bench/identity.py) whose values differ between two sets
    of runs: (field, a's values, b's values). Where some fields share no value at all, only
    those (any one of them keeps every configuration apart); else every field whose values
    differ. Empty: each value occurs in both sets, only never in the same combination."""
    diff = [(k, _values(a, k), _values(b, k)) for k in keys]
    diff = [d for d in diff if d[1] != d[2]]
    disjoint = [d for d in diff if not set(d[1]) & set(d[2])]
    return disjoint or diff


def no_common_message(names: list[str], sets: list[pd.DataFrame]) -> str:
    """The error when no set shares a configuration with the baseline: what differs, named."""
    def vals(v):
        return ", ".join(v[:4]) + (", ..." if len(v) > 4 else "")
    clauses = []
    for name, other in zip(names[1:], sets[1:]):
        diff = differing_settings(sets[0], other)
        if diff:
            clauses.append("the sets differ in " + ", ".join(f"{k} ({names[0]}: {vals(x)}; {name}: {vals(y)})"
                                                            for k, x, y in diff))
        else:
            clauses.append(f"{names[0]} and {name} hold the same values of every setting, but never in the same "
                           "combination")
    return ("error: the result sets have no configuration in common: " + "; ".join(clauses)
            + "; compare sweeps of the same points")


# -- the table -----------------------------------------------------------------------------

def compare(sets: list[pd.DataFrame], names: list[str], alpha: float = 0.05, min_ratio: float = 0.05,
            repeats: int = MIN_RUNS) -> pd.DataFrame:
    """One row per (configuration, machine pair, other set): the identity fields, runs a side,
    the medians, the ratio to the baseline with its interval (3+ runs a side), the raw and
    Holm-adjusted p-values and the verdict; when each side's runs started and finished and
    how they lay in time (`timing`)."""
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
                (a0, a1), (b0, b1) = run_times(a), run_times(b)
                order, share = timing(a0, a1, b0, b1)
                rows.append({"config": f"{first['size']} {first['variant']} {figures._int(first['devices'])}d "
                                       f"b{figures._int(first['batch_size'])}",
                             "baseline": names[0], "other": name, "baseline_runs": len(ta), "other_runs": len(tb),
                             "baseline_tokens_per_s": float(np.median(ta)), "other_tokens_per_s": float(np.median(tb)),
                             "baseline_machine": first["hardware_label"], "other_machine": b["hardware_label"].iloc[0],
                             "other_software_torch": figures._get(b.iloc[0], "software_torch"),
                             "baseline_started": a0.min(), "baseline_finished": a1.max(),
                             "other_started": b0.min(), "other_finished": b1.max(),
                             "baseline_first_share": share, "timing": order,
                             "variant": first["variant"], **figures._ctx(first),
                             **identity.fields(first, WORK + SCALE)})
    if not rows:
        return pd.DataFrame()
    t = pd.concat([pd.DataFrame(rows), pd.DataFrame(verdicts(pairs, alpha, min_ratio, repeats=repeats))], axis=1)
    keys = tuple(k for k in figures.CONTEXT if k not in MACHINE)
    t["config"] = figures._labels(t, t["config"], keys=keys)
    if (t["baseline_machine"] != t["other_machine"]).any() or t["baseline_machine"].nunique() > 1:
        t["config"] += " (" + t["baseline_machine"].astype(str) + " -> " + t["other_machine"].astype(str) + ")"
    return t


def interval_text(lo: float, hi: float) -> str:
    """'[0.779, 0.938]', or '-' where no interval is shown (fewer than MIN_RUNS runs a side)."""
    return "-" if np.isnan(lo) or np.isnan(hi) else f"[{lo:.3f}, {hi:.3f}]"


def format_table(t: pd.DataFrame) -> str:
    cols = ["config", "other", "baseline_runs", "other_runs", "baseline_tokens_per_s", "other_tokens_per_s", "ratio",
            "interval", "p_value", "p_holm", "verdict"]
    t = t.assign(interval=[interval_text(lo, hi) for lo, hi in zip(t["ci_low"], t["ci_high"])])
    return t[cols].to_string(index=False, na_rep="-", formatters={
        "baseline_tokens_per_s": "{:,.0f}".format, "other_tokens_per_s": "{:,.0f}".format,
        "ratio": "{:.3f}".format, "p_value": "{:.3g}".format, "p_holm": "{:.3g}".format})


def interval_note() -> str:
    return (f"interval: {CI_LEVEL:.0%} percentile bootstrap over runs of the ratio of medians, shown with "
            f"{MIN_RUNS}+ runs a side (it holds the true ratio less often than {CI_LEVEL:.0%} with 3-4 runs a side)")


CSV_COLS = (["config", "baseline", "other", "baseline_machine", "other_machine", "software_torch",
             "other_software_torch", "variant"] + list(WORK + SCALE)
            + ["baseline_runs", "other_runs", "baseline_tokens_per_s", "other_tokens_per_s", "ratio", "ci_low",
               "ci_high", "p_value", "p_holm", "verdict", "baseline_started", "baseline_finished", "other_started",
               "other_finished", "baseline_first_share", "timing"])


def table_frame(t: pd.DataFrame) -> pd.DataFrame:
    """The comparison as a CSV's rows: one per configuration and machine pair, with every
    field of the work identity (those that vary and those held fixed), the machines and
    torch versions of both sides, runs a side, medians, ratio, interval (blank where not
    shown), p, Holm p, verdict, and when each side ran (UTC)."""
    out = t.reindex(columns=CSV_COLS).rename(columns={"software_torch": "baseline_software_torch"})
    for c in ("baseline_started", "baseline_finished", "other_started", "other_finished"):
        out[c] = [x.isoformat() if isinstance(x, pd.Timestamp) and not pd.isna(x) else "" for x in out[c]]
    return out


def write_csv(t: pd.DataFrame, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    table_frame(t).to_csv(path, index=False)
    return path


# -- the page ------------------------------------------------------------------------------

def sides_frame(t: pd.DataFrame) -> pd.DataFrame:
    """Both sides of every row as rows of their own, with their own machine fields: what the
    comparison page holds fixed is what all of them share (figures.held_fixed)."""
    cols = [k for k in figures.CONTEXT if k in t]
    a = t[cols].assign(hardware_label=t["baseline_machine"], result_set=t["baseline"])
    b = t[cols].assign(hardware_label=t["other_machine"], result_set=t["other"],
                       software_torch=t["other_software_torch"])
    return pd.concat([a, b], ignore_index=True)


def footer(t: pd.DataFrame) -> str:
    """The comparison page's footer, as the report's pages have: what it holds fixed, and
    where its data is."""
    fixed = figures.held_fixed(sides_frame(t))
    return (f"held fixed on this page: {fixed}; " if fixed else "") + "data: <report>.compare.csv"


def fig_compare(t: pd.DataFrame):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=figures.A4)
    labels = [f"{r.config} ({r.other}; runs {r.baseline_runs}/{r.other_runs})" for r in t.itertuples()]
    y = np.arange(len(t))
    colors = [{"faster": "tab:green", "slower": "tab:red", "within noise": "tab:grey"}.get(v, "lightgrey")
              for v in t["verdict"]]
    ax.barh(y, t["ratio"] - 1, left=1, color=colors)
    shown = t["ci_low"].notna().to_numpy()
    if shown.any():
        s = t[shown]
        ax.errorbar(s["ratio"], y[shown], xerr=[s["ratio"] - s["ci_low"], s["ci_high"] - s["ratio"]], fmt="none",
                    color="k")
    ax.axvline(1, color="k", lw=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"throughput ratio to {t['baseline'].iloc[0]} (median of runs; above 1: faster), {CI_LEVEL:.0%} "
                  f"bootstrap interval over runs (shown with {MIN_RUNS}+ runs a side)")
    ax.set_title("Comparison: green faster, red slower, grey within noise (Welch on runs, Holm-adjusted); "
                 f"light grey: fewer than {MIN_RUNS} runs a side, no verdict and no interval", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    note = drift_note(t)
    if note:
        fig.text(0.01, 0.02, note, fontsize=6, wrap=True)
    fig.text(0.01, 0.003, footer(t), fontsize=6, color="grey")
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
    ap.add_argument("--pdf", help="also write a report of all sets with the comparison page added, and the "
                    "comparison table beside it as OUT.compare.csv")
    ap.add_argument("--csv", help="write the comparison table to this CSV (one row per configuration)")
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
    t = compare(sets, a.sets, a.alpha, a.min_ratio, repeats=repeats_needed(a.aa))
    if t.empty:
        _fail(no_common_message(a.sets, [figures.ok_runs(df) for df in sets]))
    print(format_table(t))
    print(interval_note())
    note = drift_note(t)
    if note:
        print(note)
    counts = t["verdict"].value_counts().to_dict()
    print("\n" + ", ".join(f"{n} {v}" for v, n in counts.items())
          + f" (Welch's t-test on runs' log tokens/s, Holm-adjusted over {int(t['p_value'].notna().sum())} "
            f"configuration(s), alpha {a.alpha}, min ratio {a.min_ratio})")
    if a.csv:
        print(f"table: {write_csv(t, a.csv)}")
    if a.pdf:
        from bench.report import write_report
        # each set its own `result_set` in the identity: before and after never pool in a page
        both = pd.concat([d.assign(result_set=n) for d, n in zip(sets, a.sets)], ignore_index=True)
        print(f"report: {write_report(both, a.pdf, 'scalebench comparison', extra=[fig_compare(t)])}")
        print(f"table: {write_csv(t, os.path.splitext(a.pdf)[0] + '.compare.csv')}")
    sys.exit(1 if counts.get("slower") else 0)


if __name__ == "__main__":
    main()
