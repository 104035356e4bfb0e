"""From the typed config to a RunSpec: resolve, check, lay out; then the memory verdict.

Everything that can be known before launching is decided here, so that a point that cannot
run is `invalid` (or `predicted_oom`) with a message naming the number to change, and no
process is started for it. No torch: the machine's facts come in as a `Host`.

`make_spec(cfg, host)` runs in four steps, each a list of small named checks that return
one message or None (the first message stops the point):
  1. CONFIG_CHECKS: the config alone (every number within the range bench/config.py declares
     beside its key, width vs heads, text vs vocabulary, compile needs a warm-up);
  2. `resolve_placement`: accelerator, precision, sequence, nodes and devices, then the
     strategy's own checks (bench/parallel/) and PLACEMENT_CHECKS (GPUs and cores there are,
     fp16 on a GPU, context length);
  3. the strategy's layout (degrees dp x tp x pp, parallelisms, sharding), then
     LAYOUT_CHECKS (heads vs tp, layers vs stages, batches vs replicas and micro-batches,
     micro-batches vs the schedule, the text vs the sequence);
  4. the RunSpec.

A rank is never the first to find a point invalid: whatever a rank, the model, the data or
torch's schedules would refuse for a reason the config alone decides is one of these checks.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench import cluster, parallel
from bench.memory import MemoryEstimate
from bench.config import (STEADY_MMAP_THRESHOLD, Accelerator, BenchConfig, Data, LossHead, Precision, Schedule,
                          bench_hash, numeric_keys, to_dict)
from bench.spec import DataParallel, GPTShape, Layout, Rendezvous, RunSpec, head_rows, loss_chunk_tokens

# Host memory each CPU rank needs before the model exists (Python, torch, gloo), measured
# here as about 0.35 GiB; rounded up.
CPU_RANK_BASELINE_BYTES = 512 * 2**20
MEMORY_MARGIN = 0.90  # plan to use at most this fraction of what is available


class InvalidConfig(ValueError):
    """A point that cannot run as configured; the message says what to change."""


class PredictedOOM(ValueError):
    """The memory model says the point does not fit; the message gives both figures."""


@dataclass(frozen=True)
class Host:
    """The machine's facts the planner needs (bench.hardware.fingerprint has them all)."""
    cores: int  # usable by this process (its affinity)
    gpus: int  # CUDA devices this torch build sees
    gpu_bf16: bool  # every visible GPU computes bf16 natively (compute capability >= 8.0)
    gpu_memory_bytes: tuple[int, ...]
    ram_bytes: int
    ram_available_bytes: int

    @classmethod
    def from_fingerprint(cls, fp: dict[str, Any]) -> Host:
        g = fp["gpu"]
        return cls(cores=fp["cpu_usable"], gpus=g["count"],
                   gpu_bf16=(bool(g["count"]) and len(g.get("compute_capability") or []) == g["count"]
                             and all(cc[0] >= 8 for cc in g["compute_capability"])),  # unknown: not native
                   gpu_memory_bytes=tuple(g["memory_bytes"]), ram_bytes=fp["ram_bytes"],
                   ram_available_bytes=fp["ram_available_bytes"])


@dataclass(frozen=True)
class Placement:
    """Where and how a point runs, resolved before the strategy lays it out."""
    accelerator: Accelerator  # cpu | cuda
    precision: Precision  # fp32 | bf16 | fp16
    seq_len: int
    rendezvous: Rendezvous
    devices_per_node: int

    @property
    def nodes(self) -> int:
        return self.rendezvous.nodes

    @property
    def devices(self) -> int:  # all devices of the job
        return self.devices_per_node * self.rendezvous.nodes


def config_hash(cfg: BenchConfig) -> str:
    """The hash of what a point measures (bench.config.bench_hash of the plain config)."""
    from bench.parallel import vocab_parallel_on
    d = to_dict(cfg)
    return bench_hash(d, vocab_parallel=vocab_parallel_on(d))


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def _first(messages: Iterable[str | None]) -> None:
    for msg in messages:
        if msg:
            raise InvalidConfig(msg)


# -- 1. the config alone --------------------------------------------------------------------

def numbers_in_range(cfg: BenchConfig) -> str | None:
    """Every int and float key, groups included, within the range declared beside it in
    bench/config.py (`key(..., ge=1)`): `seq_len=0: need at least 1, or null`."""
    for k in numeric_keys():
        msg = k.refusal(k.value(cfg))
        if msg:
            return msg


