"""Successive halving over measured candidates, and the verdict: pure functions, no torch.

The advisor (bench/advise.py) measures every surviving candidate a few steps, keeps the
better half, measures those twice as long, and so on until at most `finalists` remain
(Jamieson & Talwalkar 2016, "Non-stochastic best arm identification and hyperparameter
optimization", successive halving with eta = 2); the finalists are then measured at the full
`steps`, each repeat in a process of its own, until the leader is beyond noise from every
other finalist or the repeats or the budget end.

All of this happens in standing jobs (bench/session.py): the halving rungs and the finalists'
first repeat in the first process, each further repeat in a new one. Within a process every
candidate shares the process's drift; between processes it is 10-30% on this VM (steps of
one process agree to 1-2%). So a verdict pairs two candidates by process: the ratio of their
tokens/s within each process is the sample, a process the unit of replication.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.stats import CI_LEVEL, holm, paired_ratio

MIN_RUNS = 3  # a verdict of "beyond noise" needs 3 or more processes (as bench.compare's intervals)


def rung_steps(first_steps: int, steps: int, rung: int) -> int:
    """Measured steps at halving rung `rung` (0 first): first_steps doubled each rung, up to `steps`."""
    return min(steps, first_steps * 2 ** rung)


def keep_better(scores: dict[str, float | None], finalists: int, keep: float = 0.5) -> list[str]:
    """The candidates a rung passes on: the best ceil(n * keep) of the n measured (tokens/s,
    higher is better), but never fewer than `finalists` (while that many were measured);
    a failed candidate (None) never. Best first; equal scores keep the rung's order."""
    measured = [k for k, v in scores.items() if v is not None and math.isfinite(v)]
    ranked = sorted(measured, key=lambda k: -scores[k])
    n = max(min(finalists, len(ranked)), math.ceil(len(ranked) * keep))
    return ranked[:n]


@dataclass
class Standing:
    """One finalist against the leader, over the processes both were measured in."""
    key: str
    runs: list[float | None]  # tokens/s per process (job), None where it was not measured or failed
    median: float  # of its measured runs
    ratio: float = 1.0  # leader / this (geometric mean of the per-process ratios); 1 for the leader
    low: float = math.nan  # CI_LEVEL interval of the ratio
    high: float = math.nan
    p: float = 1.0  # paired t-test on the log ratios, two-sided
    p_adjusted: float = 1.0  # Holm over the comparisons with the leader
    pairs: int = 0
    significant: bool = False  # the leader is faster beyond noise (p_adjusted < alpha, pairs >= MIN_RUNS)
    failed: bool = False  # no run of it was measured (every pass failed): neither tied nor beaten

    @property
    def tied(self) -> bool:
        return not self.significant and not self.failed

    @property
    def margin(self) -> float:
        """How much faster the leader is: ratio - 1 (0.05: 5%)."""
        return self.ratio - 1


def verdict(runs: dict[str, list[float | None]], alpha: float = 1 - CI_LEVEL) -> list[Standing]:
    """The finalists ranked, the leader first: the leader is the one with the highest
    geometric mean of its measured runs; each other is compared with it over the processes
    both were measured in (bench.stats.paired_ratio), Holm-corrected over the comparisons.
    A finalist that is not significantly slower is tied with the leader; one without any
    measured run is `failed` (neither). `alpha`: per look (successive_halving splits its
    family-wise alpha over the looks it may take)."""
    def gmean(v: list[float | None]) -> float:
        xs = [x for x in v if x is not None and x > 0]
        return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else -math.inf

    order = sorted(runs, key=lambda k: -gmean(runs[k]))
    if not order:
        return []
    lead = order[0]

    def median(v):
        xs = sorted(x for x in v if x is not None)
        return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2 if xs else math.nan

    out = [Standing(lead, runs[lead], median(runs[lead]))]
    for k in order[1:]:
        pairs = [(a, b) for a, b in zip(runs[lead], runs[k]) if a is not None and b is not None]
        s = Standing(k, runs[k], median(runs[k]), pairs=len(pairs),
                     failed=not any(x is not None for x in runs[k]))
        if pairs:
            s.ratio, s.low, s.high, s.p = paired_ratio([a for a, _ in pairs], [b for _, b in pairs])
        out.append(s)
    for s, pa in zip(out[1:], holm([s.p for s in out[1:]])):
        s.p_adjusted = pa
        s.significant = pa < alpha and s.pairs >= MIN_RUNS and s.ratio > 1
    return out


