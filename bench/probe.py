"""`python -m bench.probe devices=N [accelerator=... launcher=... min_bytes=... max_bytes=...]`:
the interconnect, measured on the process groups a benchmark point uses.

The ranks are launched exactly as a point's (bench/launch.py, bench.worker's join: gloo on
CPUs, NCCL on GPUs, across nodes with `launcher=multinode`) and time all-reduce, all-gather,
reduce-scatter and a ring send/recv over message sizes from `min_bytes` to `max_bytes`
(powers of two). The figures follow nccl-tests (doc/PERFORMANCE.md):

    S      the message size in bytes: the all-reduce buffer; all-gather's output and
           reduce-scatter's input (n x the per-rank part); what each rank sends (send/recv)
    algbw  = S / t
    busbw  = algbw x 2(n-1)/n (all-reduce), x (n-1)/n (all-gather, reduce-scatter), x 1 (send/recv)

busbw is comparable to a link's peak whatever n is. Per collective an alpha-beta model
t(S) = alpha + S_bus / beta (S_bus = S x the busbw factor, so beta is in busbw terms, B/s) is
fitted by least squares on relative error (the sizes span five orders of magnitude), with the
fit's error (relative RMS and max over the sizes) and the standard errors of alpha and beta.

Each size: `warmup` untimed operations, then `iters_for(size)` timed ones, each synchronised
(CUDA events on a GPU); a rank's per-operation times are reduced with MAX across ranks (the
slowest rank counts, as for a step) and the median is reported. With several nodes the
intra-node groups are probed too (`scope` intra beside world).

The result is a result.json like any other (status, config, hardware label, software) with
`kind: probe` and the table under `metrics.probe`; bench.results.load leaves probes out of
the benchmark rows and `load_probes` reads them (the report's bandwidth page, bench.project).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import config, hardware

OPS = ("all_reduce", "all_gather", "reduce_scatter", "sendrecv")
MIN_ITERS, MAX_ITERS = 3, 20
ITER_BYTES = 1 << 26  # timed iterations per size: about this many bytes in all, between MIN and MAX
PROBE_CSV = "probe.csv"


# ---------------------------------------------------------------- pure arithmetic (nccl-tests)

def bus_factor(op: str, n: int) -> float:
    """busbw / algbw for `op` over `n` ranks (nccl-tests doc/PERFORMANCE.md)."""
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter"):
        return (n - 1) / n
    if op in ("sendrecv", "broadcast", "reduce"):
        return 1.0
    raise ValueError(f"unknown collective {op!r}; one of {', '.join(OPS)}")


def algbw(size_bytes: float, t_s: float) -> float:
    """Algorithm bandwidth, B/s: S / t."""
    return size_bytes / t_s


def busbw(op: str, size_bytes: float, t_s: float, n: int) -> float:
    """Bus bandwidth, B/s: algbw x the collective's factor."""
    return algbw(size_bytes, t_s) * bus_factor(op, n)


def message_sizes(min_bytes: int, max_bytes: int) -> list[int]:
    """Powers of two from `min_bytes` up to `max_bytes` (both rounded to a power of two, at
    least 4 bytes: one fp32 element)."""
    lo = 1 << max(2, math.ceil(math.log2(max(min_bytes, 4))))
    hi = 1 << max(2, math.floor(math.log2(max(max_bytes, 4))))
    return [1 << k for k in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]


