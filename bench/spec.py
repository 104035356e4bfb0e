"""The RunSpec: one benchmark point, resolved and checked (bench/plan.py makes it).

The contract between the planner and the ranks: every `auto` resolved, the per-replica
batch derived, the layout the strategy chose (degrees, which parallelisms, how state and
activations are sharded), and where the ranks meet. Frozen, typed, small nested groups;
no torch, so the command line can plan before torch is imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from bench.config import STEADY_MMAP_THRESHOLD, Accelerator, Checkpointing, Data, Precision, Schedule, to_dict
from bench.flops import bubble_fraction


# tokens per chunk of the chunked loss head on a GPU, and the most on a CPU (bench/loss.py; the
# memory model counts one chunk's logits): 1024 x 50304 fp32 logits = 196 MiB at GPT-2's vocabulary
LOSS_CHUNK_TOKENS = 1024


def head_rows(vocab_size: int, tp: int, vocab_parallel: bool) -> int:
    """Rows of the output matrix one rank holds: ceil(V / tp) where tensor parallel splits it by
    vocabulary (the largest shard: torch's Shard(0) gives the first ranks ceil(V / tp) each), else V."""
    return -(-vocab_size // tp) if vocab_parallel else vocab_size


def loss_chunk_tokens(device: str, vocab_rows: int, fp32: bool) -> int:
    """Tokens per chunk of the chunked loss head, where the output matrix has `vocab_rows` rows
    (V, or V/tp split by vocabulary) and the head's matmuls run in fp32 (`fp32`) or a 2-byte
    dtype. A GPU, or 2-byte matmuls: LOSS_CHUNK_TOKENS. A CPU in fp32: as many as keep one
    chunk's logits (tokens x vocab_rows x 4 bytes) within glibc's largest mmap threshold
    (STEADY_MMAP_THRESHOLD, 32 MiB), in multiples of 64, from 64 to LOSS_CHUNK_TOKENS: a block
    above it is its own mmap, fresh pages at every chunk (GPT-2's vocabulary: 128 tokens; at
    issue 18's shape, 4 layers of width 256, seq 256, batch 8, 2 threads, that took a step from
    1,322 to 1,227 ms and its page faults from 100,610 to 0, one process, 6 blocks alternated).
    Not in bf16: each chunk's 2-byte V x C product for the matrix's gradient goes through an fp32
    block of that size inside the CPU's matmul, so more chunks made more fresh pages (`small`:
    about 0.5M faults a step at 1024 tokens, 0.8-1.1M at 128), and the step was no faster at the
    reference shape (0.93x, 1.04x, 1.04x in three such runs)."""
    if device != "cpu" or not fp32:
        return LOSS_CHUNK_TOKENS
    fits = STEADY_MMAP_THRESHOLD // (max(1, vocab_rows) * 4) // 64 * 64
    return max(64, min(LOSS_CHUNK_TOKENS, fits))


@dataclass(frozen=True)
class GPTShape:
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    block_size: int  # maximum context length (positions)


class DataParallel(str, Enum):
    """How the data-parallel replicas hold the model (the last step of the apply order)."""
    ddp = "ddp"  # DistributedDataParallel: one process per device, full replicas, gradient all-reduce
    fsdp = "fsdp"  # FSDP2 fully_shard: parameters, gradients and optimizer state sharded over dp
    dataparallel = "dataparallel"  # nn.DataParallel: one process drives every GPU


@dataclass(frozen=True)
class Pipeline:
    """A pipeline's schedule; the bubble is REFERENCE.md's (p - 1) / (v*m + p - 1)."""
    schedule: Schedule
    microbatches: int = 1  # per micro-step; 1 for naive (the whole batch goes through)
    stages_per_rank: int = 1  # v: model chunks per rank (interleaved), else 1


@dataclass(frozen=True)
class Layout:
    """What a strategy does on `dp * tp * pp` devices (bench/parallel/ decides it).

    dp, tp, pp: the degrees. `data_parallel`: how the dp replicas are held (None: one
    replica). `tensor_parallel`: every block's matrices split over tp (head-wise).
    `pipeline`: the blocks split over pp stages, with this schedule (None: no pipeline).
    `procs_per_node`: processes launched per node (`devices_per_process` devices each)."""
    dp: int
    tp: int
    pp: int
    data_parallel: DataParallel | None = None
    tensor_parallel: bool = False
    pipeline: Pipeline | None = None
    sequence_parallel: bool = False  # tp: LayerNorms and the residual stream split by sequence
    vocab_parallel: bool = False  # tp: the tied embedding / output layer split by vocabulary over tp
    reshard_after_forward: bool | None = None  # fsdp only: free gathered block weights after forward
    devices_per_process: int = 1  # nn.DataParallel: one process drives dp devices

    @property
    def mesh(self) -> tuple[tuple[str, int], ...] | None:
        """The device mesh's named dimensions, outermost first (dp outside tp/pp, so the
        ranks of one replica are consecutive); None for one process."""
        dims = []
        if self.data_parallel in (DataParallel.ddp, DataParallel.fsdp):
            dims.append(("dp", self.dp))
        if self.tensor_parallel:
            dims.append(("tp", self.tp))
        if self.pipeline is not None:
            dims.append(("pp", self.pp))
        return tuple(dims) or None

    @property
    def state_shards(self) -> int:
        """Ways the parameters, gradients and optimizer state are sharded beyond tp/pp."""
        return self.dp if self.data_parallel is DataParallel.fsdp else 1

    @property
    def bubble_ideal(self) -> float | None:
        """The schedule's ideal bubble fraction, None without pipeline stages. Naive is one
        micro-batch: (p - 1) / p, one stage busy at a time."""
        if self.pipeline is None or self.pp == 1:
            return None
        return bubble_fraction(self.pp, self.pipeline.microbatches, self.pipeline.stages_per_rank)


@dataclass(frozen=True)
class Rendezvous:
    """Where the ranks meet. backend `local`: one machine, a private file store (no socket);
    `c10d`: torch elastic numbers the nodes as they arrive; `static`: each node was given
    its rank (torchrun --node-rank)."""
    backend: str = "local"  # local | c10d | static
    nodes: int = 1
    endpoint: str | None = None  # HOST:PORT of node 0's store (multinode)
    node_rank: int | None = None  # static only
    run_id: str = ""  # the point's own rendezvous: launcher.run_id + its config hash
    join_timeout_s: float | None = None  # multinode: launcher.join_timeout_s
    source: str = "local"  # local | config | slurm


@dataclass(frozen=True)
class RunSpec:
    size: str
    shape: GPTShape
    strategy: str  # the registry's name (bench/parallel/)
    layout: Layout
    devices: int  # all devices of the job: nodes x devices_per_node
    devices_per_node: int
    procs: int  # processes launched on this node
    batch_size: int  # sequences per data-parallel replica per micro-step
    grad_accum: int
    global_batch_size: int  # sequences per optimizer step, all replicas
    seq_len: int
    precision: Precision  # resolved: fp32 | bf16 | fp16
    accelerator: Accelerator  # resolved: cpu | cuda
    warmup_steps: int
    steps: int
    seed: int
    lr: float
    cpu_threads_per_device: int
    activation_checkpointing: Checkpointing
    compile: bool  # torch.compile each block (compiled during the warm-up)
    oversubscribe: bool
    data: Data
    data_path: str | None
    timeout_s: float
    rendezvous: Rendezvous
    colocated: int = 1  # independent copies of a 1-device point run at once (procs counts them all)
    loss_head: str = "plain"  # resolved: plain | chunked (bench/loss.py)
    malloc_mmap_threshold: int | None = None  # CPU ranks: glibc's MALLOC_MMAP_THRESHOLD_ (None: glibc's own policy)
    malloc_trim_threshold: int | None = None  # CPU ranks: glibc's MALLOC_TRIM_THRESHOLD_ (None: glibc's own)
    malloc_mmap_max: int | None = None  # CPU ranks: glibc's MALLOC_MMAP_MAX_ (None: glibc's own, 65536)
    loss_chunk_tokens: int | None = None  # resolved: the chunked head's tokens per chunk (None: the plain head)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len

    @property
    def nodes(self) -> int:
        return self.rendezvous.nodes

    def to_dict(self) -> dict[str, Any]:
        """As recorded in result.json: nested groups, enums as their values."""
        return to_dict(self)
