"""`python -m bench.project RESULTS... --devices 4,8,...,1024 [--cluster FILE|PROFILE] [--validate]
[--tokens N] [--usd-per-device-hour X | --prices FILE] [-o DIR]`: how a series scales past the
devices measured, what a point would cost, and how wrong such a prediction was where a
measurement exists.

The step-time model of one point (a rank's optimizer step; `components`, `step_time`):

    t = (compute + critical_comm) x (1 + s h(n)) + w h(n) syncs + optimizer + step_comm + (1 - o) dp_comm

* compute: the forward-backward of the rank's share of the FLOPs (bench/flops.py terms per
  token: blocks 72 H^2 + 12 H T each, output layer 6 V H; tp divides the blocks, a pipeline
  stage holds its layers) at the rate a 1-device run of the same work achieved at the same
  micro-batch size (its step time less its optimizer time: a calibration point, never a
  datasheet), times the co-location factor where the rank's neighbours compute at the same
  time (`colocated=k` runs of the plain model against its runs alone, at least 1; in full
  with dp/tp peers, over a pure pipeline's overlapping slots only: `concurrency`); a
  pipeline's critical path is sum_s tau_s / v + (m - 1/v) max_s tau_s (m micro-batches, v
  chunks per rank: the fill and drain pass every stage once);
* optimizer: the 1-device run's optimizer time (and its co-location factor) x the rank's
  share of the parameters (FSDP divides it by dp) (CPU runs measure it; on a GPU the step is
  timed whole and the optimizer stays inside `compute`);
* communication (bench/comm.py volumes) costed on the link each group crosses (bench/links.py:
  the probe's measured curve, or a cluster profile): tensor-parallel collectives and pipeline
  sends on every micro-batch's path (critical_comm); what nothing hides outside that path,
  FSDP's gathers and the pipeline's tied gradient (step_comm); what runs beside the backward,
  DDP's all-reduces and FSDP's reduce-scatters (dp_comm); `syncs`: the blocking collectives
  (tensor parallel's, FSDP's gathers, the tied gradient; a pipeline posts its sends
  asynchronously);
* three terms fitted to measured multi-device points (`Terms`): the overlap fraction o of
  dp_comm hidden behind the backward, the slowest rank's extra s per unit of critical-path
  time, and the wait w per blocking collective (each waits for the slowest rank and pays its
  runtime's dispatch); h(n) = sqrt(log2 n), 1 at n = 2, grows as the expected maximum of n draws.

A prediction's 95% interval is exp(+- t(0.975, df) x sigma) in log space, sigma^2 the fit's
residual variance (df = fitted points - 3) plus the between-run variance of one run (pooled over
the identities with several runs): it is an interval for a new run's throughput.

`--validate` leaves each series out in turn (here a series has one multi-device point; leave
one series out = leave one point out): o, s and w are fitted on the other series' multi-device
points, the 1-device calibration and the probe stay (they are not the held-out point), and the
held-out point is predicted. Errors are (predicted - measured) / measured of the median run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from bench import comm
from bench.comm import FSDP, Comm, Shape

REF_KEYS = ("hardware_label", "software_torch", "result_set", "accelerator", "shape", "precision", "seq_len",
            "activation_checkpointing", "compile", "data", "data_path", "threads", "oversubscribe")


def parse_shape(text: str) -> tuple[int, int, int, int, int]:
    """'L4 a4 H128 V512 T256' (bench.results.flatten's `shape`) -> (L, heads, H, V, T_max)."""
    m = re.fullmatch(r"L(\d+) a(\d+) H(\d+) V(\d+) T(\d+)", str(text))
    if not m:
        raise ValueError(f"unreadable shape {text!r}")
    return tuple(int(x) for x in m.groups())  # type: ignore[return-value]


def flop_shares(L: int, H: int, V: int, seq: int, tp: int, pp: int, vocab_parallel: bool = False) -> list[float]:
    """Per pipeline stage (first to last), the fraction of a 1-device step's FLOPs one rank of
    it computes: its layers' 72 H^2 + 12 H T per token (divided by tp) and, on the last stage,
    the output layer's 6 V H (split by tp where it is vocabulary-parallel: `strategy.vocab_parallel`,
    the default, as Megatron-LM's; whole on every tp rank with `vocab_parallel=false`). Sums to 1
    for tp = pp = 1."""
    from bench.flops import stage_layers
    per_layer, head = 72 * H * H + 12 * H * seq, 6 * V * H
    total = L * per_layer + head
    last = head / tp if vocab_parallel else head
    return [(len(r) * per_layer / tp + (last if i == pp - 1 else 0)) / total
            for i, r in enumerate(stage_layers(L, pp))]


def pipeline_time(taus: list[float], microbatches: int, chunks: int = 1) -> float:
    """Critical path of a pipeline of per-stage micro-batch times `taus`: the fill and drain
    pass every stage once (sum / v), the steady state paces at the slowest (m - 1/v) x max.
    One stage: m x tau."""
    return sum(taus) / chunks + (microbatches - 1 / chunks) * max(taus)


@dataclass(frozen=True)
class Point:
    """What the model needs of one measured or projected point."""
    L: int
    heads: int
    H: int
    V: int
    T_max: int
    seq: int
    batch_size: int  # per replica per micro-step
    grad_accum: int
    dp: int
    tp: int
    pp: int
    microbatches: int
    chunks: int
    data_parallel: str | None
    sequence_parallel: bool
    reshard: bool | None
    checkpointing: bool
    compute_bytes: int
    devices: int
    vocab_parallel: bool = False  # the tied matrix split by vocabulary over tp (strategy.vocab_parallel)
    megatron: bool = False  # Megatron-LM's implementation (bench.comm megatron=True; implies vocab_parallel)
    loss_chunks: int = 1  # the loss head's chunks of tokens per micro-batch (bench/loss.py)

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.microbatches

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.dp * self.grad_accum * self.seq


def loss_chunks(head: str, micro_batch: int, seq: int, chunk_tokens: int) -> int:
    """Chunks of `chunk_tokens` tokens (bench.spec.loss_chunk_tokens) the loss head takes per
    micro-batch (bench/loss.py): 1 for `plain`."""
    return -(-micro_batch * seq // chunk_tokens) if head == "chunked" else 1


def point_of(row: dict[str, Any]) -> Point:
    """A tidy row (bench.results.load) as a Point."""
    from bench.spec import LOSS_CHUNK_TOKENS
    L, heads, H, V, T = parse_shape(row["shape"])
    g = lambda k, d=None: d if row.get(k) is None or (isinstance(row.get(k), float) and math.isnan(row[k])) else row[k]  # noqa: E731
    return Point(L, heads, H, V, T, int(g("seq_len")), int(g("batch_size")), int(g("grad_accum", 1)),
                 int(g("degree_dp", 1)), int(g("degree_tp", 1)), int(g("degree_pp", 1)),
                 int(g("degree_microbatches", 1)), int(g("degree_stages_per_rank", 1)),
                 g("degree_data_parallel"), bool(g("degree_sequence_parallel", False)),
                 g("degree_reshard_after_forward"), g("activation_checkpointing") == "full",
                 4 if g("precision") == "fp32" else 2, int(g("devices")),
                 vocab_parallel=bool(g("degree_vocab_parallel", False)),
                 loss_chunks=loss_chunks(g("loss_head", "plain"), int(g("batch_size")) // int(g("degree_microbatches", 1)),
                                         # what the point recorded; results before the record: 1024
                                         int(g("seq_len")), int(g("loss_chunk_tokens", LOSS_CHUNK_TOKENS))))


@dataclass(frozen=True)
class Reference:
    """1-device calibration at one micro-batch size: the forward-backward time and the
    optimizer time of a step alone on the node (seconds, medians over runs), and the factors by
    which busy neighbours slow them (`contention`, `opt_contention`: 1 without co-located runs)."""
    fb_s: float
    opt_s: float
    runs: int
    source: str
    contention: float = 1.0
    opt_contention: float = 1.0


def concurrency(microbatches: int, stages: int, others: int = 1) -> float:
    """The share of a step in which a rank's neighbours compute at the same time: 1 without a
    pipeline or where the rank has data- or tensor-parallel peers (`others` > 1: they always
    compute with it); a pure pipeline's m + p - 1 slots have two or more stages busy in all but
    the first and the last (m + p - 3 of them) when m > 1; the naive split (m = 1) never."""
    if stages == 1 or others > 1:
        return 1.0
    return 0.0 if microbatches == 1 else (microbatches + stages - 3) / (microbatches + stages - 1)


def components(p: Point, ref: Reference, cluster) -> dict[str, float]:
    """The model's parts for point `p` (seconds per optimizer step): compute, critical_comm,
    optimizer, step_comm, dp_comm, and the count of blocking collectives `syncs` (see the module
    docstring), on `cluster` (bench.links.Cluster)."""
    shares = flop_shares(p.L, p.H, p.V, p.seq, p.tp, p.pp, p.vocab_parallel)
    s = Shape(p.L, p.H, p.V, p.T_max, p.seq, p.micro_batch, p.microbatches, p.grad_accum, p.chunks)
    def cost(c: Comm) -> float:
        link, nics = cluster.link_for(c.stride, c.link_ranks or c.ranks)
        return c.count * link.time_s(c.op, c.size_bytes / nics, c.ranks)

    worst: dict[str, float] = {}
    taus, taus0 = [], []
    fb = ref.fb_s * (1 + (ref.contention - 1) * concurrency(p.microbatches, p.pp, p.dp * p.tp))
    syncs = 0.0
    whole = comm.rank_params(p.L, p.H, p.V, p.T_max, 1, 1, 0)
    for stage in range(p.pp):
        comms = comm.step_comms(s, p.dp, p.tp, p.pp, p.data_parallel, p.sequence_parallel, p.reshard,
                                p.checkpointing, p.compute_bytes, stage, megatron=p.megatron,
                                vocab_parallel=p.vocab_parallel, loss_chunks=p.loss_chunks)
        per_micro = sum(cost(c) for c in comms if c.per_microbatch) / (p.microbatches * p.grad_accum)
        syncs = max(syncs, sum(c.count for c in comms if c.blocking))
        taus0.append(fb * shares[stage])
        taus.append(taus0[-1] + per_micro)
        params = comm.rank_params(p.L, p.H, p.V, p.T_max, p.tp, p.pp, stage, p.vocab_parallel) / whole
        part = {"optimizer": ref.opt_s * ref.opt_contention * params / (p.dp if p.data_parallel == FSDP else 1),
                "dp_comm": sum(cost(c) for c in comms if c.overlappable),
                "step_comm": sum(cost(c) for c in comms if not c.overlappable and not c.per_microbatch)}
        if not worst or sum(part.values()) > sum(worst.values()):
            worst = part

    def path(ts: list[float]) -> float:
        return (pipeline_time(ts, p.microbatches, p.chunks) if p.pp > 1 else p.microbatches * ts[0]) * p.grad_accum

    compute = path(taus0)
    return {"compute": compute, "critical_comm": path(taus) - compute, **worst, "syncs": syncs}


def h(n: int) -> float:
    """The slowest-rank scale: 0 for one rank, sqrt(log2 n) otherwise (1 at n = 2)."""
    return math.sqrt(math.log2(n)) if n > 1 else 0.0


@dataclass(frozen=True)
class Terms:
    """The fitted terms: `overlap` o (0..1) of the data-parallel traffic hidden behind the
    backward; `slowest` s, the slowest rank's extra per unit of critical-path time; `sync_s` w,
    the expected wait per blocking collective (tensor parallel's, FSDP's gathers, the tied gradient:
    each waits for the slowest rank and pays its runtime's dispatch); both waits scale by h(n)."""
    overlap: float = 0.0
    slowest: float = 0.0
    sync_s: float = 0.0


def step_time(c: dict[str, float], n: int, t: Terms) -> float:
    """The model's step time (seconds) from `components` and the fitted `Terms`:
    (compute + critical_comm) x (1 + s h(n)) + w h(n) syncs + optimizer + step_comm + (1 - o) dp_comm
    (step_comm: what nothing hides outside the micro-batches' path: FSDP's gathers, the tied gradient)."""
    return ((c["compute"] + c["critical_comm"]) * (1 + t.slowest * h(n)) + t.sync_s * h(n) * c["syncs"]
            + c["optimizer"] + c.get("step_comm", 0.0) + (1 - t.overlap) * c["dp_comm"])


O_GRID = [i / 20 for i in range(21)]
S_GRID = [i / 100 for i in range(61)]
W_GRID = [i * 0.25e-3 for i in range(81)]  # 0 .. 20 ms per blocking collective


def fit_terms(items: list[tuple[dict[str, float], int, float]]) -> tuple[Terms, float, int]:
    """(terms, residual sd in log space, points) minimising the squared log error of `items`
    = [(components, devices, measured step time s)] over a grid (o 0..1, s 0..0.6, w 0..20 ms).
    No multi-device point: zero terms, sd unknown (nan). The sd has points - 3 degrees of freedom."""
    import numpy as np
    if not items:
        return Terms(), float("nan"), 0
    g = lambda k: np.array([c.get(k, 0.0) for c, _, _ in items])[:, None, None, None]  # noqa: E731
    hn = np.array([h(n) for _, n, _ in items])[:, None, None, None]
    t = np.array([m for _, _, m in items])[:, None, None, None]
    O, S, W = (np.array(x)[None, :, None, None] if k == 0 else np.array(x)[None, None, :, None] if k == 1
               else np.array(x)[None, None, None, :] for k, x in enumerate((O_GRID, S_GRID, W_GRID)))
    pred = ((g("compute") + g("critical_comm")) * (1 + S * hn) + W * hn * g("syncs") + g("optimizer") + g("step_comm")
            + (1 - O) * g("dp_comm"))
    err = (np.log(pred) - np.log(t)) ** 2
    e = err.sum(axis=0)
    k = np.unravel_index(int(np.argmin(e)), e.shape)
    terms = Terms(O_GRID[k[0]], S_GRID[k[1]], W_GRID[k[2]])
    dof = len(items) - 3
    return terms, (math.sqrt(float(e[k]) / dof) if dof > 0 else float("nan")), len(items)


# ---------------------------------------------------------------- from result files

def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _key(row: dict[str, Any]) -> tuple:
    from bench.identity import _get
    return tuple(_get(row, k) for k in REF_KEYS)


def references(ok) -> dict[tuple, list[dict[str, Any]]]:
    """1-device ok runs without accumulation (every degree 1), by (REF_KEYS values, batch)."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in ok.to_dict("records"):
        if int(r.get("devices") or 0) == 1 and int(_num(r.get("grad_accum")) or 1) == 1 and \
                all(int(_num(r.get(f"degree_{k}")) or 1) == 1 for k in ("dp", "tp", "pp")):
            out.setdefault(_key(r) + (int(r["batch_size"]),), []).append(r)
    return out


def _fb_opt(runs: list[dict[str, Any]]) -> tuple[float, float]:
    """Median forward-backward and optimizer seconds of a step over `runs` (the window's mean
    step, as tokens/s counts it, less the optimizer's part)."""
    import statistics
    steps = [r["tokens_per_step"] / r["tokens_per_s"] for r in runs]
    opt = statistics.median(_num(r.get("optimizer_time_s")) or 0.0 for r in runs)
    return statistics.median(steps) - opt, opt


def reference_for(row: dict[str, Any], micro_batch: int, refs, ranks_per_node: int = 1) -> Reference | None:
    """The calibration of `row` at `micro_batch`, from 1-device runs of the same work:

    * the base: the series' own strategy on 1 device when measured (its wrapper's cost
      included), else the fastest strategy's (the plain model's, normally);
    * co-location: a rank shares its node with `ranks_per_node - 1` others computing at once
      (memory bandwidth, caches); runs with `colocated=k` (k copies at once, k <= ranks_per_node,
      the largest measured) give the factor by which that slows the fastest strategy's
      forward-backward and optimizer, applied to the base. Without them the factor is 1 (the
      fitted slowest-rank term then carries the contention).
    None when there is no 1-device run at that micro-batch."""
    import statistics
    runs = refs.get(_key(row) + (micro_batch,), [])
    alone = [r for r in runs if int(_num(r.get("colocated")) or 1) == 1]
    if not alone:
        return None
    by: dict[tuple, list[dict[str, Any]]] = {}
    for r in alone:
        by.setdefault((r["strategy"], r.get("strategy_options")), []).append(r)
    fastest_key = min(by, key=lambda k: statistics.median(x["tokens_per_step"] / x["tokens_per_s"] for x in by[k]))
    base_key = (row["strategy"], row.get("strategy_options"))
    base = by.get(base_key) or by[fastest_key]
    fb, opt = _fb_opt(base)
    # co-located copies exist of a layout without a mesh (the plain model): its own runs alone
    # are the factor's denominator, whichever strategy happened to be fastest
    colo = [r for r in runs if 1 < int(_num(r.get("colocated")) or 1) <= ranks_per_node]
    cos = sorted({int(_num(r.get("colocated")) or 1) for r in colo})
    note = ""
    if cos:
        k = cos[-1]
        kind = next((r["strategy"], r.get("strategy_options")) for r in colo if int(_num(r.get("colocated")) or 1) == k)
        fb_k, opt_k = _fb_opt([r for r in colo if (r["strategy"], r.get("strategy_options")) == kind
                               and int(_num(r.get("colocated")) or 1) == k])
        if kind not in by:
            return Reference(fb, opt, len(base), f"{base[0]['strategy']} on 1 device, batch {micro_batch}, "
                                                 f"{len(base)} run(s), co-located runs without runs alone")
        fb_1, opt_1 = _fb_opt(by[kind])
        # busy neighbours never speed a rank up: a ratio below 1 is the runs' noise
        cf, co = max(1.0, fb_k / fb_1), max(1.0, opt_k / opt_1 if opt_1 > 0 else 1.0)
        note = f", x{cf:.2f} co-located with {k - 1} other(s)"
        return Reference(fb, opt, len(base), f"{base[0]['strategy']} on 1 device, batch {micro_batch}, "
                                             f"{len(base)} run(s){note}", cf, co)
    if ranks_per_node > 1:
        note = ", no co-located calibration"
    return Reference(fb, opt, len(base), f"{base[0]['strategy']} on 1 device, batch {micro_batch}, "
                                         f"{len(base)} run(s){note}")


def run_sigma(ok) -> tuple[float, int]:
    """Between-run sd of log tokens/s, pooled over the identities with several runs; (sd, dof)."""
    ss, dof = 0.0, 0
    for _, g in ok.groupby("identity"):
        if len(g) > 1:
            logs = [math.log(v) for v in g["tokens_per_s"]]
            mean = sum(logs) / len(logs)
            ss += sum((x - mean) ** 2 for x in logs)
            dof += len(logs) - 1
    return (math.sqrt(ss / dof) if dof else float("nan")), dof


@dataclass
class Measured:
    """One multi-device identity: its first row, its runs' tokens/s, the model's components."""
    row: dict[str, Any]
    tokens_per_s: list[float]
    point: Point
    parts: dict[str, float]

    @property
    def median(self) -> float:
        import statistics
        return statistics.median(self.tokens_per_s)

    @property
    def step_s(self) -> float:
        return self.point.tokens_per_step / self.median


def measured_points(ok, refs, cluster) -> tuple[list[Measured], list[str]]:
    """Every multi-device identity with a calibration, and a line for each one without."""
    out, missing = [], []
    for _, g in ok[ok["devices"] > 1].groupby("identity", sort=False):
        row = g.iloc[0].to_dict()
        p = point_of(row)
        ref = reference_for(row, p.micro_batch, refs, int(_num(row.get("degree_devices_per_node")) or p.devices))
        if ref is None:
            missing.append(f"{label(row)} on {p.devices} devices: no 1-device run at batch {p.micro_batch} "
                           f"(measure one: python -m bench.run size={row['size']} strategy=single batch_size={p.micro_batch} "
                           f"seq_len={p.seq} precision={row['precision']})")
            continue
        out.append(Measured(row, list(g["tokens_per_s"]), p, components(p, ref, cluster)))
    return out, missing


def label(row: dict[str, Any]) -> str:
    from bench.figures import variant
    return f"{row['size']} {variant(row)} b={int(row['batch_size'])}"


def interval(pred_tps: float, sigma: float, dof: int, level: float = 0.95) -> tuple[float, float]:
    """(lo, hi) tokens/s: exp(+- t x sigma) around the prediction; (nan, nan) when sigma is unknown."""
    from bench.stats import t_quantile
    if not math.isfinite(sigma) or dof < 1:
        return float("nan"), float("nan")
    k = t_quantile(0.5 + level / 2, dof) * sigma
    return pred_tps * math.exp(-k), pred_tps * math.exp(k)


def validate(points: list[Measured], sigma_run: float) -> list[dict[str, Any]]:
    """Leave one series out: fit o and s on the other series' points, predict the held-out
    one; one row per held-out point (validation.csv's columns and the fit's terms)."""
    from bench import identity
    rows = []
    for i, m in enumerate(points):
        ser = identity.series(m.row)
        held_in = [(q.parts, q.point.devices, q.step_s) for q in points if identity.series(q.row) != ser]
        terms, sd, n = fit_terms(held_in)
        pred = m.point.tokens_per_step / step_time(m.parts, m.point.devices, terms)
        sigma = math.sqrt((sd if math.isfinite(sd) else 0.0) ** 2 + (sigma_run if math.isfinite(sigma_run) else 0.0) ** 2)
        lo, hi = interval(pred, sigma if math.isfinite(sd) else float("nan"), max(n - 3, 1))
        rows.append({"series": label(m.row), "devices": m.point.devices, "measured": m.median, "predicted": pred,
                     "lo": lo, "hi": hi, "error": pred / m.median - 1, "runs": len(m.tokens_per_s),
                     "runs_inside": sum(lo <= v <= hi for v in m.tokens_per_s),
                     "overlap": terms.overlap, "slowest_rank": terms.slowest, "sync_ms": terms.sync_s * 1e3,
                     "fit_points": n, "left_out": "series"})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Median and max absolute error, and the share of runs inside their 95% interval."""
    import statistics
    errs = [abs(r["error"]) for r in rows]
    runs = sum(r["runs"] for r in rows)
    return {"points": len(rows), "median_abs_error": statistics.median(errs) if errs else float("nan"),
            "max_abs_error": max(errs) if errs else float("nan"),
            "runs": runs, "inside": (sum(r["runs_inside"] for r in rows) / runs) if runs else float("nan")}


# ---------------------------------------------------------------- projection

def projected_spec(row: dict[str, Any], devices: int):
    """The point of `row`'s series on `devices` devices, planned as bench.run plans it (its
    validity, batch and memory): a RunSpec, or InvalidConfig naming why it cannot run. The
    projected machine is one big node with the devices it needs."""
    from omegaconf import OmegaConf
    from bench.config import BenchConfig, register
    from bench.plan import Host, make_spec
    from bench.results import read_result
    register()
    cfg_d = dict(read_result(row["path"])["config"])
    cfg_d.pop("precision_requested", None)
    # results before strategy.vocab_parallel replicated the output layer: project them as they ran
    cfg_d["strategy"] = {"vocab_parallel": False, **(cfg_d.get("strategy") or {})}
    cfg_d.update(devices=devices, oversubscribe=False, launcher={**cfg_d.get("launcher", {}), "name": "local", "nodes": 1})
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BenchConfig), cfg_d))
    threads = int(cfg_d.get("cpu_threads_per_device") or 1)
    cap = int(_num(row.get("capacity_bytes")) or 2**40)
    host = Host(cores=devices * threads, gpus=devices if row["accelerator"] == "cuda" else 0, gpu_bf16=True,
                gpu_memory_bytes=(cap,) * devices, ram_bytes=2**50, ram_available_bytes=2**50)
    return make_spec(cfg, host)


def point_of_spec(spec) -> Point:
    from bench.spec import LOSS_CHUNK_TOKENS
    lay, s = spec.layout, spec.shape
    pipe = lay.pipeline
    return Point(s.n_layer, s.n_head, s.n_embd, s.vocab_size, s.block_size, spec.seq_len, spec.batch_size,
                 spec.grad_accum, lay.dp, lay.tp, lay.pp, pipe.microbatches if pipe else 1,
                 pipe.stages_per_rank if pipe else 1, lay.data_parallel.value if lay.data_parallel else None,
                 lay.sequence_parallel, lay.reshard_after_forward, spec.activation_checkpointing.value == "full",
                 4 if spec.precision.value == "fp32" else 2, spec.devices, vocab_parallel=lay.vocab_parallel,
                 loss_chunks=loss_chunks(spec.loss_head, spec.batch_size // (pipe.microbatches if pipe else 1),
                                         spec.seq_len, spec.loss_chunk_tokens or LOSS_CHUNK_TOKENS))


def project(ok, devices: list[int], cluster, refs, terms: Terms, sigma: float, dof: int,
            tokens: float | None = None, price=None) -> list[dict[str, Any]]:
    """projection.csv's rows: every series with a calibration, at the measured device counts
    and at `devices`. `price(row) -> (usd per device-hour, source) | None`."""
    import statistics
    from bench import flops
    from bench.memory import predict_memory
    from bench.plan import InvalidConfig
    out = []
    for ser, g in ok.groupby("series", sort=False):
        first = g.sort_values("devices").iloc[0].to_dict()
        if int(_num(first.get("colocated")) or 1) > 1:  # a calibration, not a scaling series
            continue
        counts = sorted(set(int(d) for d in g["devices"]) | set(devices))
        for n in counts:
            runs = g[g["devices"] == n]
            row = runs.iloc[0].to_dict() if len(runs) else first
            rec: dict[str, Any] = {"series": label(first), "strategy": first["strategy"], "devices": n,
                                   "measured": statistics.median(runs["tokens_per_s"]) if len(runs) else None,
                                   "measured_runs": len(runs)}
            try:
                spec = projected_spec(row, n)
            except InvalidConfig as e:
                out.append({**rec, "note": f"invalid at {n} devices: {e}"})
                continue
            p = point_of_spec(spec)
            ref = reference_for(first, p.micro_batch, refs, min(n, cluster.devices_per_node))
            if ref is None:
                out.append({**rec, "note": f"no 1-device calibration at batch {p.micro_batch}"})
                continue
            parts = components(p, ref, cluster)
            t = step_time(parts, n, terms)
            tps = p.tokens_per_step / t
            lo, hi = interval(tps, sigma, dof)
            fpt = flops.flops_per_token(p.L, p.H, p.V, p.seq)
            peak = _num(first.get("peak_flops_per_s")) or _num(first.get("peak_flops_measured_per_s"))
            mem = predict_memory(spec).total_bytes + int(_num(first.get("mem_baseline_bytes")) or 0) \
                if spec.accelerator.value == "cpu" else predict_memory(spec).total_bytes
            tpj = [v for v in (runs.get("tokens_per_j") if "tokens_per_j" in runs else []) if _num(v)]
            rec.update(tokens_per_s=tps, lo=lo, hi=hi, step_time_s=t, mfu=fpt * tps / (n * peak) if peak else None,
                       mfu_peak=("datasheet" if _num(first.get("peak_flops_per_s")) else "measured matmul"),
                       mem_bytes=mem, mem_source="bench.memory prediction" + (
                           " + measured runtime baseline (RSS)" if spec.accelerator.value == "cpu" else ""),
                       dp=p.dp, tp=p.tp, pp=p.pp, **{f"{k}_s": v for k, v in parts.items()},
                       # in-sample: the measured multi-device points fit the terms (validation.csv is held out)
                       in_sample_error=(tps / rec["measured"] - 1) if rec["measured"] else None,
                       tokens_per_j=statistics.median(tpj) if tpj else None,
                       energy_source="measured (NVML, GPU only, host excluded)" if tpj else "unavailable",
                       note="measured" if len(runs) else "projected")
            rec.update(cost(tps, lo, hi, n, tokens, price(first) if price else None))
            out.append(rec)
    return out


def cost(tps: float, lo: float, hi: float, devices: int, tokens: float | None,
         price: tuple[float, str] | None) -> dict[str, Any]:
    """Time and money at `tps` tokens/s (interval lo..hi) on `devices` devices:
    hours_to_train = tokens / tps / 3600; usd_per_million_tokens = price x devices x 1e6 /
    (tps x 3600); usd_to_train = price x devices x hours. `_lo`/`_hi`: the same at the
    interval's ends (the slow end costs more)."""
    out: dict[str, Any] = {}
    both = [("", tps), ("_lo", hi), ("_hi", lo)]  # the cheap end is the fast one
    if tokens:
        for suf, v in both:
            out[f"hours_to_train{suf}"] = tokens / v / 3600 if v and math.isfinite(v) else None
    if price:
        usd, src = price
        out["usd_per_device_hour"], out["price_source"] = usd, src
        for suf, v in both:
            ok_v = v and math.isfinite(v)
            out[f"usd_per_million_tokens{suf}"] = usd * devices * 1e6 / (v * 3600) if ok_v else None
            if tokens:
                out[f"usd_to_train{suf}"] = usd * devices * tokens / (v * 3600) if ok_v else None
    return out


# ---------------------------------------------------------------- the command

def parse_count(text: str, what: str) -> float:
    """'450e9', '450B', '2T', '1.5M' -> a number; ValueError names the flag."""
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kKMBGT]?)\s*", str(text))
    if not m:
        raise ValueError(f"{what} {text}: expected a number such as 300e9 or 300B")
    return float(m.group(1)) * {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}[m.group(2)]


