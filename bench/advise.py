"""`python -m bench.advise size=... devices=... [global_batch_size=... seq_len=... precision=... budget_s=...]`:
which layout should this model be trained with on this machine?

Composed by Hydra like bench.run (conf/advise.yaml: every key of a point, and the advisor's
own, bench.config.AdviseConfig), on one node. Then:
  1. enumerate every layout the registry can run for the size, devices and global batch
     (bench/candidates.py: strategies and their options, batch splits, micro-batch counts,
     checkpointing);
  2. prune before launching: invalid layouts with the validator's message, layouts whose
     memory need cannot fit even at the model's lower bound with the figures; layouts that
     may not fit are measured anyway (force=true), and `verify_pruned=N` runs N pruned ones
     under the memory limit to show that they do not fit;
  3. measure the survivors by successive halving (bench/halving.py) in standing jobs
     (bench/session.py: a process's start-up paid once per job, not once per point); every
     measurement is an ordinary point with its own result.json in one sweep folder;
  4. answer: the winner with its tokens/s interval and memory (measured beside predicted),
     the runners-up with their margins and whether each is beyond noise (ties named), every
     candidate's fate and the `bench.run` overrides that reproduce it; printed, and written
     to `advice.json` in the sweep folder, with a report (an advice page first).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import secrets
import sys
import time
from typing import Any

from bench import candidates as cands_mod
from bench import config, hardware
from bench.candidates import AT_RISK, INVALID, PRUNED, SURVIVOR, Candidate, Verdict
from bench.config import AdviseConfig, numeric_keys
from bench.halving import History, successive_halving, verdict
from bench.plan import Host, config_hash
from bench.protocol import CGROUP_ENV, FAULT_ENV, QUIET_ENV, fault_for
from bench.results import write_result
from bench.run import new_result, plan_run

ADVICE_NAME = "advice.json"
ADVICE_SCHEMA = 1
# keys of the user's command that do not belong in a point's reproducing command
ADVISE_KEYS = tuple(f.name for f in dataclasses.fields(AdviseConfig)
                    if f.name not in {g.name for g in dataclasses.fields(config.BenchConfig)})


class BadInput(ValueError):
    """The command cannot run as given: one line names what to change (exit code 2)."""


def compose(overrides: list[str]) -> AdviseConfig:
    """The advisor's config, as Hydra composes conf/advise.yaml with `overrides`."""
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf
    config.register()
    with config.composing():
        return OmegaConf.to_object(hydra_compose("advise", overrides=overrides))


def check(cfg: AdviseConfig) -> None:
    """The advisor's own keys within range; raises ValueError with the one line to print."""
    for k in numeric_keys(AdviseConfig):
        if k.name in ADVISE_KEYS:
            msg = k.refusal(k.value(cfg))
            if msg:
                raise ValueError(msg)
    from bench import parallel
    unknown = [s for s in cfg.strategies or [] if s not in parallel.STRATEGIES]
    if unknown:
        raise ValueError(f"strategies: {', '.join(unknown)} not in the registry; choose among "
                         f"{', '.join(parallel.STRATEGIES)}")
    if cfg.first_steps > cfg.steps:
        raise ValueError(f"first_steps={cfg.first_steps} exceeds steps={cfg.steps} (the finalists' steps); "
                         f"use first_steps<={cfg.steps}")
    if cfg.verify_pruned and cfg.memory_limit_gib is None:
        raise ValueError("verify_pruned needs memory_limit_gib (the limit the pruned layouts are run under); "
                         "set memory_limit_gib=...")
    if cfg.memory_limit_gib is not None and cfg.accelerator.value == "cuda":
        raise ValueError("memory_limit_gib limits host RAM (a cgroup), not GPU memory; on GPUs the capacity is the "
                         "GPU's own memory: leave memory_limit_gib unset")


def folder_name(c: Candidate, steps: int) -> str:
    """A candidate measured at `steps`: its folder in the sweep (Hydra's override_dirname style)."""
    return ",".join(sorted([f"{k}={v}" for k, v in c.overrides] + [f"steps={steps}"]))


