"""What each rank does: pin threads, join the process group, build, train, report.

`run_rank(spec, out_dir)` is the entry point bench/launch.py is handed. It starts with RANK,
LOCAL_RANK and WORLD_SIZE in the environment, and the process group's init method (a file
store on one machine, torch elastic's store across nodes; bench/protocol.py). Rank 0 returns
the metrics; an exception is written to `<out_dir>/rank<r>.error.json` (the launcher only
sees an exit code) and re-raised.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from bench import cores, flops, hardware, parallel, protocol
from bench.config import Accelerator, Precision
from bench.data import make_batches
from bench.model import plain_name
from bench.parallel.rank import Ctx, Parallel
from bench.protocol import (ALLOCATOR_ENV, DUMP_ENV, FAULT_ENV, INIT_ENV, mark_rank0,
                            write_rank_error)
from bench.spec import RunSpec
from bench.telemetry import PeakMeter, Sampler, release_heap
from bench.trainer import Progress, train


def memory_stats(device: torch.device, baseline_rss: int, meter: PeakMeter, sampler: Sampler) -> dict[str, Any]:
    """This rank's memory. The headline figures are the measured window's own peaks (the RSS
    high-water mark, and on a GPU the allocator's), reset when the window opened; the build's
    and the warm-up's peaks are kept beside them (`build_*`, `warmup_*`), and the sampled
    window figures (RSS, NVML) from the sampler."""
    window = meter.phases["window"]
    m: dict[str, Any] = {**window, "rss_baseline_bytes": baseline_rss, **sampler.summary()}
    for phase in ("build", "warmup"):
        m.update({f"{phase}_{k}": v for k, v in meter.phases.get(phase, {}).items() if k.endswith("_bytes")})
    if device.type == "cuda":
        s = torch.cuda.memory_stats(device)
        m.update(torch_alloc_retries=s.get("num_alloc_retries", 0), torch_ooms=s.get("num_ooms", 0))
    return m


def peaks(device: torch.device, precision: Precision) -> dict[str, Any]:
    """The FLOP/s that MFU divides by: the datasheet's (GPUs in the table) and a measured
    matmul peak (every device; cached), each with its source."""
    dtype = precision.value  # resolved: fp32 | bf16 | fp16, the matmul dtype the run computes in
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else hardware.cpu_model()
    table, table_src = hardware.table_peak(name, dtype) if device.type == "cuda" else (None, "CPU: no datasheet peak")
    measured, measured_src = hardware.matmul_peak(device, dtype)
    return {"peak_flops_per_s": table, "peak_flops_source": table_src,
            "peak_flops_measured_per_s": measured, "peak_flops_measured_source": measured_src}


def dump_params(par: Parallel, folder: str, rank: int, prefix: str = "") -> None:
    """Save this rank's parameters and their gradients (those of the last step; None before
    the first), whole (DTensors gathered: a collective every rank of the mesh takes part in)
    and under the plain model's names, to `<folder>/<prefix>rank<r>.pt`, so a test can merge
    the ranks' files and compare them with the reference."""
    def whole(t):
        return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()
    params, grads = {}, {}
    for m in par.modules:
        for name, p in m.named_parameters():
            name = plain_name(name)
            params[name] = whole(p)
            grads[name] = whole(p.grad) if p.grad is not None else None
    torch.save({"params": params, "grads": grads}, os.path.join(folder, f"{prefix}rank{rank}.pt"))


def run_rank(spec: RunSpec, out_dir: str) -> dict[str, Any] | None:
    """One point: join the process group, measure `spec`, leave. Rank 0 returns the metrics."""
    rank, local_rank, world = _ranks()
    if rank == 0:  # tells this node's launcher that it writes the job's result
        mark_rank0(out_dir)
    with _reported(out_dir, rank):
        proc = _join(spec, rank, local_rank, world)
        return measure(spec, out_dir, proc)