def load_prices(path: str | None, flat: float | None):
    """price(row) -> (usd per device-hour, source) | None. A file (YAML) maps hardware labels
    (or "*") to {usd_per_device_hour, source, date}: nothing without a source and a date."""
    if flat is not None:
        if not flat > 0:
            raise ValueError(f"--usd-per-device-hour {flat}: a price must be above 0")
        return lambda row: (flat, "--usd-per-device-hour (given on the command line)")
    if path is None:
        return None
    import yaml
    try:
        with open(path) as f:
            d = yaml.safe_load(f) or {}
    except OSError as e:
        raise ValueError(f"--prices {path}: {e.strerror}") from None
    for k, v in d.items():
        if not isinstance(v, dict) or any(x not in v for x in ("usd_per_device_hour", "source", "date")):
            raise ValueError(f"--prices {path}: entry {k!r} needs usd_per_device_hour, source and date")
        if not float(v["usd_per_device_hour"]) > 0:
            raise ValueError(f"--prices {path}: entry {k!r}: usd_per_device_hour must be above 0")

    def price(row):
        v = d.get(row.get("hardware_label")) or d.get("*")
        return (float(v["usd_per_device_hour"]), f"{v['source']} ({v['date']})") if v else None
    return price


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.project", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="result folders or files: 1-device calibration runs, multi-device "
                                               "runs, and a bench.probe result")
    ap.add_argument("--devices", default="", help="device counts to project to, e.g. 4,8,16,...,1024")
    ap.add_argument("--cluster", help="a cluster YAML file or profile name (conf/cluster/); default: the probed link "
                                      "for every group")
    ap.add_argument("--devices-per-node", type=int, default=None,
                    help="without --cluster: devices per node, which the co-location calibration is matched to "
                         "(default: the most devices measured on one node)")
    ap.add_argument("--validate", action="store_true", help="leave each series out, predict it, show the errors")
    ap.add_argument("--tokens", help="tokens to train, e.g. 300B: hours (and dollars) to train")
    ap.add_argument("--usd-per-device-hour", type=float, help="one price for every device")
    ap.add_argument("--prices", help="YAML: hardware label (or '*') -> {usd_per_device_hour, source, date}")
    ap.add_argument("-o", "--out", default=None, help="output folder (default reports/projection-<time>)")
    a = ap.parse_args(argv)
    try:
        out = run(a)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"\nwritten: {', '.join(out)}")