class Runner:
    """Measures candidates in standing jobs and records each measurement as a result.json:
    the `measure` callback of bench.halving.successive_halving."""

    def __init__(self, cands: dict[str, Candidate], verdicts: dict[str, Verdict], sweep_dir: str, fp: dict[str, Any],
                 label: str, say=print, repeats: int = 1):
        self.cands, self.verdicts, self.sweep_dir = cands, verdicts, sweep_dir
        self.repeats = repeats  # the finalists' planned processes (their results' `repeats`)
        self.fp, self.label, self.host = fp, label, Host.from_fingerprint(fp)
        self.say = say
        self.job = None
        self.job_key: tuple | None = None
        self.jobs = 0
        self.points = 0
        self.last: dict[str, dict[str, Any]] = {}  # key -> the last result recorded
        self.results: dict[str, list[dict[str, Any]]] = {}  # key -> every result recorded

    def _job_for(self, job: int, spec) -> Any:
        from bench.session import Job
        from bench.worker import serve_rank
        key = (job, spec.procs, spec.cpu_threads_per_device, spec.accelerator, spec.nodes)
        if self.job is not None and self.job_key == key and not self.job.ended:
            return self.job
        self.close()
        self.jobs += 1
        self.job = Job(spec, os.path.join(self.sweep_dir, ".jobs", f"{self.jobs:03d}-pass{job}"), serve_rank)
        self.job.number = self.jobs  # the process's own number (a pass may need more than one)
        self.job_key = key
        # a warm-up point, not recorded: a process's first point ran cold (first touch, thread
        # pools) and a 2-step screening could drop it for that alone
        from bench.session import Item
        warm = dataclasses.replace(spec, steps=1, warmup_steps=1)
        (o,) = self.job.measure([Item(warm, os.path.join(self.job.job_dir, "warmup"), "warmup", spec.timeout_s)])
        if o is None or o.status != "ok":  # then without it
            self.job.close()
            self.job = Job(spec, os.path.join(self.sweep_dir, ".jobs", f"{self.jobs:03d}-pass{job}-b"), serve_rank)
            self.job.number = self.jobs
        self.job.done = 0  # the warm-up does not count as an earlier point (a crash retry needs one)
        return self.job

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None

    def measure(self, keys: list[str], steps: int, job: int, stage: str) -> dict[str, float | None]:
        """Measure `keys` at `steps` in process `job` (the pass's number: a new one starts a new
        process); `stage`: `rung` (a halving pass), `final` (the finalists' pass) or
        `verify_pruned`, recorded in each result's `advise`. A point that fails ends its job:
        the points after it go on in a new process, and for a final pass the whole pass is
        measured again there (less what failed), so that its pairs share one process."""
        scores: dict[str, float | None] = {}
        pending = [p for p in (self._prepare(k, steps, job, stage, scores) for k in keys) if p]
        failed: set[str] = set()
        retried: set[str] = set()
        restarts = 0
        while pending:
            shape = lambda s: (s.procs, s.cpu_threads_per_device, s.accelerator, s.nodes)  # noqa: E731
            group = [p for p in pending if shape(p[1]) == shape(pending[0][1])]
            rest = [p for p in pending if p not in group]
            j = self._job_for(job, group[0][1])
            from bench.session import Item
            items = [Item(spec, out_dir, self.cands[k].name, self.cands[k].cfg.timeout_s)
                     for k, spec, out_dir, _ in group]
            outs = j.measure(items, on_item=lambda i, o: self._recorded(group[i], o, j, len(group)))
            crashed = []  # a crash after other points of its process: once more, first in a fresh one
            for g, o in zip(group, outs):
                k = g[0]
                if o is not None:
                    scores[k] = o.metrics["tokens_per_s"] if o.status == "ok" and o.metrics else None
                    if o.status != "ok" and self._crash(o, j) and k not in retried:
                        retried.add(k)
                        crashed.append(k)
                    elif o.status != "ok":
                        failed.add(k)
            missed = [g for g, o in zip(group, outs) if o is None]
            prep = lambda ks: [p for p in (self._prepare(k, steps, job, stage, scores) for k in ks) if p]  # noqa: E731
            if not missed:  # (a crash at the group's last point: its retry opens a fresh process)
                pending = prep(crashed) + rest
                continue
            self.close()  # the job ended: what it did not reach goes on in a new process
            restarts += 1
            if len(missed) == len(group) or restarts > 3:  # the job could not start, or keeps ending
                for k, _, out_dir, res in missed:
                    o = j.outcome
                    res.update(status=o.status if o and o.status != "ok" else "failed",
                               error=(o.error if o else None) or "the job ended before this point")
                    self._write(k, res, out_dir)
                    scores[k] = None
                pending = rest
            elif stage == "final":
                again = [k for k, *_ in group if k not in failed and k not in crashed]
                pending = prep(crashed + again) + rest
            else:
                pending = prep(crashed) + missed + rest
        return scores

    @staticmethod
    def _crash(o, job) -> bool:
        """A rank died of a crash (SIGSEGV, SIGABRT, SIGBUS) after its process had measured
        other points: on this VM, mini's tp+sp did so in long standing jobs but not alone
        (still open), so such a point is measured once more as the first of a fresh process
        (both results are kept). Planted faults (SIGKILL), timeouts and errors are not retried."""
        import re
        return job.done > 0 and bool(re.search(r"signal (6|7|11) ", o.error or ""))

    def _prepare(self, k: str, steps: int, job: int, stage: str, scores: dict) -> tuple | None:
        """A measurement's config, folder, result record and RunSpec; None (recorded) where
        the planner refuses it after all."""
        c = self.cands[k]
        final = stage == "final"
        cfg = dataclasses.replace(c.cfg, steps=steps, repeats=self.repeats if final else 1,
                                  force=c.cfg.force or self.verdicts[k].fate in (AT_RISK, PRUNED))
        out_dir = os.path.join(self.sweep_dir, folder_name(c, steps))
        res = new_result(cfg, out_dir, self.fp, self.label, config_hash(cfg), repeat=job if final else 0)
        if "fault" in res and not fault_for(os.environ.get(FAULT_ENV, ""), c.name):
            del res["fault"]
        res["advise"] = {"candidate": k, "label": c.label, "stage": stage, "pass": job, "steps": steps,
                         "sweep": os.path.abspath(self.sweep_dir)}
        spec = plan_run(cfg, res, self.host)
        if spec is None:  # decided before launching after all (the machine changed?)
            self._write(k, res, out_dir)
            scores[k] = None
            return None
        return k, spec, out_dir, res

    def _recorded(self, entry, o, job, n: int) -> None:
        from bench.launch import Outcome, diverged, interconnect
        k, spec, out_dir, res = entry
        if o.status == "ok":
            oc = diverged(Outcome("ok", metrics=o.metrics))
            o.metrics["interconnect"] = interconnect(spec, o.metrics, job.job_dir)
            if oc.status != "ok":
                o.status, o.error = oc.status, oc.error
        res.update(status=o.status, error=o.error, error_detail=o.error_detail, metrics=o.metrics,
                   launch_s=o.launch_s, cores=o.cores)
        if o.rank_errors:
            res["rank_errors"] = [{x: e.get(x) for x in ("rank", "status", "error")} for e in o.rank_errors]
        res["advise"].update(process=job.number, job_dir=os.path.relpath(job.job_dir, self.sweep_dir),
                             points_in_order=n)
        res["duration_s"] = o.duration_s
        self._write(k, res, out_dir)
        self.points += 1
        tps = f"{o.metrics['tokens_per_s']:,.0f} tokens/s" if o.status == "ok" else f"{o.status}: {o.error}"
        self.say(f"    {self.cands[k].label:<34} {tps}")

    def _write(self, k: str, res: dict[str, Any], out_dir: str) -> None:
        res.setdefault("finished_at", _now())
        res["path"] = write_result(out_dir, res)
        self.last[k] = res
        self.results.setdefault(k, []).append(res)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def user_overrides(overrides: list[str]) -> list[str]:
    """The user's overrides that a candidate's `bench.run` command keeps (not the advisor's own
    keys, not the strategy it replaces)."""
    drop = set(ADVISE_KEYS) | {"strategy", "global_batch_size", "grad_accum", "activation_checkpointing", "repeats"}
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~").split(".")[0] not in drop]