def width_divides_by_heads(cfg: BenchConfig) -> str | None:
    # each head is n_embd / n_head wide: the attention reshapes (B, T, n_embd) into heads
    s = cfg.size
    if s.n_embd % s.n_head:
        lower = s.n_embd - s.n_embd % s.n_head
        return (f"size.n_embd={s.n_embd} does not divide by size.n_head={s.n_head} (each head is n_embd / n_head "
                f"wide); use a multiple of {s.n_head}, e.g. size.n_embd={lower or s.n_head}")


def text_needs_byte_vocab(cfg: BenchConfig) -> str | None:
    # data=text feeds raw bytes: token ids 0..255 must all be rows of the embedding
    if cfg.data is Data.text and cfg.size.vocab_size < 256:
        return (f"data=text uses byte tokens (0..255) but size={cfg.size.name} has size.vocab_size="
                f"{cfg.size.vocab_size}; use size.vocab_size>=256")


def compile_needs_warmup(cfg: BenchConfig) -> str | None:
    if cfg.compile and cfg.warmup_steps < 2:
        return ("compile=true compiles in the first steps (forward, then backward); use "
                "warmup_steps>=2 so that compilation stays outside the measured window")


def strategy_exists(cfg: BenchConfig) -> str | None:
    if cfg.strategy.name not in parallel.STRATEGIES:
        return f"strategy={cfg.strategy.name} is not implemented; use one of {', '.join(parallel.STRATEGIES)}"


def label_is_a_plain_name(cfg: BenchConfig) -> str | None:
    # the label names folders and CSV cells: a '/' or '..' would nest or escape the results folder
    if cfg.hardware_label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+_-]*", cfg.hardware_label):
        return (f"hardware_label={cfg.hardware_label}: use letters, digits and . + _ - only "
                "(e.g. hardware_label=EPYC-9654-2c-24GB)")


CONFIG_CHECKS: list[Callable[[BenchConfig], str | None]] = [
    strategy_exists, numbers_in_range, width_divides_by_heads, text_needs_byte_vocab, compile_needs_warmup,
    label_is_a_plain_name]


# -- 2. where it runs -------------------------------------------------------------------------

def resolve_placement(cfg: BenchConfig, host: Host) -> Placement:
    """`auto` accelerator and precision, the sequence length, the rendezvous and node count."""
    try:
        rdzv = cluster.resolve(cfg.launcher)
    except cluster.RendezvousError as e:
        raise InvalidConfig(str(e)) from None
    if rdzv.backend != "local":  # a rendezvous per point: the nodes of a sweep meet again for each one
        rdzv = dataclasses.replace(rdzv, run_id=f"{cfg.launcher.run_id}-{config_hash(cfg)[:8]}")
    accel = cfg.accelerator
    if accel is Accelerator.auto:
        accel = Accelerator.cuda if host.gpus else Accelerator.cpu
    precision = cfg.precision
    if precision is Precision.auto:  # bf16 where the GPU computes it natively, not emulated
        precision = Precision.bf16 if accel is Accelerator.cuda and host.gpu_bf16 else Precision.fp32
    return Placement(accelerator=accel, precision=precision, seq_len=cfg.seq_len or cfg.size.block_size,
                  rendezvous=rdzv, devices_per_node=cfg.devices)