def run(a, say=print) -> list[str]:
    import datetime as dt
    import pandas as pd
    from bench import figures, identity
    from bench.links import Link, load_cluster, probe_cluster
    from bench.results import load, load_probes
    for p in a.results:
        if not os.path.exists(p):
            raise ValueError(f"{p}: no such file or folder")
    try:
        devices = sorted({int(x) for x in a.devices.split(",") if x.strip()}) if a.devices else []
    except ValueError:
        raise ValueError(f"--devices {a.devices}: expected counts like 4,8,16") from None
    if any(d < 1 for d in devices):
        raise ValueError("--devices: counts must be at least 1")
    tokens = parse_count(a.tokens, "--tokens") if a.tokens else None
    price = load_prices(a.prices, a.usd_per_device_hour)
    df = load(a.results)
    if df.empty:
        raise ValueError(f"no benchmark results under {' '.join(a.results)} (a probe alone is not enough): measure "
                         "1-device and multi-device points there with python -m bench.run")
    ok = figures.ok_runs(identity.with_keys(df))
    if ok.empty:
        raise ValueError("no ok benchmark runs to calibrate on")
    probes = load_probes(a.results)
    link = Link.from_probe(probes[-1]) if probes else None
    per_node = a.devices_per_node or int(max(_num(v) or 1 for v in ok.get("degree_devices_per_node", ok["devices"])))
    if link is None:
        raise ValueError("no bench.probe result among the results: run python -m bench.probe devices=2 "
                         "results_root=<the same folder> (the measured points' messages are costed on it)")
    measured_on = probe_cluster(link, per_node)  # the measured runs talked over the probed link
    cluster = load_cluster(a.cluster, link) if a.cluster else measured_on
    say(f"[project] measured points costed on: {measured_on.source}")
    if a.cluster:
        say(f"[project] projection costed on: {cluster.source} ({cluster.devices_per_node} devices per node); "
            f"compute stays at the measured devices' rate ({', '.join(sorted(set(map(str, ok['hardware_label']))))})")
    refs = references(ok)
    points, missing = measured_points(ok, refs, measured_on)
    for line in missing:
        say(f"[project] skipped {line}")
    sigma_run, _ = run_sigma(ok)
    terms, sd, n_fit = fit_terms([(m.parts, m.point.devices, m.step_s) for m in points])
    sigma = math.sqrt((sd if math.isfinite(sd) else 0) ** 2 + (sigma_run if math.isfinite(sigma_run) else 0) ** 2)
    say(f"[project] fitted on {n_fit} multi-device point(s): overlap o = {terms.overlap:.2f}, slowest-rank "
        f"s = {terms.slowest:.2f}, wait per blocking collective w = {terms.sync_s * 1e3:.2f} ms; "
        f"residual sd {sd:.3f}, between-run sd {sigma_run:.3f} (log tokens/s)")
    out_dir = a.out or os.path.join("reports", f"projection-{dt.datetime.now():%Y-%m-%d_%H-%M-%S}")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    val = None
    if a.validate:
        if len({identity.series(m.row) for m in points}) < 2:
            raise ValueError("--validate needs multi-device points of at least two series (one is left out, "
                             "the others fit the model's terms); measure more strategies at devices=2")
        val = pd.DataFrame(validate(points, sigma_run))
        path = os.path.join(out_dir, "validation.csv")
        val.to_csv(path, index=False)
        written.append(path)
        say(validation_text(val))
    proj = pd.DataFrame(project(ok, devices, cluster, refs, terms, sigma if math.isfinite(sd) else float("nan"),
                                max(n_fit - 3, 1), tokens, price))
    path = os.path.join(out_dir, "projection.csv")
    proj.to_csv(path, index=False)
    written.append(path)
    say(projection_text(proj))
    meta = {"overlap": terms.overlap, "slowest_rank": terms.slowest, "sync_ms": terms.sync_s * 1e3, "residual_sd": sd, "run_sd": sigma_run, "fit_points": n_fit,
            "links": cluster.source, "tokens": tokens, "validated": summary(val.to_dict("records")) if val is not None else None}
    with open(os.path.join(out_dir, "projection.json"), "w") as f:
        json.dump(meta, f, indent=1, default=str)
    written.append(os.path.join(out_dir, "projection.json"))
    from bench.figures_projection import write_pdf
    written.append(write_pdf(os.path.join(out_dir, "projection.pdf"), proj, val, probes, meta))
    return written