@contextlib.contextmanager
def _reported(out_dir: str, rank: int):
    """A rank's exception goes to `<out_dir>/rank<r>.error.json` (the launcher only sees an exit
    code) and is re-raised; the process group is left in any case."""
    try:
        yield
    except BaseException as e:
        write_rank_error(out_dir, rank, e, "oom" if isinstance(e, torch.OutOfMemoryError) else "failed")
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def serve_rank(spec: RunSpec, job_dir: str) -> None:
    """A standing job (bench/session.py): join the process group once, then measure point
    after point as the driver orders them, until it orders the stop. The fixed cost of a
    point (spawning the ranks, importing torch, joining the group: about 4-6 s here) is paid
    once per job instead of once per point; every point still builds its own model, mesh,
    optimizer and data, and has its own warm-up and measured window.

    `spec` sets what every ordered point shares (processes, threads, accelerator, nodes).
    Global rank 0 reads each order (bench.session.write_order) and broadcasts it, so every rank
    runs the same points in the same order; each node's local rank 0 marks the point it is on
    (`current.json`, the driver's per-point timeout) and writes each point's metrics (the same
    on every rank: the trainer reduces them) for its node's driver."""
    from bench import cgroup, session
    cgroup.join_from_env()  # a memory limit (bench.advise memory_limit_gib): the ranks live under it
    rank, local_rank, world = _ranks()
    if rank == 0:
        mark_rank0(job_dir)
    with _reported(job_dir, rank):
        proc = _join(spec, rank, local_rank, world)
        k = 0
        while True:
            box = [session.read_order(job_dir, k) if rank == 0 else None]
            if world > 1:
                dist.broadcast_object_list(box, src=0)
            order = box[0]
            if order is None:  # the stop
                break
            for i, item in enumerate(order):
                started = time.time()
                if local_rank == 0:
                    session.mark_current(job_dir, k, i, item.timeout_s)
                fault = protocol.fault_for(os.environ.get(FAULT_ENV, ""), item.name)
                m = measure(item.spec, item.out_dir, proc, fault=fault, gather_all=True)
                if local_rank == 0:
                    session.write_item(job_dir, k, i, m, started)
                _release()
            k += 1


def _ranks() -> tuple[int, int, int]:
    return int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])


def _release() -> None:
    """Between the points of a standing job: drop what the last one held. A mesh's process
    groups stay: DTensor's caches name them after the point (destroying them made the next
    2-D mesh's point fail with "Could not resolve the process group"); a 2-D mesh's groups
    are a few per point, gloo's sockets between the same ranks."""
    import gc
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    release_heap()  # a CPU rank keeps what it frees (malloc_trim_threshold): not into the next point


@dataclass
class Proc:
    """This rank's process, joined to the group: what every point it measures shares."""
    rank: int
    local_rank: int
    world: int
    device: torch.device
    t_joined: float | None  # perf_counter when it began joining the group (None once a point used it)
    baseline_rss: int = 0  # RSS once the group existed: the runtime every point of the process stands on
    peaks: dict[str, dict[str, Any]] = field(default_factory=dict)  # precision -> peak FLOP/s (rank 0)


def _join(spec: RunSpec, rank: int, local_rank: int, world: int) -> Proc:
    """Pin threads, join the process group (nccl on GPUs, gloo on CPUs)."""
    t0 = time.perf_counter()
    init = os.environ.get(INIT_ENV, "env://")
    if spec.accelerator is Accelerator.cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method=init, rank=rank, world_size=world, device_id=device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(spec.cpu_threads_per_device)
        spare, before = cores.spare(), cores.threads()
        cores.pin(local_rank, spec.cpu_threads_per_device)  # its own cores: ranks never share one
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        if world == 1:
            # a collective has no peer here (dp, fsdp on one device still call them: a hand-back), but
            # gloo's transport thread wakes every 10 ms whatever happens (gloo/transport/tcp/loop.cc:
            # epoll_wait with a 10 ms timeout), about 16 preemptions of a 160 ms step on the rank's
            # core: the group's threads go to the launcher's core where one is spare (issue 18)
            cores.move_threads(cores.threads() - before, spare)
    return Proc(rank, local_rank, world, device, t0, baseline_rss=psutil.Process().memory_info().rss)


