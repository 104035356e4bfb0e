"""`python -m bench.advise_check key=value ...`: the advisor against an exhaustive sweep of the
same candidate set, side by side in one run.

Runs `bench.advise` with the given keys, then `bench.advise exhaustive=true` with the same
keys and the repeats the advisor's finalists ended with (same steps, same processes per
candidate), and prints: each one's winner and tie, whether they agree (the same winner, or
the advisor's winner inside the exhaustive tie), both wall times and their ratio, points and
processes each launched, failures and timeouts. Writes `advise_check.json` in results_root.
A benchmark script (its figures go in the README), not a test.
"""
from __future__ import annotations

import json
import os
import sys

from bench.advise import BadInput, advise


def agree(a: dict, e: dict) -> tuple[bool, str]:
    """Whether the advisor's answer `a` matches the exhaustive sweep's `e`: the same winner, or
    the advisor's winner among the exhaustive's leader and its ties."""
    if not a["winner"] or not e["winner"]:
        return False, "one of them has no winner"
    aw, ew = a["winner"]["label"], e["winner"]["label"]
    if aw == ew:
        return True, f"same winner: {aw}"
    if aw in e["winner"]["tied_with"]:
        return True, f"same tie: the exhaustive sweep's leader {ew} is within noise of {aw}"
    return False, f"advisor {aw} vs exhaustive {ew} (whose ties are {e['winner']['tied_with'] or 'none'})"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        print("== advisor (successive halving) ==", flush=True)
        a, a_dir = advise(args)
        reps = len((a["winner"] or {}).get("tokens_per_s_runs") or []) or a["question"]["repeats"]
        print(f"\n== exhaustive: every survivor at steps, {reps} processes ==", flush=True)
        e, e_dir = advise(args + ["exhaustive=true", f"repeats={reps}"])
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    ok, why = agree(a, e)
    rows = []
    for name, x in (("advisor", a), ("exhaustive", e)):
        w = x["winner"] or {}
        failed = x["counts"].get("failed", 0)
        rows.append({"mode": name, "winner": w.get("label"), "tied_with": w.get("tied_with"),
                     "tokens_per_s": w.get("tokens_per_s_median"), "wall_s": x["wall_s"], "measure_s": x["measure_s"],
                     "points": x["points_measured"], "processes": x["processes"], "failed": failed,
                     "survivors": x["counts"]["enumerated"] - x["counts"].get("invalid", 0) - x["counts"].get("pruned", 0),
                     "advice": os.path.join(x["sweep_dir"], "advice.json")})
    print(f"\n{'':<11} {'winner':<26} {'tokens/s':>10} {'wall s':>8} {'points':>7} {'processes':>9} {'failed':>6}  ties")
    for r in rows:
        print(f"{r['mode']:<11} {str(r['winner']):<26} {r['tokens_per_s'] or 0:>10,.0f} {r['wall_s']:>8.1f} "
              f"{r['points']:>7} {r['processes']:>9} {r['failed']:>6}  {', '.join(r['tied_with'] or []) or '-'}")
    ratio = rows[0]["wall_s"] / rows[1]["wall_s"]
    print(f"\nagree: {ok} ({why}); advisor wall time / exhaustive = {ratio:.2f} ({rows[0]['survivors']} survivors)")
    out = {"command": "python -m bench.advise_check " + " ".join(args), "agree": ok, "why": why,
           "wall_ratio": ratio, "rows": rows}
    path = os.path.join(os.path.dirname(a_dir), f"advise_check-{os.path.basename(a_dir)}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"written: {path}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