def iters_for(size_bytes: int) -> int:
    """Timed operations at one size: about ITER_BYTES in all, at least MIN_ITERS, at most
    MAX_ITERS. A function of the size alone: every rank must run the same count."""
    return max(MIN_ITERS, min(MAX_ITERS, ITER_BYTES // max(size_bytes, 1)))


@dataclass(frozen=True)
class Fit:
    """t(S) = alpha_s + S_bus / beta_bytes_per_s, fitted on relative error. `rel_rms`,
    `rel_max`: the fit's error over the points it was fitted on (|t_fit / t - 1|);
    `alpha_se_s`, `beta_se_bytes_per_s`: standard errors (delta method for beta)."""
    alpha_s: float
    beta_bytes_per_s: float
    alpha_se_s: float
    beta_se_bytes_per_s: float
    rel_rms: float
    rel_max: float
    points: int

    def time_s(self, bus_bytes: float) -> float:
        return self.alpha_s + bus_bytes / self.beta_bytes_per_s


def fit_alpha_beta(bus_bytes, times_s) -> Fit:
    """Least squares of t = alpha + S_bus * g (g = 1/beta), each point weighted by 1/t (so the
    relative error is minimised: small messages count as much as large ones). Needs two
    sizes or more; alpha is clipped at 0 (a negative latency is noise at small sizes)."""
    import numpy as np
    x, t = np.asarray(bus_bytes, float), np.asarray(times_s, float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("fit_alpha_beta needs at least two distinct message sizes")
    w = 1.0 / t
    A = np.stack([w, x * w], axis=1)
    coef, *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    alpha, g = float(coef[0]), float(coef[1])
    if alpha < 0:  # refit with alpha = 0
        alpha, g = 0.0, float(np.sum(x * w * w * t) / np.sum((x * w) ** 2))
    if g <= 0:
        raise ValueError("fit_alpha_beta: time does not grow with size; no bandwidth to fit")
    resid = (alpha + g * x) / t - 1.0
    dof = max(len(x) - 2, 1)
    s2 = float(np.sum(resid ** 2) / dof)
    cov = s2 * np.linalg.pinv(A.T @ A)
    a_se, g_se = math.sqrt(max(cov[0, 0], 0.0)), math.sqrt(max(cov[1, 1], 0.0))
    return Fit(alpha, 1.0 / g, a_se, g_se / g ** 2, float(np.sqrt(np.mean(resid ** 2))),
               float(np.max(np.abs(resid))), len(x))


def fit_rows(rows: list[dict[str, Any]], min_bytes: int = 0) -> dict[str, dict[str, Any]]:
    """Per (scope, op): the alpha-beta fit of the table's rows (those of at least `min_bytes`)."""
    out: dict[str, dict[str, Any]] = {}
    for key in sorted({(r["scope"], r["op"]) for r in rows}):
        pts = [r for r in rows if (r["scope"], r["op"]) == key and r["size_bytes"] >= min_bytes]
        try:
            fit = dataclasses.asdict(fit_alpha_beta([r["size_bytes"] * r["bus_factor"] for r in pts],
                                                    [r["time_s"] for r in pts]))
        except ValueError as e:  # too few sizes, or noise with no trend: the table stands without a fit
            fit = {"error": str(e)}
        out[f"{key[0]}/{key[1]}"] = {"scope": key[0], "op": key[1], "ranks": pts[0]["ranks"], **fit}
    return out


# ---------------------------------------------------------------- in each rank

def probe_rank(spec, out_dir: str) -> dict[str, Any] | None:
    """Join the group as a benchmark point's rank does, time every op and size; rank 0
    returns {'rows': [...], 'fits': {...}, 'hosts': [...]}. `spec.seq_len`'s place is taken
    by the probe's own sizes, passed in the environment (bench.probe sets them)."""
    from bench.worker import _join, _ranks, _reported
    from bench.protocol import mark_rank0
    rank, local_rank, world = _ranks()
    if rank == 0:
        mark_rank0(out_dir)
    with _reported(out_dir, rank):
        proc = _join(spec, rank, local_rank, world)
        sizes = message_sizes(int(os.environ[MIN_ENV]), int(os.environ[MAX_ENV]))
        return _probe(proc, sizes, spec.devices_per_node, spec.nodes)


MIN_ENV, MAX_ENV = "SCALEBENCH_PROBE_MIN_BYTES", "SCALEBENCH_PROBE_MAX_BYTES"


def _probe(proc, sizes: list[int], per_node: int, nodes: int) -> dict[str, Any] | None:
    import socket
    import torch
    import torch.distributed as dist
    groups = [("world", None, proc.world)]
    if nodes > 1 and per_node > 1:  # every rank creates every node's group, in the same order
        mine = None
        for k in range(nodes):
            g = dist.new_group(list(range(k * per_node, (k + 1) * per_node)))
            if proc.rank // per_node == k:
                mine = g
        groups.append(("intra", mine, per_node))
    rows = []
    for scope, group, n in groups:
        me = dist.get_rank(group) if group is not None else proc.rank
        for op in OPS:
            for size in sizes:
                t, size = _time_op(op, size, n, me, group, proc.device, torch, dist)
                rows.append({"scope": scope, "op": op, "ranks": n, "size_bytes": size, "time_s": t,
                             "iters": iters_for(size), "bus_factor": bus_factor(op, n),
                             "algbw_bytes_per_s": algbw(size, t), "busbw_bytes_per_s": busbw(op, size, t, n)})
            if proc.rank == 0:
                top = rows[-1]
                print(f"  [probe] {scope} {op:<14} {len(sizes)} sizes, busbw at {top['size_bytes'] / 2**20:g} MiB "
                      f"{top['busbw_bytes_per_s'] / 1e9:.2f} GB/s", flush=True)
    hosts = [None] * proc.world
    dist.all_gather_object(hosts, socket.gethostname())
    if proc.rank != 0:
        return None
    return {"rows": rows, "fits": fit_rows(rows), "hosts": sorted(set(hosts)),
            "backend": dist.get_backend(), "warmup": WARMUP}


WARMUP = 2


def _time_op(op: str, size: int, n: int, me: int, group, device, torch, dist) -> tuple[float, int]:
    """(median over the timed operations of the slowest rank's time in seconds, the bytes S
    timed: all-gather's and reduce-scatter's whole tensor is n parts, so S rounds to n x 4 B)."""
    numel = size // 4
    part = max(numel // n, 1)
    if op in ("all_gather", "reduce_scatter"):
        size = part * n * 4
    if op == "all_reduce":
        buf = torch.ones(numel, device=device)
        run = lambda: dist.all_reduce(buf, group=group)  # noqa: E731
    elif op == "all_gather":  # torch 2.13 names them *_single; earlier, *_into_tensor / *_tensor
        src, out = torch.ones(part, device=device), torch.empty(part * n, device=device)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        run = lambda: gather(out, src, group=group)  # noqa: E731
    elif op == "reduce_scatter":
        src, out = torch.ones(part * n, device=device), torch.empty(part, device=device)
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        run = lambda: scatter(out, src, group=group)  # noqa: E731
    else:  # a ring: each rank sends to the next and receives from the previous at once
        send, recv = torch.ones(numel, device=device), torch.empty(numel, device=device)
        g = (lambda r: dist.get_global_rank(group, r)) if group is not None else (lambda r: r)

        def run():
            reqs = [dist.isend(send, g((me + 1) % n), group=group), dist.irecv(recv, g((me - 1) % n), group=group)]
            for q in reqs:
                q.wait()
    cuda = device.type == "cuda"
    times = []
    dist.barrier(group=group)
    for i in range(WARMUP + iters_for(size)):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            dt_s = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            run()
            dt_s = time.perf_counter() - t0
        if i >= WARMUP:
            times.append(dt_s)
    t = torch.tensor(times, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    med = float(t.median().item()) if len(times) % 2 else float(t.sort().values[len(times) // 2 - 1:len(times) // 2 + 1].mean())
    return med, size


# ---------------------------------------------------------------- the command

def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf
    config.register()
    with config.composing():
        return OmegaConf.to_object(hydra_compose("probe", overrides=overrides))


def check(cfg) -> None:
    """One line naming what to change, before anything is launched."""
    for k in config.numeric_keys(config.ProbeConfig):
        if k.name in ("min_bytes", "max_bytes"):
            msg = k.refusal(k.value(cfg))
            if msg:
                raise ValueError(msg)
    if cfg.min_bytes > cfg.max_bytes:
        raise ValueError(f"min_bytes={cfg.min_bytes} exceeds max_bytes={cfg.max_bytes}; swap them")
    if cfg.devices * cfg.launcher.nodes < 2:
        raise ValueError(f"devices={cfg.devices}: a probe needs at least 2 ranks to communicate; use devices=2")


def table_lines(rows: list[dict[str, Any]], fits: dict[str, dict[str, Any]]) -> list[str]:
    """The nccl-tests-style table and the fits, as printed."""
    out = ["median over the timed operations of the slowest rank's time; S per nccl-tests; GB = 1e9 bytes",
           f"{'scope':<6} {'op':<15} {'size S':>10} {'time us':>11} {'algbw GB/s':>11} {'busbw GB/s':>11}"]
    for r in rows:
        out.append(f"{r['scope']:<6} {r['op']:<15} {_size_text(r['size_bytes']):>10} {r['time_s'] * 1e6:>11.1f} "
                   f"{r['algbw_bytes_per_s'] / 1e9:>11.3f} {r['busbw_bytes_per_s'] / 1e9:>11.3f}")
    out.append("")
    out.append("alpha-beta fits, t(S) = alpha + S x busbw factor / beta (least squares on relative error):")
    for k, f in fits.items():
        if "error" in f:
            out.append(f"  {k:<22} no fit: {f['error']}")
            continue
        out.append(f"  {k:<22} alpha {f['alpha_s'] * 1e6:8.1f} us (se {f['alpha_se_s'] * 1e6:.1f}), "
                   f"beta {f['beta_bytes_per_s'] / 1e9:6.3f} GB/s (se {f['beta_se_bytes_per_s'] / 1e9:.3f}); "
                   f"fit error rms {f['rel_rms']:.1%}, max {f['rel_max']:.1%} over {f['points']} sizes")
    poor = [k for k, f in fits.items() if f.get("rel_rms", 0) > 0.25]
    if poor:
        out.append(f"note: {', '.join(poor)}: one alpha and one beta miss the measured times by more than 25% rms "
                   "(protocol changes with size, or noise: rerun on an idle machine); bench.project reads the "
                   "measured curve itself, not the fit")
    return out


def _size_text(b: int) -> str:
    for unit, k in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if b >= 1 << k:
            return f"{b / (1 << k):g} {unit}"
    return f"{b} B"


def run_probe(overrides: list[str], say=print) -> tuple[dict[str, Any], str]:
    """The whole command: (the result record, its path). Raises ValueError for bad input."""
    from bench.launch import launch
    from bench.plan import Host, make_spec
    from bench.results import write_result
    from bench.run import _one_line, check_writable, new_result, record_outcome
    from bench.protocol import QUIET_ENV
    try:
        for a in overrides:
            if "=" not in a:
                raise ValueError(f"{a}: expected key=value (python -m bench.probe --help)")
        if any(a.split("=", 1)[0] in ("strategy", "size") for a in overrides):
            raise ValueError("strategy/size: a probe runs no model; give devices=, accelerator=, launcher=")
        cfg = compose(overrides)
        check(cfg)
        check_writable(cfg.results_root, "results_root")
        fp = hardware.fingerprint()
        spec = make_spec(cfg, Host.from_fingerprint(fp))
    except Exception as e:
        raise ValueError(_one_line(e).replace("bench.run --help", "bench.probe --help")) from None
    label = cfg.hardware_label or hardware.label(fp)
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out_dir = os.path.join(cfg.results_root, f"probe-{stamp}-{secrets.token_hex(2)}", f"devices={cfg.devices}")
    result = new_result(cfg, out_dir, fp, label, "probe-" + config.bench_hash(config.to_dict(cfg)), 0)
    result.update(kind="probe", spec=spec.to_dict(),
                  degrees={"nodes": spec.nodes, "devices_per_node": spec.devices_per_node, "procs": spec.procs})
    sizes = message_sizes(cfg.min_bytes, cfg.max_bytes)
    say(f"[probe] {spec.devices} rank(s) ({spec.accelerator.value}), {len(OPS)} operations x {len(sizes)} sizes "
        f"{_size_text(sizes[0])} .. {_size_text(sizes[-1])}; folder {out_dir}")
    t0 = time.perf_counter()
    env = {MIN_ENV: str(cfg.min_bytes), MAX_ENV: str(cfg.max_bytes), QUIET_ENV: "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        out = launch(spec, out_dir, probe_rank)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    if not out.writes_result:  # multinode: the node holding rank 0 records the probe
        say(f"[probe] {out.status} on this node; the probe's result.json is written by the node that held rank 0")
        return {"status": out.status, "error": out.error, "node_only": True}, ""
    if out.metrics:
        out.metrics = {"probe": {k: v for k, v in out.metrics.items() if k != "interconnect"},
                       "interconnect": out.metrics.get("interconnect"), "hosts": out.metrics.get("hosts")}
    record_outcome(result, out)
    result.update(finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  duration_s=time.perf_counter() - t0)
    path = write_result(out_dir, result)
    if result["status"] == "ok":
        p = result["metrics"]["probe"]
        for line in table_lines(p["rows"], p["fits"]):
            say(line)
        import csv
        with open(os.path.join(out_dir, PROBE_CSV), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(p["rows"][0]))
            w.writeheader()
            w.writerows(p["rows"])
    return result, path


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.split("\n\n")[0] + "\n\nkeys: devices, accelerator, launcher.*, cpu_threads_per_device, "
              "hardware_label, results_root, timeout_s, min_bytes (1024), max_bytes (268435456)")
        return
    try:
        result, path = run_probe(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    if path:
        print(f"\nresult: {path}" + ("" if result["status"] == "ok" else f"\nprobe {result['status']}: {result['error']}"))
    sys.exit(0 if result["status"] == "ok" else 1)


if __name__ == "__main__":
    main()