def measure(spec: RunSpec, out_dir: str, proc: Proc, fault: str | None = None,
            gather_all: bool = False) -> dict[str, Any] | None:
    """Build `spec`'s model on this rank, train it, and return the point's metrics (rank 0;
    every rank with `gather_all`). `fault`: a planted fault (tests), else FAULT_ENV's."""
    rank, local_rank, world, device = proc.rank, proc.local_rank, proc.world, proc.device
    progress = Progress(rank == 0)
    # a lone point's time_init_s counts from joining the group; a standing job's later points from their build
    t0 = proc.t_joined if proc.t_joined is not None else time.perf_counter()
    proc.t_joined = None
    # the runtime baseline is the process's, from before its first point: a later point of a standing
    # job measured from its own start would leave out what the process kept of earlier points
    baseline_rss = proc.baseline_rss or psutil.Process().memory_info().rss
    if rank == 0 and spec.precision.value not in proc.peaks:  # before the model takes memory
        proc.peaks[spec.precision.value] = peaks(device, spec.precision)
    peak = proc.peaks.get(spec.precision.value, {})
    if device.type == "cuda":  # the calibration's matrices must not count as the build's memory
        torch.cuda.empty_cache()
    meter = PeakMeter(device)  # from here on, peaks by phase: build, warm-up, window
    # NVML every 20 ms. On a CPU the exact window peak is VmHWM's (reset per phase), so no
    # thread at all: one woken every 50 ms on the rank's own core took the GIL and the core
    # from the step (issue 18); only where VmHWM cannot be reset does it sample RSS instead
    cpu_interval = None if meter.scope == "phase" else 0.05
    sampler = Sampler(device, interval_s=0.02 if device.type == "cuda" else cpu_interval, meter=meter)
    nvml_baseline = sampler.used_bytes()
    scaler = torch.amp.GradScaler("cuda") if spec.precision is Precision.fp16 else None
    mesh = None
    if spec.layout.mesh is not None:
        names, sizes = zip(*spec.layout.mesh)
        mesh = init_device_mesh(device.type, sizes, mesh_dim_names=names)
    ctx = Ctx(rank, world, local_rank, device, spec.precision, scaler, mesh)
    progress("build", 0, 1, f"{spec.size} {spec.strategy} on {world} x {device.type}")

    # data first, outside everything timed. dp is the outer mesh dimension, so the ranks of
    # one replica (its tp or pp peers) are consecutive and share the replica's rows. A process
    # that drives several devices (nn.DataParallel) takes all their replicas' rows at once.
    lay = spec.layout
    batches = make_batches(spec.data.value, spec.data_path, spec.seed, spec.warmup_steps + spec.steps,
                           # colocated copies of a 1-device point (bench.project's calibration) share replica 0
                           spec.grad_accum, lay.dp // lay.devices_per_process,
                           (rank // (lay.tp * lay.pp)) % (lay.dp // lay.devices_per_process),
                           spec.batch_size * lay.devices_per_process, spec.seq_len, spec.shape.vocab_size)
    par = parallel.get(spec.strategy).apply(spec, ctx)
    # this rank's own elements: a DTensor's numel() is the whole tensor's
    n_local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in par.parameters())
    t_built = time.perf_counter()
    meter.end("build", empty_cache=True)
    progress("build", 1, 1, f"{t_built - t0:.1f} s")

    if os.environ.get(DUMP_ENV):  # the initial weights, for the tests (outside every measured phase)
        dump_params(par, out_dir, rank, prefix="init.")
    metrics = train(par, spec, ctx, batches, progress, sampler, fault=fault)
    # the chunked head's tokens per chunk, as planned (bench.spec.loss_chunk_tokens: by device, rows,
    # matmul dtype; bench/loss.py derives the same from the tensors it is given)
    metrics["loss_chunk_tokens"] = spec.loss_chunk_tokens
    # the allocator policy the rank ran under (the config keys', or the user's own environment)
    for name, var in ALLOCATOR_ENV.items():
        value = os.environ.get(var) if device.type == "cpu" else None
        metrics[name] = int(value) if value and value.isdigit() else None
    if os.environ.get(DUMP_ENV):
        dump_params(par, out_dir, rank)
    del par, batches
    mem = memory_stats(device, baseline_rss, meter, sampler)
    mem["nvml_used_baseline_bytes"] = nvml_baseline
    mem["params_local"] = n_local
    mem["host"] = socket.gethostname()
    per_rank = [mem]
    if world > 1:
        per_rank = [None] * world
        dist.all_gather_object(per_rank, mem)
    if rank != 0 and not gather_all:
        return None
    if rank != 0:  # the peak FLOP/s were measured on rank 0: every rank takes its figures
        box = [None]
        dist.broadcast_object_list(box, src=0)
        peak = box[0]
    elif gather_all and world > 1:
        dist.broadcast_object_list([peak], src=0)

    s = spec.shape
    fpt = flops.flops_per_token(s.n_layer, s.n_embd, s.vocab_size, spec.seq_len)
    metrics.update(
        n_params=flops.n_params(s.n_layer, s.n_embd, s.vocab_size, s.block_size),
        n_matmul_params=flops.n_matmul_params(s.n_layer, s.n_embd, s.vocab_size),
        flops_per_token=fpt,
        flops_formula="6*N + 12*L*H*T (N = 12*L*H^2 + V*H)",
        flops_per_s_per_device=fpt * metrics["tokens_per_s"] / spec.devices,
        time_init_s=t_built - t0,
        hosts=sorted({m["host"] for m in per_rank}),
        memory_per_rank=per_rank,
    )
    achieved = metrics["flops_per_s_per_device"]
    metrics.update(peak, mfu=achieved / peak["peak_flops_per_s"] if peak["peak_flops_per_s"] else None,
                   mfu_measured_peak=achieved / peak["peak_flops_measured_per_s"])
    if device.type == "cuda":
        metrics["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    energy = [m["energy_j"] for m in per_rank]
    if lay.devices_per_process > 1:  # NVML sampled the process's own GPU only
        metrics["telemetry_note"] = (f"nvml figures are GPU {local_rank}'s only (one process drives "
                                     f"{lay.devices_per_process} GPUs)")
    elif all(e is not None for e in energy) and sum(energy) > 0:
        # co-located copies each trained their own tokens_per_step (bench.project's calibration)
        metrics.update(energy_j=sum(energy),
                       tokens_per_j=spec.colocated * metrics["tokens_per_step"] * spec.steps / sum(energy))
    # headline: the measured window's peak on the most loaded rank (reset when it opened); the
    # runtime baseline (what a rank held before the model existed) and the build's own peak beside it
    if device.type == "cuda":
        nvml_peaks = [m["nvml_used_peak_bytes"] for m in per_rank]
        if all(p is not None for p in nvml_peaks):
            metrics.update(mem_peak_bytes=max(nvml_peaks), mem_source="nvml (used, peak over the window)",
                           mem_peak_above_baseline_bytes=max(m["nvml_used_peak_bytes"] - (m["nvml_used_baseline_bytes"] or 0)
                                                             for m in per_rank),
                           mem_baseline_bytes=max(m["nvml_used_baseline_bytes"] or 0 for m in per_rank),
                           mem_baseline_source="nvml (used before the build: CUDA context, NCCL)")
        else:
            metrics.update(mem_peak_bytes=max(m["torch_max_reserved_bytes"] for m in per_rank),
                           mem_source=f"torch (max reserved over the window); nvml {per_rank[0]['nvml']}",
                           mem_baseline_bytes=0, mem_baseline_source="none (the allocator starts empty)")
        metrics.update(mem_torch_max_allocated_bytes=max(m["torch_max_allocated_bytes"] for m in per_rank),
                       mem_torch_max_reserved_bytes=max(m["torch_max_reserved_bytes"] for m in per_rank),
                       mem_build_peak_bytes=max(m["build_torch_max_reserved_bytes"] for m in per_rank),
                       mem_build_source="torch (max reserved during the build)")
    else:
        metrics.update(mem_peak_bytes=max(m["rss_peak_bytes"] for m in per_rank),
                       # per rank, then the most loaded: never one rank's peak less another's baseline
                       mem_peak_above_baseline_bytes=max(m["rss_peak_bytes"] - m["rss_baseline_bytes"]
                                                         for m in per_rank),
                       mem_peak_bytes_sum=sum(m["rss_peak_bytes"] for m in per_rank),
                       mem_rss_window_peak_bytes=max(m["rss_window_peak_bytes"] for m in per_rank),
                       mem_baseline_bytes=max(m["rss_baseline_bytes"] for m in per_rank),
                       mem_baseline_source="rss after the process group existed (python, torch, gloo)",
                       mem_build_peak_bytes=max(m["build_rss_peak_bytes"] for m in per_rank),
                       mem_build_source="rss (peak during the build)",
                       mem_source=f"rss (peak over the {'window' if per_rank[0]['rss_peak_scope'] == 'phase' else 'process lifetime: VmHWM could not be reset'}, per process)")
    return metrics
