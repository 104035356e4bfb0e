"""From a composed config to a RunSpec: resolve, derive the parallel degrees, validate.

Everything that can be known before launching is decided here, so that a point that cannot
run is `invalid` (or `predicted_oom`) with a message naming the number to change, and no
process is started for it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from bench import cluster, flops
from bench.config import bench_hash
from bench.model import GPTShape

STRATEGIES = ("single", "dp", "mp", "tp", "fsdp", "dataparallel", "hybrid")
# Host memory each CPU rank needs before the model exists (Python, torch, gloo), measured
# here as about 0.35 GiB; rounded up.
CPU_RANK_BASELINE_BYTES = 512 * 2**20
MEMORY_MARGIN = 0.90  # plan to use at most this fraction of what is available
# launcher=local: one node, a private rendezvous on a free port chosen at launch
LOCAL = cluster.Rendezvous(nodes=1, node_rank=None, endpoint=None, backend="local", source="local")


class InvalidConfig(ValueError):
    """A point that cannot run as configured; the message says what to change."""


class PredictedOOM(ValueError):
    """The memory model says the point does not fit; the message gives both figures."""


@dataclass(frozen=True)
class RunSpec:
    size: str
    shape: GPTShape
    strategy: str
    schedule: str  # pipeline schedule, "" when there is no pipeline
    microbatches: int  # per micro-step, 1 unless a micro-batched schedule runs
    stages_per_rank: int  # interleaved schedule's model chunks per rank, else 1
    devices: int
    procs: int  # processes launched: devices, or 1 for the single-process dataparallel
    dp: int
    tp: int
    pp: int
    batch_size: int  # sequences per data-parallel replica per micro-step
    grad_accum: int
    global_batch_size: int  # sequences per optimizer step, all replicas
    seq_len: int
    precision: str  # resolved: fp32 | bf16 | fp16
    warmup_steps: int
    steps: int
    seed: int
    lr: float
    accelerator: str  # resolved: cpu | cuda
    cpu_threads_per_device: int
    activation_checkpointing: str  # none | full
    sequence_parallel: bool
    reshard_after_forward: bool
    oversubscribe: bool
    data: str
    data_path: str | None
    timeout_s: float
    # where the ranks run: `devices` above counts them all; nodes x devices_per_node
    nodes: int = 1
    devices_per_node: int = 0
    rdzv_backend: str = "local"  # local (a private port here) | c10d | static
    rdzv_endpoint: str | None = None
    node_rank: int | None = None  # static rendezvous only
    run_id: str = ""
    join_timeout_s: float = 600.0
    compile: bool = False  # torch.compile each block (compiled during the warm-up)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len

    @property
    def bubble_ideal(self) -> float | None:
        """The schedule's ideal bubble fraction (REFERENCE.md), None without a pipeline."""
        if self.pp == 1:
            return None
        if self.schedule == "naive":  # one stage busy at a time
            return (self.pp - 1) / self.pp
        return (self.pp - 1) / (self.stages_per_rank * self.microbatches + self.pp - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stage_layers(n_layer: int, stages: int) -> list[range]:
    """Contiguous blocks per pipeline stage; the first `n_layer % stages` get one more."""
    base, extra = divmod(n_layer, stages)
    out, start = [], 0
    for s in range(stages):
        n = base + (1 if s < extra else 0)
        out.append(range(start, start + n))
        start += n
    return out


def config_hash(cfg: dict[str, Any]) -> str:
    return bench_hash(cfg)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cuda_devices() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def degrees(name: str, devices: int, strat: dict[str, Any], shape: GPTShape, size: str) -> tuple[int, int, int]:
    """(dp, tp, pp) of a strategy on `devices`; raises InvalidConfig when they do not fit."""
    if name == "single":
        if devices != 1:
            raise InvalidConfig(f"strategy=single runs on one device, not devices={devices}; "
                                "use devices=1 or strategy=dp")
        return 1, 1, 1
    if name in ("dp", "fsdp", "dataparallel"):
        return devices, 1, 1
    if name == "tp":
        tp, pp = devices, 1
    elif name == "mp":
        tp, pp = 1, devices
    else:  # hybrid: dp x tp or dp x pp on a 2-D mesh
        tp, pp = strat["tp"], strat["pp"]
        if tp < 1 or pp < 1 or (tp > 1) == (pp > 1):
            raise InvalidConfig(f"strategy=hybrid needs exactly one of strategy.tp or strategy.pp above 1 "
                                f"(got tp={tp}, pp={pp}); e.g. strategy.tp=2 strategy.pp=1")
        if devices % (tp * pp):
            raise InvalidConfig(f"strategy=hybrid: dp x tp x pp must equal devices={devices}, but "
                                f"{tp * pp} does not divide it; use devices that are a multiple of {tp * pp}")
    if shape.n_head % tp:
        raise InvalidConfig(f"tensor parallel degree {tp} does not divide size={size}'s {shape.n_head} heads; "
                            f"use a tp degree among {_divisors(shape.n_head)}")
    if pp > shape.n_layer:
        raise InvalidConfig(f"{pp} pipeline stages need at least {pp} layers but size={size} has "
                            f"{shape.n_layer}; use at most {shape.n_layer} stages")
    return devices // (tp * pp), tp, pp


def make_spec(cfg: dict[str, Any]) -> RunSpec:
    """Resolve `auto` values, derive degrees and the per-replica batch, check what divides."""
    size, strat = cfg["size"], cfg["strategy"]
    shape = GPTShape(size["n_layer"], size["n_head"], size["n_embd"], size["vocab_size"],
                     size["block_size"])
    name = strat["name"]
    if name not in STRATEGIES:
        raise InvalidConfig(f"strategy={name} is not implemented; use one of {', '.join(STRATEGIES)}")
    devices = cfg["devices"]  # per node
    if devices < 1:
        raise InvalidConfig(f"devices={devices}: need at least 1")
    launcher = cfg.get("launcher") or {"name": "local"}
    try:
        rdzv = cluster.resolve(launcher) or LOCAL
    except cluster.RendezvousError as e:
        raise InvalidConfig(str(e)) from None
    nodes = rdzv.nodes
    for key in ("batch_size", "grad_accum", "steps", "cpu_threads_per_device"):
        if cfg[key] is not None and cfg[key] < 1:
            raise InvalidConfig(f"{key}={cfg[key]}: must be at least 1")
    if cfg["warmup_steps"] < 0:
        raise InvalidConfig(f"warmup_steps={cfg['warmup_steps']}: must be 0 or more")
    if cfg.get("compile") and cfg["warmup_steps"] < 2:
        raise InvalidConfig("compile=true compiles in the first steps (forward, then backward); use "
                            "warmup_steps>=2 so that compilation stays outside the measured window")

    accel = cfg["accelerator"]
    n_gpu = _cuda_devices() if accel in ("auto", "cuda") else 0
    if accel == "auto":
        accel = "cuda" if n_gpu else "cpu"
    if name == "single" and nodes > 1:
        raise InvalidConfig(f"strategy=single runs on one device, not on {nodes} nodes; use launcher=local "
                            "or strategy=dp")
    if cfg.get("resume") and nodes > 1:
        raise InvalidConfig("resume=true is not supported with launcher=multinode: each node would decide "
                            "from its own results folder and the nodes could fall out of step; rerun the points")
    if name == "dataparallel" and nodes > 1:
        raise InvalidConfig("strategy=dataparallel (nn.DataParallel) runs in one process on one node; "
                            "use strategy=dp across nodes")
    if name == "dataparallel" and accel != "cuda":
        raise InvalidConfig("strategy=dataparallel (nn.DataParallel) is a multi-GPU, single-process "
                            "strategy with no CPU meaning; use strategy=dp on CPU")
    if accel == "cuda" and n_gpu == 0:
        raise InvalidConfig("accelerator=cuda but torch sees no CUDA device; use accelerator=cpu")
    if accel == "cuda" and devices > n_gpu:
        raise InvalidConfig(f"devices={devices} but this node has {n_gpu} GPU(s); use devices<={n_gpu}")
    threads = cfg["cpu_threads_per_device"]
    if accel == "cpu" and devices * threads > usable_cores() and not cfg.get("oversubscribe"):
        raise InvalidConfig(
            f"devices={devices} x cpu_threads_per_device={threads} needs {devices * threads} cores "
            f"but {usable_cores()} are usable; use devices<={usable_cores() // threads}")

    precision = cfg["precision"]
    if precision == "auto":
        precision = "bf16" if accel == "cuda" and _cuda_bf16() else "fp32"
    if precision == "fp16" and accel == "cpu":
        raise InvalidConfig("precision=fp16 needs a CUDA device (no fp16 gradient scaling on CPU); "
                            "use precision=bf16 or fp32")

    seq_len = cfg["seq_len"] or shape.block_size
    if seq_len > shape.block_size:
        raise InvalidConfig(f"seq_len={seq_len} exceeds size={size['name']}'s context of "
                            f"{shape.block_size}; use seq_len<={shape.block_size}")

    per_node, devices = devices, devices * nodes
    dp, tp, pp = degrees(name, devices, strat, shape, size["name"])
    grad_accum, batch = cfg["grad_accum"], cfg["batch_size"]
    if cfg["global_batch_size"] is not None:
        gbs = cfg["global_batch_size"]
        if gbs % (dp * grad_accum):
            raise InvalidConfig(f"global_batch_size={gbs} does not divide into dp={dp} x "
                                f"grad_accum={grad_accum}; use a multiple of {dp * grad_accum}")
        batch = gbs // (dp * grad_accum)

    pipelined = name == "mp" or (name == "hybrid" and pp > 1)
    if precision == "fp16" and (pipelined and pp > 1 or tp > 1):
        # the gradient scaler needs every rank to scale its own backward and to agree on
        # skipping a step: not so for pipeline stages (only the last sees the loss) or for
        # tensor-parallel shards mixed with replicated parameters
        raise InvalidConfig(f"precision=fp16 is not supported with {'pipeline' if pp > 1 else 'tensor'} "
                            "parallelism (gradient scaling); use precision=bf16")
    schedule = strat["schedule"] if pipelined else ""
    micro, chunks = 1, 1
    if pipelined and schedule != "naive":
        micro = strat["microbatches"]
        if micro < 1 or batch % micro:
            raise InvalidConfig(f"batch_size={batch} does not divide into strategy.microbatches="
                                f"{micro}; use a batch_size that is a multiple of {micro}")
        if schedule == "interleaved":
            chunks = strat["stages_per_rank"]
            if pp * chunks > shape.n_layer:
                raise InvalidConfig(f"schedule=interleaved with {pp} stages x stages_per_rank={chunks} needs "
                                    f"{pp * chunks} layers but size={size['name']} has {shape.n_layer}; "
                                    "lower strategy.stages_per_rank or devices")
            if micro % pp:
                raise InvalidConfig(f"schedule=interleaved needs strategy.microbatches={micro} to be a "
                                    f"multiple of the {pp} stages; use strategy.microbatches={pp * max(1, micro // pp)}")
    if strat.get("sequence_parallel") and tp == 1:
        raise InvalidConfig("strategy.sequence_parallel=true needs tensor parallelism; "
                            "use strategy=tp, or hybrid with strategy.tp>1")
    if strat.get("sequence_parallel") and seq_len % tp:
        raise InvalidConfig(f"sequence parallel shards seq_len={seq_len} over tp={tp}; use a seq_len that "
                            f"is a multiple of {tp}")

    if cfg["data"] == "text" and cfg["data_path"] and not os.path.isfile(cfg["data_path"]):
        raise InvalidConfig(f"data_path={cfg['data_path']} is not a file; give a UTF-8 text file")

    return RunSpec(size=size["name"], shape=shape, strategy=name, schedule=schedule,
                   microbatches=micro, stages_per_rank=chunks, devices=devices,
                   procs=1 if name == "dataparallel" else per_node, dp=dp, tp=tp, pp=pp,
                   batch_size=batch, grad_accum=grad_accum, global_batch_size=batch * dp * grad_accum,
                   seq_len=seq_len, precision=precision, warmup_steps=cfg["warmup_steps"],
                   steps=cfg["steps"], seed=cfg["seed"], lr=cfg["lr"], accelerator=accel,
                   cpu_threads_per_device=threads, activation_checkpointing=cfg["activation_checkpointing"],
                   sequence_parallel=bool(strat.get("sequence_parallel")) and tp > 1,
                   reshard_after_forward=bool(strat.get("reshard_after_forward", True)),
                   oversubscribe=bool(cfg.get("oversubscribe")), data=cfg["data"],
                   data_path=cfg["data_path"], timeout_s=cfg["timeout_s"],
                   nodes=nodes, devices_per_node=per_node, rdzv_backend=rdzv.backend,
                   rdzv_endpoint=rdzv.endpoint, node_rank=rdzv.node_rank,
                   # a rendezvous per point: the nodes of a sweep meet again for each one
                   run_id=f"{launcher.get('run_id', 'scalebench')}-{bench_hash(cfg)[:8]}",
                   join_timeout_s=float(launcher.get("join_timeout_s", 600.0)),
                   compile=bool(cfg.get("compile")))


def _cuda_bf16() -> bool:
    import torch
    return torch.cuda.is_bf16_supported()


def predict_memory(spec: RunSpec) -> flops.MemoryEstimate:
    """Predicted peak of the most loaded device (see bench/flops.py for the terms)."""
    s = spec.shape
    micro = spec.batch_size // spec.microbatches
    # activations alive at once: all micro-batches under GPipe, at most p under 1F1B
    in_flight = {"gpipe": spec.microbatches, "1f1b": min(spec.microbatches, spec.pp),
                 "interleaved": min(spec.microbatches, spec.pp) + 1}.get(spec.schedule, 1)
    sharded = spec.strategy == "fsdp" or (spec.strategy == "hybrid")
    batch_per_proc = micro * (spec.dp if spec.strategy == "dataparallel" else 1)
    # 2-byte activations under autocast is only true of the matmul outputs; the residual
    # stream and LayerNorms stay fp32, so fp32 sizes are the safer bound on every precision.
    ests = [flops.estimate_memory(s.n_layer, s.n_embd, s.vocab_size, s.block_size, s.n_head,
                                  spec.seq_len, batch_per_proc, len(r), first=i == 0, last=i == spec.pp - 1,
                                  in_flight=in_flight, shard=spec.dp if sharded else 1, tp=spec.tp,
                                  checkpointing=spec.activation_checkpointing == "full",
                                  device=spec.accelerator, sequence_parallel=spec.sequence_parallel,
                                  compute_bytes=4 if spec.precision == "fp32" else 2,
                                  fsdp_reshard=spec.reshard_after_forward if sharded else None)
            for i, r in enumerate(stage_layers(s.n_layer, spec.pp))]
    return max(ests, key=lambda e: e.total_bytes)


def check_memory(spec: RunSpec, predicted: flops.MemoryEstimate, available_bytes: int) -> None:
    """Raise PredictedOOM when the point will not fit on this machine."""
    per_rank = predicted.total_bytes
    if spec.accelerator == "cpu":
        need = spec.procs * (per_rank + CPU_RANK_BASELINE_BYTES)  # all ranks share host RAM
        where = "host RAM available"
    else:
        need = per_rank
        where = "GPU memory"
    if need > MEMORY_MARGIN * available_bytes:
        raise PredictedOOM(
            f"predicted {need / 2**30:.1f} GiB but {MEMORY_MARGIN:.0%} of the {available_bytes / 2**30:.1f} "
            f"GiB {where} is {MEMORY_MARGIN * available_bytes / 2**30:.1f} GiB; lower batch_size or "
            "seq_len, add devices to mp, or set force=true to run anyway")