def validation_text(val) -> str:
    lines = ["", "held-out validation (leave one series out; tokens/s of the median run):",
             f"  {'series':<28} {'devices':>7} {'measured':>10} {'predicted':>10} {'95% interval':>21} {'error':>7} "
             f"{'runs in it':>10}"]
    for r in val.to_dict("records"):
        lines.append(f"  {r['series']:<28} {r['devices']:>7} {r['measured']:>10,.0f} {r['predicted']:>10,.0f} "
                     f"{r['lo']:>10,.0f}-{r['hi']:<10,.0f} {r['error']:>+7.1%} {r['runs_inside']:>8}/{r['runs']}")
    sm = summary(val.to_dict("records"))
    lines.append(f"  median |error| {sm['median_abs_error']:.1%}, max {sm['max_abs_error']:.1%} over {sm['points']} "
                 f"points; {sm['inside']:.0%} of {sm['runs']} held-out runs inside their 95% interval")
    return "\n".join(lines)


def projection_text(proj) -> str:
    lines = ["", "projection: tokens/s predicted (95% interval), MFU, predicted memory per device, the measured "
                 "median where runs exist; hours and dollars to train from the predicted tokens/s",
             f"  {'series':<28} {'devices':>6}  {'tokens/s':>12} {'(interval)':<20} {'MFU':<9} {'memory':>16}  "
             "measured, time, cost"]
    said = set()
    for r in proj.to_dict("records"):
        if _num(r.get("tokens_per_s")) is None:
            if r["series"] not in said:  # the first reason a series stops; the CSV has every row
                lines.append(f"  {r['series']:<28} {r['devices']:>6}  {r.get('note')}")
            said.add(r["series"])
            continue
        extra = ""
        if _num(r.get("hours_to_train")):
            extra += f"  {r['hours_to_train']:,.1f} h"
        if _num(r.get("usd_to_train")):
            extra += f"  ${r['usd_to_train']:,.0f}"
        elif _num(r.get("usd_per_million_tokens")):
            extra += f"  ${r['usd_per_million_tokens']:,.2f}/Mtok"
        meas = f"measured {r['measured']:,.0f}" if _num(r.get("measured")) else ""
        mfu = f"MFU {r['mfu']:.2f}" if _num(r.get("mfu")) else ""
        lines.append(f"  {r['series']:<28} {r['devices']:>6}  {r['tokens_per_s']:>12,.0f} "
                     f"({_num(r['lo']) or float('nan'):,.0f}-{_num(r['hi']) or float('nan'):,.0f})  {mfu:<9} "
                     f"{r['mem_bytes'] / 2**30:7.2f} GiB/device  {meas}{extra}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
