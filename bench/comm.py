"""Communication per optimizer step, per strategy, from first principles. Pure arithmetic.

What each rank puts on the wire in one optimizer step, as a list of `Comm`: the collective,
its message size S as nccl-tests defines it (bench/probe.py: the all-reduce buffer, all-gather's
output, reduce-scatter's input, what one send carries), how many times per step, over which
group (data, tensor, pipeline, or the pipeline's tie pair) and whether it can hide behind computation
(`overlappable`: DDP's bucketed all-reduces and FSDP's reduce-scatters run beside the
backward; tensor-parallel collectives and pipeline sends sit on every micro-batch's path, FSDP's
gathers before the computation that needs them) and whether the next computation waits for it
on every rank (`blocking`: tensor parallel's collectives, FSDP's gathers, the tied gradient).

The volumes (REFERENCE.md, "Collectives"), in this project's implementation (bench/parallel):

* DDP (`dp`, hybrid dp): the gradients all-reduced once per step, fp32 (the parameters stay fp32
  under autocast), in buckets of DDP_BUCKET_BYTES: 4 x P_rank bytes, P_rank the parameters the
  rank holds (its tp shard and pp stage).
* FSDP2 (`fsdp`, hybrid fsdp): per micro-step and unit (every block, then the root:
  embeddings, final LayerNorm): an all-gather of the unit's parameters in forward (in the compute dtype under
  mixed precision, else fp32), again in backward for the blocks when `reshard_after_forward`
  (the root is never resharded), and a reduce-scatter of its gradients in fp32.
* Tensor parallel (Megatron, Shoeybi et al. 2019): per block and micro-batch two all-reduces
  of the block's output activations (micro_batch x seq x H) in forward (after W^O and after
  the MLP's second matrix) and in backward one per column-parallel input: two with fused QKV
  (Megatron), four in this project's model (Q, K and V are three Linear layers, each taking
  the input's gradient back to whole: torch's DTensor.from_local backward); a recomputed
  forward (activation checkpointing) repeats the forward two. With sequence parallelism each all-reduce becomes an all-gather and a reduce-scatter of
  the same full tensor (the same bus bytes: 2(n-1)/n x S). Activations in the compute dtype.
* Vocabulary-parallel output layer (`strategy.vocab_parallel`, the default under tensor parallel;
  Megatron-LM's): per micro-batch the embedding's all-reduce, the output layer's input
  gradient's (in the loss's forward here, which forms the gradients; in the backward in
  Megatron-LM), and the loss's small all-reduces of per-token statistics.
* Pipeline: per micro-batch and stage boundary one send forward (the residual stream,
  micro_batch x seq x H, fp32: autocast keeps the residual stream fp32) and one backward (its
  gradient); once per step the tied embedding's gradient (V x H, fp32) all-reduced between
  the first and last stage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bench.spec import DataParallel

FP32 = 4
DDP, FSDP = DataParallel.ddp.value, DataParallel.fsdp.value  # how the replicas are held (bench.spec)
DDP_BUCKET_BYTES = 25 * 2**20  # torch DistributedDataParallel's bucket_cap_mb default (25 MiB)


@dataclass(frozen=True)
class Comm:
    """One kind of message of a step: `count` operations of `size_bytes` each (S as nccl-tests
    defines it) over the `group` (data | tensor | pipeline | tie: the mesh dimension it crosses)
    of `ranks` ranks."""
    op: str  # all_reduce | all_gather | reduce_scatter | sendrecv
    size_bytes: float
    count: float
    group: str
    ranks: int
    overlappable: bool
    what: str
    stride: int = 1  # rank distance between the group's members (dp outermost, then tp, pp)
    per_microbatch: bool = False  # on every micro-batch's path (tensor parallel, pipeline sends)
    link_ranks: int = 0  # ranks whose span decides the link (0: `ranks`): a pipeline's sends pace at its slowest boundary
    blocking: bool = False  # the next computation waits for it on every rank (a collective between dependent
    #                         matmuls, an FSDP gather, the tied gradient); pipeline sends are posted asynchronously

    @property
    def bytes_per_step(self) -> float:
        return self.size_bytes * self.count


@dataclass(frozen=True)
class Shape:
    """The model and the step's work: L layers, H hidden, V vocabulary, T_max positions,
    `seq` tokens per sequence, `micro_batch` sequences per micro-batch, `microbatches` per
    micro-step (pipeline), `grad_accum` micro-steps per optimizer step."""
    L: int
    H: int
    V: int
    T_max: int
    seq: int
    micro_batch: int
    microbatches: int = 1
    grad_accum: int = 1
    chunks: int = 1  # pipeline model chunks per rank (interleaved 1F1B): a micro-batch crosses each rank v times


def block_params(H: int) -> int:
    """Parameters of one block (bench/model.py; REFERENCE.md): 12 H^2 + 13 H."""
    return 12 * H * H + 13 * H


def root_params(H: int, V: int, T_max: int) -> int:
    """Parameters outside the blocks: token and position embeddings (the token embedding is the
    tied output layer) and the final LayerNorm."""
    return V * H + T_max * H + 2 * H


def rank_params(L: int, H: int, V: int, T_max: int, tp: int, pp: int, stage: int, vocab_parallel: bool = False) -> int:
    """Parameters a rank holds before any data-parallel sharding: its stage's blocks with their
    matrices split by tp (biases and LayerNorms too: a lower bound by 6H per block, which are
    replicated), and the root's parts on the first (embeddings) and last stage (final
    LayerNorm, tied output layer); the V x H matrix split by tp where it is vocabulary-parallel."""
    from bench.flops import stage_layers
    layers = len(stage_layers(L, pp)[stage])
    vh = V * H // tp if vocab_parallel else V * H
    p = layers * (12 * H * H + 13 * H) // tp
    if stage == 0:
        p += vh + T_max * H
    if stage == pp - 1:
        p += 2 * H + (vh if pp > 1 else 0)  # the last stage's own copy of the tied matrix
    return p


def root_on_stage(H: int, V: int, T_max: int, pp: int, stage: int, vocab_shards: int = 1) -> int:
    """The root's parameters on a pipeline stage: embeddings on the first, the final LayerNorm
    and the tied output matrix on the last, nothing in between; all of them without a pipeline.
    The V x H matrix split `vocab_shards` ways (a vocabulary-parallel tp rank holds V/tp rows)."""
    vh = V * H // vocab_shards
    if pp == 1:
        return root_params(H, V, T_max) - V * H + vh
    return (vh + T_max * H if stage == 0 else 0) + (2 * H + vh if stage == pp - 1 else 0)


def step_comms(s: Shape, dp: int, tp: int, pp: int, data_parallel: str | None, sequence_parallel: bool = False,
               reshard_after_forward: bool | None = None, checkpointing: bool = False,
               compute_bytes: int = FP32, stage: int | None = None, megatron: bool = False,
               vocab_parallel: bool = False, loss_chunks: int = 1) -> list[Comm]:
    """Every message of one optimizer step of one rank (the most loaded stage's when `stage` is
    None: the last, which holds the output layer). `data_parallel`: DDP | FSDP | None.
    `megatron`: Megatron-LM's implementation instead of this project's: fused QKV (two
    backward all-reduces per block, not four), a vocabulary-parallel embedding, and pipeline
    sends with the scatter/gather optimisation (each rank sends its 1/tp of the activations in
    the compute dtype). `vocab_parallel` (implied by `megatron`): the tied matrix split by
    vocabulary over tp, in `loss_chunks` chunks of tokens per micro-batch (bench/loss.py)."""
    out: list[Comm] = []
    steps = s.microbatches * s.grad_accum  # micro-batches through this rank per optimizer step
    act = s.micro_batch * s.seq * s.H  # elements of one micro-batch's activations
    stage = pp - 1 if stage is None else stage
    from bench.flops import stage_layers
    layers = len(stage_layers(s.L, pp)[stage])
    if tp > 1:
        fwd = 2 * layers * steps * (2 if checkpointing else 1)
        # backward: every column-parallel input turns its gradient (Partial) back into a whole
        # one. This model's Q, K and V are three Linear layers, each wrapping the same input
        # (DTensor.from_local's backward all-reduces each): 3 + the MLP's = 4; fused QKV: 2.
        # Under sequence parallel the three share one gathered input: 2 reduce-scatters
        bwd = (2 if megatron or sequence_parallel else 4) * layers * steps
        if sequence_parallel:
            for op in ("all_gather", "reduce_scatter"):
                out.append(Comm(op, act * compute_bytes, fwd + bwd, "tensor", tp, False,
                                f"sequence-parallel {op.replace('_', '-')} of block activations", 1, True,
                                blocking=True))
        else:
            out.append(Comm("all_reduce", act * compute_bytes, fwd + bwd, "tensor", tp, False,
                            "tensor-parallel all-reduce of block activations (2 forward, 2-4 backward per block)", 1, True,
                            blocking=True))
        if (vocab_parallel or megatron) and stage == 0:
            # the embedding's looked-up rows summed over the vocabulary slices: fp32 here (autocast
            # never casts an embedding) unless FSDP's mixed precision holds the matrix 2-byte; the
            # compute dtype in Megatron-LM
            mixed = data_parallel == FSDP and compute_bytes < FP32
            out.append(Comm("all_reduce", act * (compute_bytes if megatron or mixed else FP32), steps, "tensor", tp,
                            False, "vocab-parallel embedding: the looked-up rows summed (forward)", 1, True,
                            blocking=True))
        if (vocab_parallel or megatron) and stage == pp - 1:
            # the output layer's input gradient, the vocabulary slices' parts summed: fp32, in the
            # forward that forms it (bench/loss.py); in Megatron-LM's backward, in the compute dtype
            out.append(Comm("all_reduce", act * (compute_bytes if megatron else FP32), steps, "tensor", tp, False,
                            "vocab-parallel output layer: its input gradient's parts summed", 1, True, blocking=True))
            # the loss: per chunk of c tokens the rows' maxima (c fp32), then their exp-sums and
            # target logits (2c); Megatron-LM: max, target, exp-sum, each over all N tokens
            rows = act // s.H
            c = -(-rows // (1 if megatron else loss_chunks))
            n_ops = 3 if megatron else 2 * loss_chunks
            out.append(Comm("all_reduce", c * FP32 * (1 if megatron else 1.5), n_ops * steps, "tensor", tp,
                            False, "vocab-parallel cross entropy's row statistics", 1, True, blocking=True))
    if pp > 1:
        send = act * compute_bytes / tp if megatron else act * FP32
        out.append(Comm("sendrecv", send, 2 * steps * s.chunks, "pipeline", 2, False,
                        "pipeline send of activations (forward) and their gradients (backward) per micro-batch"
                        " and chunk", tp, True, link_ranks=pp))
        if stage in (0, pp - 1):
            tied = s.V * s.H * FP32 / (tp if megatron else 1) / (dp if data_parallel == FSDP else 1)
            out.append(Comm("all_reduce", tied, 1, "tie", 2, False,
                            "tied embedding gradient (this rank's shard), first and last stage", tp * (pp - 1),
                            blocking=True))
    if dp > 1 and data_parallel == DDP:
        total = rank_params(s.L, s.H, s.V, s.T_max, tp, pp, stage, vocab_parallel=megatron or vocab_parallel) * FP32
        n = max(1, math.ceil(total / DDP_BUCKET_BYTES))
        out.append(Comm("all_reduce", total / n, n, "data", dp, True, "DDP gradient all-reduce (fp32, 25 MiB buckets)",
                        tp * pp))
    if dp > 1 and data_parallel == FSDP:
        blk = block_params(s.H) // tp
        root = root_on_stage(s.H, s.V, s.T_max, pp, stage, tp if vocab_parallel or megatron else 1)
        gather = compute_bytes
        # per micro-batch: FSDP2 gathers in every forward (and, resharding, every backward); under
        # a pipeline each micro-batch's forward reshards (torch.distributed.pipelining keeps the
        # weights only after backward): m gathers forward, up to m backward (1F1B)
        blk_gathers = layers * (2 if reshard_after_forward else 1) * steps
        st = tp * pp
        # the gathers stand before the computation that needs them (FSDP2 prefetches one unit
        # ahead: on a GPU part of a gather hides behind the previous unit; the model counts them
        # exposed and blocking, and fits the overlap `o` on the traffic that runs beside the backward)
        out.append(Comm("all_gather", blk * gather, blk_gathers, "data", dp, False,
                        "FSDP all-gather of block parameters (forward" + (", backward)" if reshard_after_forward else ")"),
                        st, blocking=True))
        out.append(Comm("all_gather", root * gather, s.grad_accum, "data", dp, False,
                        "FSDP all-gather of the root (embeddings)", st, blocking=True))
        out.append(Comm("reduce_scatter", blk * FP32, layers * s.grad_accum, "data", dp, True,
                        "FSDP reduce-scatter of block gradients", st))
        out.append(Comm("reduce_scatter", root * FP32, s.grad_accum, "data", dp, True,
                        "FSDP reduce-scatter of the root's gradients", st))
    return out