def resume_on_one_node(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    if cfg.resume and t.nodes > 1:
        return ("resume=true is not supported with launcher=multinode: each node would decide "
                "from its own results folder and the nodes could fall out of step; rerun the points")


def cuda_needs_a_gpu(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    if t.accelerator is Accelerator.cuda and host.gpus == 0:
        return "accelerator=cuda but torch sees no CUDA device; use accelerator=cpu"


def gpus_enough(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    if t.accelerator is Accelerator.cuda and t.devices_per_node * cfg.colocated > host.gpus:
        if cfg.colocated > 1:
            return f"colocated={cfg.colocated} needs {cfg.colocated} GPUs but this node has {host.gpus}; use colocated<={host.gpus}"
        return f"devices={t.devices_per_node} but this node has {host.gpus} GPU(s); use devices<={host.gpus}"


def colocated_is_one_device(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    if cfg.colocated > 1 and (t.devices_per_node != 1 or t.nodes > 1):
        return (f"colocated={cfg.colocated} runs copies of a 1-device point; use devices=1 (on one node), "
                "or colocated=1")


def cores_enough(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    need = t.devices_per_node * cfg.cpu_threads_per_device * cfg.colocated
    if t.accelerator is Accelerator.cpu and need > host.cores and not cfg.oversubscribe:
        fit = host.cores // cfg.cpu_threads_per_device
        if cfg.colocated > 1:
            return (f"colocated={cfg.colocated} x cpu_threads_per_device={cfg.cpu_threads_per_device} needs {need} "
                    f"cores but {host.cores} are usable; use colocated<={max(fit, 1)}")
        advice = (f"use devices<={fit}" if fit else
                  f"use cpu_threads_per_device<={host.cores // t.devices_per_node or 1}")
        return (f"devices={t.devices_per_node} x cpu_threads_per_device={cfg.cpu_threads_per_device} needs "
                f"{need} cores but {host.cores} are usable; {advice}")


def fp16_needs_cuda(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    if t.precision is Precision.fp16 and t.accelerator is Accelerator.cpu:
        return "precision=fp16 needs a CUDA device (no fp16 gradient scaling on CPU); use precision=bf16 or fp32"


def seq_len_fits_context(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    if t.seq_len > cfg.size.block_size:
        return (f"seq_len={t.seq_len} exceeds size={cfg.size.name}'s context of {cfg.size.block_size}; "
                f"use seq_len<={cfg.size.block_size}")


def environment_agrees_with_allocator_keys(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    # a CPU rank inherits the user's MALLOC_* variables, and glibc reads them, not the keys; the
    # config hash (resume, repeats) knows only the keys: a different value would be a run filed
    # under another point's hash
    if t.accelerator is not Accelerator.cpu:
        return None
    from bench.protocol import ALLOCATOR_ENV
    for key, var in ALLOCATOR_ENV.items():
        value, mine = getattr(cfg, key), os.environ.get(var)
        if mine is not None and mine != str(value):
            return (f"your environment sets {var}={mine}, which a CPU rank would run under instead of "
                    f"{key}={'null' if value is None else value}; set {key}={mine} or unset {var}")


def allocator_keys_need_mmap_threshold(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    # glibc turns its dynamic mmap threshold off once the trim threshold or the mmap count is set
    # (malloc.c: do_set_trim_threshold, do_set_mmaps_max), leaving both thresholds at 128 KiB: every
    # tensor above that would be fresh pages each time it is made. CPU ranks only (the placement's
    # accelerator: `auto` on a GPU host is a GPU point)
    if t.accelerator is not Accelerator.cpu or cfg.malloc_mmap_threshold is not None:
        return None
    for key in ("malloc_trim_threshold", "malloc_mmap_max"):
        value = getattr(cfg, key)
        if value is not None:
            default = " (its default)" if value == BenchConfig.__dataclass_fields__[key].default else ""
            return (f"{key}={value}{default} with malloc_mmap_threshold=null: glibc then fixes its own mmap and trim "
                    f"thresholds at 128 KiB; set malloc_mmap_threshold too (33554432 is the default) or {key}=null")


def mmap_threshold_needs_mmap(cfg: BenchConfig, t: Placement, host: Host) -> str | None:
    # with malloc_mmap_max=0 no block is mmapped, whatever its size: a lowered threshold (memory
    # studies: 1 MiB) would do nothing, and RSS would keep what the heap once held
    if (t.accelerator is Accelerator.cpu and cfg.malloc_mmap_max == 0 and cfg.malloc_mmap_threshold is not None
            and cfg.malloc_mmap_threshold < STEADY_MMAP_THRESHOLD):
        return (f"malloc_mmap_threshold={cfg.malloc_mmap_threshold} does nothing with malloc_mmap_max=0 (no block is "
                "mmapped); set malloc_mmap_max=null, or leave malloc_mmap_threshold at its default")


PLACEMENT_CHECKS: list[Callable[[BenchConfig, Placement, Host], str | None]] = [
    resume_on_one_node, colocated_is_one_device, cuda_needs_a_gpu, gpus_enough, cores_enough, fp16_needs_cuda,
    seq_len_fits_context, allocator_keys_need_mmap_threshold, mmap_threshold_needs_mmap,
    environment_agrees_with_allocator_keys]


# -- 3. the layout ---------------------------------------------------------------------------

def heads_divide_by_tp(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    if cfg.size.n_head % lay.tp:
        return (f"tensor parallel degree {lay.tp} does not divide size={cfg.size.name}'s {cfg.size.n_head} "
                f"heads; use a tp degree among {_divisors(cfg.size.n_head)}")


def stages_fit_layers(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    if lay.pp > cfg.size.n_layer:
        n = cfg.size.n_layer
        return (f"{lay.pp} pipeline stages need at least {lay.pp} layers but size={cfg.size.name} has "
                f"{n}; use at most {n} stage{'s' if n > 1 else ''}")


def global_batch_divides(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    gbs, accum = cfg.global_batch_size, cfg.grad_accum
    if gbs is not None and gbs % (lay.dp * accum):
        return (f"global_batch_size={gbs} does not divide into dp={lay.dp} x grad_accum={accum}; "
                f"use a multiple of {lay.dp * accum}")


def fp16_without_model_parallel(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    # the gradient scaler needs every rank to scale its own backward and to agree on skipping
    # a step: not so for pipeline stages (only the last sees the loss) or for tensor-parallel
    # shards mixed with replicated parameters
    if t.precision is Precision.fp16 and ((lay.pipeline is not None and lay.pp > 1) or lay.tp > 1):
        return (f"precision=fp16 is not supported with {'pipeline' if lay.pp > 1 else 'tensor'} "
                "parallelism (gradient scaling); use precision=bf16")


def pipeline_with_fsdp_only(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    # a strategy's layout, checked here rather than in the ranks (bench/parallel/parallelize.py):
    # pipeline stages are sharded over dp by FSDP, never replicated by DDP or nn.DataParallel
    if lay.pipeline is not None and lay.data_parallel not in (None, DataParallel.fsdp):
        return (f"strategy={cfg.strategy.name}: a pipeline composes with FSDP only, not "
                f"{lay.data_parallel.value}")


def microbatches_divide_batch(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    m = lay.pipeline.microbatches if lay.pipeline else 1
    if batch % m:
        return (f"batch_size={batch} does not divide into strategy.microbatches={m}; "
                f"use a batch_size that is a multiple of {m}")


def _interleaved(lay: Layout) -> bool:
    return lay.pipeline is not None and lay.pipeline.schedule is Schedule["interleaved"]


def interleaved_chunks_fit(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    v = lay.pipeline.stages_per_rank if lay.pipeline else 1
    if _interleaved(lay) and lay.pp * v > cfg.size.n_layer:
        return (f"schedule=interleaved with {lay.pp} stages x stages_per_rank={v} needs {lay.pp * v} layers "
                f"but size={cfg.size.name} has {cfg.size.n_layer}; lower strategy.stages_per_rank or devices")


def interleaved_microbatches(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    p = lay.pipeline
    if _interleaved(lay) and p.microbatches % lay.pp:
        return (f"schedule=interleaved needs strategy.microbatches={p.microbatches} to be a multiple of the "
                f"{lay.pp} stages; use strategy.microbatches={lay.pp * max(1, p.microbatches // lay.pp)}")


def one_f_one_b_microbatches(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    # torch.distributed.pipelining's Schedule1F1B refuses fewer micro-batches than stages
    p = lay.pipeline
    if p is not None and p.schedule is Schedule["1f1b"] and p.microbatches < lay.pp:
        return (f"schedule=1f1b needs strategy.microbatches={p.microbatches} to be at least the {lay.pp} "
                f"stages; use strategy.microbatches>={lay.pp} (and a batch_size that divides by it)")


def colocated_copies_have_no_mesh(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    if cfg.colocated > 1 and lay.mesh is not None:  # a copy's 1-rank mesh inside a world of copies
        return (f"colocated={cfg.colocated} copies the plain model (strategy=single); strategy={cfg.strategy.name} "
                "builds a device mesh on one device: use strategy=single, or colocated=1")


def sequence_parallel_needs_tp(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    if cfg.strategy.sequence_parallel and lay.tp == 1:
        return ("strategy.sequence_parallel=true needs tensor parallelism; "
                "use strategy=tp, or hybrid with strategy.tp>1")


def sequence_divides_by_tp(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    if lay.sequence_parallel and t.seq_len % lay.tp:
        return (f"sequence parallel shards seq_len={t.seq_len} over tp={lay.tp}; use a seq_len that "
                f"is a multiple of {lay.tp}")


def text_file_exists(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    if cfg.data is Data.text and cfg.data_path and not os.path.isfile(cfg.data_path):
        return f"data_path={cfg.data_path} is not a file; give a UTF-8 text file"
    if cfg.data is Data.text and cfg.data_path and not os.access(cfg.data_path, os.R_OK):
        return f"data_path={cfg.data_path} is not readable; give a UTF-8 text file you can read"


# The default text (bench.data.stdlib_text, the docs of a few standard-library modules) is
# about 240 kB. It lives beside torch (bench/data.py) and takes 0.2 s to render, so the
# planner goes by this lower bound (tests/test_plan.py checks it) instead of making it.
DEFAULT_TEXT_MIN_BYTES = 200_000


def text_longer_than_sequence(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    # each sequence is a window of seq_len + 1 bytes (inputs and next-token targets) at a random start
    if cfg.data is not Data.text:
        return None
    n = os.path.getsize(cfg.data_path) if cfg.data_path else DEFAULT_TEXT_MIN_BYTES
    if n <= t.seq_len + 1:
        what = f"data_path={cfg.data_path} has {n} bytes" if cfg.data_path else \
            f"the default text (data_path=null) has about {n} bytes"
        return (f"{what}, but seq_len={t.seq_len} needs more than {t.seq_len + 1} bytes (a sequence and its "
                "next-token targets); give a longer text or a shorter seq_len")


def chunked_head_not_under_pipeline_fsdp(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str | None:
    # a pipeline's last stage applies the head in the schedule's loss function, outside the
    # stage's forward, where FSDP has resharded the output matrix again
    if cfg.loss_head is LossHead.chunked and lay.pipeline is not None and lay.data_parallel is DataParallel.fsdp:
        return "loss_head=chunked does not run on a pipeline under FSDP; use loss_head=plain (or auto)"
    if cfg.loss_head is LossHead.chunked and t.precision is Precision.fp16:
        # its gradient (softmax - onehot) / N is cast to fp16 in forward, before GradScaler's scale
        # reaches it in backward: entries near 1/(V N) underflow to zero
        return "loss_head=chunked does not run in fp16 (unscaled gradients underflow); use precision=bf16 or loss_head=plain"


# `auto` takes the chunked head where a micro-batch's fp32 logits pass this. Measured on one CPU
# core, whole training steps alternated in one process (issue 18, a standalone script, not a shipped
# command): at 4 layers, width 256, vocabulary 50304, seq 256, batch 8 (412 MB of logits) 1.04x
# (fp32) and 1.17x (bf16) the plain head's speed, before its log-sum-exp was made in place; at mini
# (4 MiB) 0.975x. On a GPU the same rule is a guess: no GPU was lent to measure it
CHUNKED_FROM_BYTES = 64 * 2**20


def resolve_loss_head(cfg: BenchConfig, t: Placement, lay: Layout, batch: int) -> str:
    """The loss head a point runs (bench/loss.py): the key's, or for `auto` the faster here."""
    if cfg.loss_head is not LossHead.auto:
        return cfg.loss_head.value
    if lay.pipeline is not None and lay.data_parallel is DataParallel.fsdp or t.precision is Precision.fp16:
        return LossHead.plain.value
    # per device: each replica of nn.DataParallel computes its own loss inside its forward
    micro = batch // (lay.pipeline.microbatches if lay.pipeline is not None else 1)
    # the whole vocabulary's, also under a vocabulary-parallel output layer (a rank makes V/tp of
    # them): the same head at every device count, so that a series keeps one identity; split, the
    # two heads run one code path and differ only in the chunk (bench/loss.py)
    logits = micro * t.seq_len * cfg.size.vocab_size * 4
    return (LossHead.chunked if logits > CHUNKED_FROM_BYTES else LossHead.plain).value


LAYOUT_CHECKS: list[Callable[[BenchConfig, Placement, Layout, int], str | None]] = [
    heads_divide_by_tp, stages_fit_layers, global_batch_divides, fp16_without_model_parallel, pipeline_with_fsdp_only,
    microbatches_divide_batch, interleaved_chunks_fit, interleaved_microbatches, one_f_one_b_microbatches,
    sequence_parallel_needs_tp, sequence_divides_by_tp, text_file_exists, text_longer_than_sequence,
    colocated_copies_have_no_mesh, chunked_head_not_under_pipeline_fsdp]


# -- the spec ---------------------------------------------------------------------------------

def make_spec(cfg: BenchConfig, host: Host) -> RunSpec:
    """The point `cfg` on `host`, resolved and checked; InvalidConfig names what to change."""
    _first(check(cfg) for check in CONFIG_CHECKS)
    strategy = parallel.get(cfg.strategy.name)
    t = resolve_placement(cfg, host)
    _first(strategy.checks(cfg.strategy, t))
    _first(check(cfg, t, host) for check in PLACEMENT_CHECKS)
    lay = strategy.layout(t.devices, cfg.strategy)
    batch = cfg.global_batch_size // (lay.dp * cfg.grad_accum) if cfg.global_batch_size else cfg.batch_size
    _first(check(cfg, t, lay, batch) for check in LAYOUT_CHECKS)
    s = cfg.size
    head = resolve_loss_head(cfg, t, lay, batch)
    return RunSpec(
        size=s.name, shape=GPTShape(s.n_layer, s.n_head, s.n_embd, s.vocab_size, s.block_size),
        strategy=strategy.name, layout=lay, devices=t.devices, devices_per_node=t.devices_per_node,
        procs=t.devices_per_node // lay.devices_per_process * cfg.colocated, batch_size=batch, grad_accum=cfg.grad_accum,
        global_batch_size=batch * lay.dp * cfg.grad_accum, seq_len=t.seq_len, precision=t.precision,
        accelerator=t.accelerator, warmup_steps=cfg.warmup_steps, steps=cfg.steps, seed=cfg.seed, lr=cfg.lr,
        cpu_threads_per_device=cfg.cpu_threads_per_device, activation_checkpointing=cfg.activation_checkpointing,
        compile=cfg.compile, oversubscribe=cfg.oversubscribe, data=cfg.data, data_path=cfg.data_path,
        timeout_s=cfg.timeout_s, rendezvous=t.rendezvous, colocated=cfg.colocated,
        malloc_mmap_threshold=cfg.malloc_mmap_threshold, malloc_trim_threshold=cfg.malloc_trim_threshold,
        malloc_mmap_max=cfg.malloc_mmap_max,
        loss_head=head, loss_chunk_tokens=(loss_chunk_tokens(
            t.accelerator.value, head_rows(s.vocab_size, lay.tp, lay.vocab_parallel), t.precision is Precision.fp32)
            if head == LossHead.chunked.value else None))


# -- memory -----------------------------------------------------------------------------------

def available_bytes(spec: RunSpec, host: Host) -> int:
    """What one device may use: the host's RAM on CPU (what is free now; across nodes the
    total, so that every node reaches the same verdict and none waits at the rendezvous for
    one that skipped), else the smallest GPU's memory."""
    if spec.accelerator is Accelerator.cpu:
        return host.ram_bytes if spec.nodes > 1 else host.ram_available_bytes
    return min(host.gpu_memory_bytes[:spec.devices_per_node])


# The lower bound of what a point needs, for a verdict that must never drop a point that would
# have fitted (bench/candidates.py): the memory model's largest over-prediction measured
# (README, "Memory": +19% at batch 8; the sum of the parts is an upper bound), and the least
# a CPU rank holds before the model exists (RSS after joining the process group: 232 MiB
# measured here with torch 2.13; rounded down).
MODEL_OVER_PREDICTION = 1.20
CPU_RANK_BASELINE_MIN_BYTES = 200 * 2**20


def memory_need(spec: RunSpec, predicted: MemoryEstimate, low: bool = False) -> int:
    """Bytes the point needs of what `available_bytes` measures: on a CPU every rank of the
    node shares host RAM, each with its runtime baseline (the planner counts every rank as the
    most loaded one, `predicted`); on a GPU the most loaded device. `low`: the lower bound:
    each rank its own stage's prediction (pipeline stages differ) less the model's largest
    measured over-prediction, with the least baseline."""
    if spec.accelerator is not Accelerator.cpu:
        return int(predicted.total_bytes / MODEL_OVER_PREDICTION if low else predicted.total_bytes)
    if not low:
        return int(spec.procs * (predicted.total_bytes + CPU_RANK_BASELINE_BYTES))
    from bench.memory import predict_memory_stages
    stages = predict_memory_stages(spec)  # the ranks of the node: procs / pp of each stage
    per_stage = sum(e.total_bytes / MODEL_OVER_PREDICTION + CPU_RANK_BASELINE_MIN_BYTES for e in stages)
    return int(per_stage * spec.procs / len(stages))


def check_memory(spec: RunSpec, predicted: MemoryEstimate, available: int) -> None:
    """Raise PredictedOOM when the point will not fit in `available` bytes per device."""
    need = memory_need(spec, predicted)
    where = "host RAM available" if spec.accelerator is Accelerator.cpu else "GPU memory"
    if need > MEMORY_MARGIN * available:
        raise PredictedOOM(
            f"predicted {need / 2**30:.1f} GiB but {MEMORY_MARGIN:.0%} of the {available / 2**30:.1f} "
            f"GiB {where} is {MEMORY_MARGIN * available / 2**30:.1f} GiB; lower batch_size or "
            "seq_len, add devices to mp, or set force=true to run anyway")