def separated(standings: list[Standing]) -> bool:
    """The leader is beyond noise from every other finalist that was measured (or has none)."""
    return all(s.significant or s.failed for s in standings[1:])


@dataclass
class Rung:
    """One measurement pass: which candidates, how many steps, in which process (job)."""
    rung: int  # 0, 1, ...; the finalists' passes are `final`
    steps: int
    job: int
    scores: dict[str, float | None]  # tokens/s (None: failed)
    kept: list[str] = field(default_factory=list)
    final: bool = False


@dataclass
class History:
    rungs: list[Rung] = field(default_factory=list)
    finalists: list[str] = field(default_factory=list)
    final_runs: dict[str, list[float | None]] = field(default_factory=dict)  # per finalist, per final job
    standings: list[Standing] = field(default_factory=list)
    stopped: str = ""  # why the measuring ended: separated | repeats | budget | no finalists | one finalist
    alpha_per_look: float = 1 - CI_LEVEL  # the family-wise alpha split over the looks (Bonferroni)
    looks: int = 1


def order_for(keys: list[str], job: int, seed: int) -> list[str]:
    """The order of a pass: shuffled (seeded) for a halving rung, so no layout always runs
    first; rotated by the job for the finalists, so each takes each position in turn."""
    keys = list(keys)
    random.Random(seed).shuffle(keys)
    r = job % len(keys) if keys else 0
    return keys[r:] + keys[:r]


def successive_halving(keys: list[str], measure: Callable[[list[str], int, int, bool], dict[str, float | None]], *,
                       first_steps: int, steps: int, repeats: int, finalists: int = 2, max_repeats: int | None = None,
                       budget_left: Callable[[], bool] = lambda: True, seed: int = 0,
                       history: History | None = None) -> History:
    """Run the advisor's measuring plan. `measure(keys, steps, job, final)` measures `keys` in
    that order, `steps` measured steps each, in process `job` (0, 1, ...: a new number starts
    a new process; `final`: a pass of the finalists, not a halving rung), and returns their
    tokens/s (None: failed).

    Job 0: halving rungs (steps first_steps, 2x, 4x, ... up to `steps`) until at most
    `finalists` remain, then the finalists at `steps`. Jobs 1..repeats-1: the finalists
    again, each job a process. Then, while the leader is not beyond noise from every other
    finalist, one more job each, up to `max_repeats` (default 2 x repeats). `budget_left()`
    is asked before every pass after the first (the first rung always completes): False ends
    the measuring where it is. `history`: filled in place as the passes end.

    The verdict is looked at after `repeats` processes and after each one added: testing at
    every look and stopping at the first "beyond noise" would make a false winner more likely
    than alpha (Armitage, McPherson & Rowe 1969: about 0.12 for 4 looks at 0.05), so the
    family-wise alpha 0.05 is split over the looks (Bonferroni: 0.0125 each for 4)."""
    max_repeats = max_repeats if max_repeats is not None else 2 * repeats
    h = history if history is not None else History()  # filled as it goes: an interrupt keeps what was reached
    h.looks = max(1, max_repeats - repeats + 1)
    h.alpha_per_look = (1 - CI_LEVEL) / h.looks
    alive = list(keys)
    rung = 0
    while len(alive) > finalists:
        if rung and not budget_left():
            h.stopped = "budget"
            break
        s = rung_steps(first_steps, steps, rung)
        scores = measure(order_for(alive, rung, seed + rung), s, 0, False)
        kept = keep_better(scores, finalists)
        h.rungs.append(Rung(rung, s, 0, scores, kept))
        alive = kept
        rung += 1
    h.finalists = alive
    h.final_runs = {k: [] for k in alive}
    if not alive:
        h.stopped = "no finalists"
        return h
    job = 0
    while True:
        if (rung or job) and not budget_left():
            h.stopped = h.stopped or "budget"
            break
        scores = measure(order_for(alive, job, seed), steps, job, True)
        h.rungs.append(Rung(rung, steps, job, scores, list(alive), final=True))
        for k in alive:
            h.final_runs[k].append(scores.get(k))
        job += 1
        h.standings = verdict(h.final_runs, h.alpha_per_look)
        alive = [k for k in alive if any(x is not None for x in h.final_runs[k])]  # failed every time: no more
        if not alive:
            h.stopped = "every finalist failed"
            break
        if len(alive) == 1 and job >= repeats:
            h.stopped = "one finalist"
            break
        if job >= repeats and separated(h.standings):
            h.stopped = "separated"
            break
        if job >= max_repeats:
            h.stopped = "repeats"
            break
    h.standings = verdict(h.final_runs, h.alpha_per_look)
    return h