def command(c: Candidate, kept: list[str], repeats: int) -> str:
    return " ".join(["python -m bench.run", *kept, c.name, f"repeats={repeats}"])


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2 if xs else None


def build_advice(cfg: AdviseConfig, cands: dict[str, Candidate], verdicts: dict[str, Verdict], h: History | None,
                 runner: Runner | None, kept: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    """advice.json: the answer, every candidate's fate, and how it was reached."""
    from bench.stats import median_ci
    standings = {s.key: s for s in (h.standings if h else [])}
    fates = []
    measured_at: dict[str, tuple[int, float | None, float | None]] = {}  # key -> (rung, its score, rung best)
    for r in (h.rungs if h else []):
        best = max((v for v in r.scores.values() if v is not None), default=None)
        for k, v in r.scores.items():
            measured_at[k] = (r.rung, v, best)
    results = runner.results if runner else {}
    for k, c in cands.items():
        v = verdicts[k]
        entry: dict[str, Any] = {"key": k, "label": c.label, "overrides": c.name,
                                 "command": command(c, kept, cfg.repeats), "fate": v.fate, "reason": v.reason,
                                 "predicted_need_bytes": v.need_bytes, "predicted_need_low_bytes": v.need_low_bytes,
                                 "capacity_bytes": v.capacity_bytes, "at_risk": v.fate == AT_RISK}
        if v.fate in (SURVIVOR, AT_RISK):
            rs = results.get(k, [])
            bad = [r for r in rs if r["status"] != "ok"]
            if k in standings and any(x is not None for x in standings[k].runs):
                s = standings[k]
                entry.update(fate="finalist", tokens_per_s=s.median, runs=list(s.runs),
                             margin_to_leader=s.margin if s.pairs else None)
            elif bad and not any(r["status"] == "ok" for r in rs):
                entry.update(fate="failed", reason=f"{bad[-1]['status']}: {bad[-1]['error']}",
                             status=bad[-1]["status"])
            elif h and k in h.finalists and h.stopped in ("budget", "interrupted"):
                rung, score, best = measured_at.get(k, (None, None, None))
                entry.update(fate="unconfirmed", tokens_per_s=score, rung=rung,
                             reason=f"still in the running when measuring stopped ({h.stopped})"
                                    + (f"; rung {rung}: {score:,.0f} tokens/s" if score else ""))
            elif k in measured_at:
                rung, score, best = measured_at[k]
                entry.update(fate="dropped", tokens_per_s=score, rung=rung,
                             reason=(f"rung {rung}: {score:,.0f} tokens/s, {1 - score / best:.1%} below that rung's "
                                     f"best ({best:,.0f})") if score and best else f"rung {rung}")
            else:
                entry.update(fate="not measured", reason=f"measuring stopped ({h.stopped or 'before it'})")
            entry["results"] = [os.path.relpath(r["path"], runner.sweep_dir) for r in rs if r.get("path")]
        fates.append(entry)
    advice: dict[str, Any] = {"schema_version": ADVICE_SCHEMA, "mode": "exhaustive" if cfg.exhaustive else "halving",
                              "question": {"size": cfg.size.name, "devices": cfg.devices, "nodes": cfg.launcher.nodes,
                                           "global_batch_size": cands_mod.global_batch(cfg), "seq_len": cfg.seq_len,
                                           "precision": cfg.precision.value, "steps": cfg.steps,
                                           "first_steps": cfg.first_steps, "repeats": cfg.repeats,
                                           "budget_s": cfg.budget_s},
                              **extra}
    counts: dict[str, int] = {}
    for f in fates:
        counts[f["fate"]] = counts.get(f["fate"], 0) + 1
    advice["counts"] = {"enumerated": len(fates), **counts,
                        "at_risk": sum(f["at_risk"] for f in fates)}
    advice["winner"] = None
    advice["runners_up"] = []
    if h and h.rungs and (not h.standings or not any(x is not None for x in h.standings[0].runs)):
        # the budget ended before the finalists' pass: the screening's leader, unconfirmed
        last = [r for r in h.rungs if any(v is not None for v in r.scores.values())]
        if last:
            k, v = max(((k, v) for k, v in last[-1].scores.items() if v is not None), key=lambda kv: kv[1])
            advice["provisional"] = {"key": k, "label": cands[k].label, "overrides": cands[k].name,
                                     "tokens_per_s": v, "steps": last[-1].steps,
                                     "note": "the best of the last halving rung (one process, fewer steps); "
                                             "measuring stopped before the finalists' processes: not a verdict"}
    elif h and h.standings:
        lead = h.standings[0]
        c = cands[lead.key]
        runs = [x for x in lead.runs if x is not None]
        lo, hi, cov = median_ci(runs)
        ok = [r for r in results.get(lead.key, []) if r["status"] == "ok" and r["config"]["steps"] == cfg.steps]
        mem = [r["metrics"] for r in ok]
        pred = (ok[0]["prediction"] if ok else None) or {}
        tied = [s for s in h.standings[1:] if s.tied]
        advice["winner"] = {
            "key": lead.key, "label": c.label, "overrides": c.name, "command": command(c, kept, cfg.repeats),
            "tokens_per_s_median": lead.median, "tokens_per_s_runs": lead.runs,
            "tokens_per_s_interval": [lo, hi], "interval_coverage": cov,
            "interval_note": "distribution-free interval of the median over processes (bench.stats.median_ci); "
                             "its coverage is exact for the number of runs",
            "mem_peak_bytes": _median([m["mem_peak_bytes"] for m in mem]),
            "mem_peak_above_baseline_bytes": _median([m["mem_peak_above_baseline_bytes"] for m in mem
                                                      if m.get("mem_peak_above_baseline_bytes") is not None]),
            "mem_source": mem[0].get("mem_source") if mem else None,
            "mem_predicted_model_bytes": pred.get("model_bytes"), "mem_predicted_total_bytes": pred.get("total_bytes"),
            "processes": len(lead.runs), "tie": bool(tied), "tied_with": [cands[s.key].label for s in tied]}
        for s in h.standings[1:]:
            advice["runners_up"].append({
                "key": s.key, "label": cands[s.key].label, "overrides": cands[s.key].name,
                "tokens_per_s_median": s.median, "tokens_per_s_runs": s.runs,
                "leader_faster_by": s.margin, "ratio_interval": [s.low, s.high], "pairs": s.pairs,
                "p_adjusted": s.p_adjusted, "significant": s.significant,
                "verdict": ("failed in every finalists' pass" if s.failed else "slower beyond noise" if s.significant
                            else "tie (within noise)")})
    advice["halving"] = [{"rung": r.rung, "final": r.final, "steps": r.steps, "process": r.job + 1,
                          "measured": len(r.scores), "failed": sum(v is None for v in r.scores.values()),
                          "kept": len(r.kept), "best_tokens_per_s": max((v for v in r.scores.values() if v), default=None)}
                         for r in (h.rungs if h else [])]
    advice["stopped"] = h.stopped if h else "nothing to measure"
    alpha = h.alpha_per_look if h else 0.05
    advice["statistics"] = ("finalists compared with the leader by process: the ratio of their tokens/s within "
                            "each process (paired t-test on the log ratios, bench.stats.paired_ratio), Holm-corrected "
                            f"over the finalists; beyond noise at adjusted p < {alpha:.4g} (0.05 split over the "
                            f"{h.looks if h else 1} looks the repeats allow) with 3+ processes, else a tie")
    advice["candidates"] = fates
    return advice


def print_advice(a: dict[str, Any], say=print) -> None:
    c = a["counts"]
    say(f"\n{c['enumerated']} layouts: {c.get('invalid', 0)} invalid, {c.get('pruned', 0)} pruned for memory, "
        f"{c.get('failed', 0)} failed, {c.get('dropped', 0)} dropped by halving, {c.get('finalist', 0)} finalists"
        + (f", {c.get('not measured')} not measured" if c.get("not measured") else "")
        + (f" ({c['at_risk']} measured although they may not fit)" if c.get("at_risk") else ""))
    w = a["winner"]
    if w is None and a.get("provisional"):
        p = a["provisional"]
        say(f"\nno verdict ({a['stopped']}): the screening's best was {p['label']} at {p['tokens_per_s']:,.0f} tokens/s "
            f"({p['steps']} steps, one process); run with a larger budget_s to confirm it")
        return
    if w is None:
        say("no layout could be measured: see advice.json for each one's fate")
        return
    lo, hi = w["tokens_per_s_interval"]
    iv = f" [{lo:,.0f}, {hi:,.0f}] ({w['interval_coverage']:.0%} interval over processes)" if lo == lo else ""
    mem = (f"; memory {w['mem_peak_bytes'] / 2**20:,.0f} MiB a rank, "
           f"{(w.get('mem_peak_above_baseline_bytes') or 0) / 2**20:,.0f} MiB of it above the runtime measured "
           f"vs {w['mem_predicted_model_bytes'] / 2**20:,.0f} MiB predicted"
           if w.get("mem_peak_bytes") and w.get("mem_predicted_model_bytes") else "")
    say(f"\nadvice: {w['label']}: {w['tokens_per_s_median']:,.0f} tokens/s{iv}{mem}")
    if w["tie"]:
        say(f"  tie: within noise of {', '.join(w['tied_with'])}")
    for r in a["runners_up"]:
        lo, hi = r["ratio_interval"]
        iv = f" (ratio {lo:.3f}-{hi:.3f})" if lo == lo else ""
        say(f"  vs {r['label']:<34} {r['tokens_per_s_median']:>12,.0f} tokens/s: leader {r['leader_faster_by']:+.1%}"
            f"{iv}, {r['verdict']} over {r['pairs']} processes")
    say(f"  reproduce: {w['command']}")


def verify_pruned(cfg: AdviseConfig, cands: dict[str, Candidate], verdicts: dict[str, Verdict], runner: Runner,
                  say=print) -> list[dict[str, Any]]:
    """Run a sample of the memory-pruned layouts anyway (force=true) under the limit, one job
    each: each should fail (killed for memory); one that ends ok is a layout pruning wrongly dropped."""
    pruned = [k for k, v in verdicts.items() if v.fate == PRUNED]
    pruned.sort(key=lambda k: verdicts[k].need_low_bytes)  # the closest to fitting first: the hardest test
    out = []
    from bench import cgroup
    cg = os.environ.get(CGROUP_ENV)
    if not cg:
        say("verify_pruned: skipped: the memory limit could not be enforced (no cgroup), so a forced run "
            "would show nothing")
        return [{"skipped": "the memory limit could not be enforced (no cgroup)"}]
    for k in pruned[:cfg.verify_pruned]:
        runner.close()
        kills = cgroup.oom_kills(cg) if cg else None
        scores = runner.measure([k], cfg.first_steps, job=0, stage="verify_pruned")
        runner.close()
        r = runner.last[k]
        after = cgroup.oom_kills(cg) if cg else None
        oom = (after is not None and kills is not None and after > kills) or r["status"] == "oom" \
            or "signal 9" in (r["error"] or "")
        # a run the cgroup let through may still not fit: the ranks' pages from before they joined
        # (torch) are charged outside it, so its measured peaks (all ranks) are the test
        measured = ((r.get("metrics") or {}).get("mem_peak_bytes_sum") if scores[k] is not None else None)
        cap = verdicts[k].capacity_bytes
        out.append({"key": k, "label": cands[k].label, "status": r["status"], "error": r["error"],
                    "oom_kills": None if after is None or kills is None else after - kills,
                    "predicted_need_bytes": verdicts[k].need_bytes, "predicted_need_low_bytes": verdicts[k].need_low_bytes,
                    "measured_peak_sum_bytes": measured, "capacity_bytes": cap,
                    "verdict": ("failed for memory, as predicted" if scores[k] is None and oom else
                                f"did not fit, as predicted: measured {measured / 2**30:.2f} GiB over its ranks > "
                                f"{cap / 2**30:.2f} GiB (ran: what its ranks held before joining the cgroup "
                                "is charged outside it)" if measured and measured > cap else
                                "FIT: pruning dropped a layout that runs" if scores[k] is not None else
                                f"failed otherwise ({r['status']}): no evidence either way")})
    if out:
        killed = sum(o["verdict"].startswith("failed for memory") for o in out)
        over = sum(o["verdict"].startswith("did not fit") for o in out)
        fit = sum(o["verdict"].startswith("FIT") for o in out)
        say(f"verify_pruned: of {len(out)} pruned layouts forced under the limit, {killed} were killed for memory "
            f"and {over} measured above the capacity, as predicted"
            + (f"; {fit} FIT: pruning dropped them wrongly (see advice.json)" if fit else ""))
    return out


def advise(overrides: list[str], say=print) -> tuple[dict[str, Any], str]:
    """The whole command: returns (advice, sweep folder). Raises ValueError for bad input."""
    t_start = time.time()
    from bench.run import _one_line, check_writable
    try:
        for a in overrides:
            if "=" not in a:
                raise ValueError(f"{a}: expected key=value (python -m bench.advise --help)")
        cfg = compose(overrides)
        check(cfg)
        check_writable(cfg.results_root, "results_root")
        check_writable(cfg.report_dir, "report_dir")
        if any(o.split("=", 1)[0] == "strategy" for o in overrides):
            raise ValueError("strategy=...: the advisor chooses the strategy; narrow its choice with "
                             "strategies=[dp,tp]")
        if cfg.strategies is not None and not cfg.strategies:
            raise ValueError("strategies=[]: name at least one, e.g. strategies=[dp], or leave it out for all")
    except Exception as e:
        line = _one_line(e).replace("python -m bench.run --help", "python -m bench.advise --help")
        if "strategies" in line and "ListConfig" in line:
            line = "strategies takes a list: strategies=[dp] or strategies=[dp,tp]"
        raise BadInput(line) from None
    fp = hardware.fingerprint()
    label = cfg.hardware_label or hardware.label(fp)
    host = Host.from_fingerprint(fp)
    limit = int(cfg.memory_limit_gib * 2**30) if cfg.memory_limit_gib else None
    all_cands = cands_mod.enumerate_candidates(cfg, cfg.strategies, cfg.try_checkpointing)
    cands = {f"c{i:03d}": c for i, c in enumerate(all_cands)}
    verdicts = {k: cands_mod.classify(c, host, limit) for k, c in cands.items()}
    runnable = [k for k, v in verdicts.items() if v.fate in (SURVIVOR, AT_RISK)]
    if not runnable:
        reasons = [v.reason for v in verdicts.values() if v.reason]
        raise BadInput(f"none of the {len(cands)} layouts can run; e.g. {reasons[0] if reasons else '?'}")
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    sweep_dir = os.path.join(cfg.results_root, f"advise-{stamp}-{secrets.token_hex(2)}")
    os.makedirs(sweep_dir)
    n_by = {f: sum(v.fate == f for v in verdicts.values()) for f in (SURVIVOR, AT_RISK, INVALID, PRUNED)}
    say(f"[advise] {cfg.size.name} on {cfg.devices} device(s), global batch {cands_mod.global_batch(cfg)}: "
        f"{len(cands)} layouts, {n_by[INVALID]} invalid, {n_by[PRUNED]} pruned for memory, "
        f"{len(runnable)} to measure ({n_by[AT_RISK]} of them may not fit)\n[advise] sweep folder {sweep_dir}")
    runner = Runner(cands, verdicts, sweep_dir, fp, label, say, repeats=cfg.repeats)
    for k in cands:  # the pruned and invalid are results too: the report shows why they did not run
        if verdicts[k].fate in (INVALID, PRUNED):
            c = cands[k]
            res = new_result(c.cfg, os.path.join(sweep_dir, folder_name(c, c.cfg.steps)), fp, label,
                             config_hash(c.cfg), 0)
            plan_run(c.cfg, res, host) if verdicts[k].fate == INVALID else None
            if verdicts[k].fate == PRUNED:
                res.update(status="predicted_oom", error=verdicts[k].reason)
            res["advise"] = {"candidate": k, "label": c.label, "stage": "pruned", "sweep": os.path.abspath(sweep_dir)}
            runner._write(k, res, os.path.join(sweep_dir, folder_name(c, c.cfg.steps)))
            runner.results.pop(k, None)
    extra: dict[str, Any] = {"sweep_dir": os.path.abspath(sweep_dir), "hardware_label": label,
                             "command": "python -m bench.advise " + " ".join(overrides)}
    env_before = {k: os.environ.get(k) for k in (QUIET_ENV, CGROUP_ENV)}
    os.environ[QUIET_ENV] = "1"  # the ranks' own progress lines; the advisor prints one line a point
    from bench import cgroup
    import contextlib
    h = History()
    t_measure = time.time()
    try:
        with (cgroup.limited(limit) if limit else contextlib.nullcontext((None, "no memory_limit_gib"))) as (cg, how):
            extra["memory_limit"] = {"bytes": limit, "enforced": cg is not None, "how": how}
            if limit:
                say(f"[advise] memory limit {limit / 2**30:.2f} GiB: " + (how if cg else f"not enforced: {how}"))
            if cg:
                os.environ[CGROUP_ENV] = cg

            def budget_left() -> bool:
                return cfg.budget_s is None or time.time() - t_measure < cfg.budget_s

            rungs = iter(range(10**6))  # numbered from 0, as the fates' reasons say them

            def measure(keys, steps, job, final):
                what = "final" if final else f"rung {next(rungs)}"
                say(f"  [{what}] {len(keys)} layout(s) x {steps} steps, process {job + 1}")
                return runner.measure(keys, steps, job, "final" if final else "rung")

            if cfg.exhaustive:
                successive_halving(runnable, measure, first_steps=cfg.steps, steps=cfg.steps, repeats=cfg.repeats,
                                   finalists=len(runnable), max_repeats=cfg.repeats, budget_left=budget_left,
                                   seed=cfg.seed, history=h)
            else:
                successive_halving(runnable, measure, first_steps=cfg.first_steps, steps=cfg.steps,
                                   repeats=cfg.repeats, finalists=cfg.finalists, budget_left=budget_left,
                                   seed=cfg.seed, history=h)
            runner.close()
            if cfg.verify_pruned:
                extra["verify_pruned"] = verify_pruned(cfg, cands, verdicts, runner, say)
    except KeyboardInterrupt:
        runner.close()
        h.stopped = "interrupted"
        if h.final_runs:
            h.standings = verdict(h.final_runs, h.alpha_per_look)
        raise
    finally:
        runner.close()
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        extra.update(wall_s=time.time() - t_start, measure_s=time.time() - t_measure, processes=runner.jobs,
                     points_measured=runner.points)
        advice = build_advice(cfg, cands, verdicts, h, runner, user_overrides(overrides), extra)
        with open(os.path.join(sweep_dir, ADVICE_NAME), "w") as f:
            json.dump(advice, f, indent=1, default=_json_safe)
    return advice, sweep_dir


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def write_advice_report(advice: dict[str, Any], sweep_dir: str, report_dir: str) -> str:
    """The sweep's report (bench.report), the advice page first; its data as NAME.advice.csv."""
    from bench import figures, report
    from bench.results import load
    df = load([sweep_dir])
    name = os.path.basename(os.path.normpath(sweep_dir))
    out = os.path.join(report_dir, f"{name}.pdf")
    report.write_report(df, out, title=f"scalebench advice {name}", first=[figures.fig_advice(advice)],
                        advice=(advice,))
    figures.advice_frame(advice).to_csv(os.path.splitext(out)[0] + ".advice.csv", index=False)
    return out


HELP = """python -m bench.advise size=... devices=... [global_batch_size=... seq_len=... precision=... budget_s=...]

Every layout the registry can run for the size, devices and global batch; invalid and
memory-pruned ones dropped before launching; the rest measured by successive halving in
standing jobs; the winner beyond noise, or a tie, with every candidate's fate. Writes
advice.json in the sweep folder and a report.

The advisor's own keys (every key of python -m bench.run --help works too):
"""


def main(argv: list[str] | None = None) -> None:
    import signal
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        rows = [r for r in config.key_rows()]
        own = {f.name: f for f in dataclasses.fields(AdviseConfig)}
        print(HELP + "\n".join(f"  {n:<18} {config._fmt(own[n].default):<6} {own[n].metadata['help']}"
                               for n in ADVISE_KEYS) + f"\n\n({len(rows)} point keys: python -m bench.run --help)")
        return
    def terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        advice, sweep_dir = advise(args)
    except KeyboardInterrupt:
        print("\ninterrupted: every measured point kept its result.json; advice.json says what was reached",
              file=sys.stderr)
        sys.exit(130)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print_advice(advice)
    cfg_report = compose(args).report_dir
    try:
        print(f"\nadvice: {os.path.join(sweep_dir, ADVICE_NAME)}\nreport: {write_advice_report(advice, sweep_dir, cfg_report)}")
    except Exception as e:  # a report problem must not hide the advice
        print(f"\nadvice: {os.path.join(sweep_dir, ADVICE_NAME)}\nreport could not be written: {type(e).__name__}: {e}")
    sys.exit(0 if advice["winner"] or advice.get("provisional") else 1)


if __name__ == "__main__":
    main()
