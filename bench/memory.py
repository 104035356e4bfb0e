"""The memory model: predicted peak bytes of the most loaded device, by part.

Pure arithmetic from the spec (no torch), so each term can be checked by hand
(tests/test_memory_model.py) and against a measured run (tests/test_memory.py). Formulas and sources
are in shared/REFERENCE.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench import flops
from bench.config import Checkpointing, Precision, Schedule
from bench.flops import FP32_BYTES
from bench.spec import DataParallel, RunSpec, head_rows, loss_chunk_tokens

# What a device holds outside the model's tensors. On a GPU: the CUDA context, the NCCL
# communicator (created eagerly at init) and what the first kernels load, which NVML counts and
# torch's allocator does not. REFERENCE.md gives 0.3-0.6 GB for the context alone; measured on
# one H200 (2026-11-30, torch 2.11.0+cu130, NCCL 2.28.9; reports/examples/gpu-h200.acceptance.log.txt),
# NVML's used memory before the build was 1,177 MiB in bf16 and 1,275 MiB in fp32/fp16 runs,
# so 1,280 MiB here (every run records its own as `mem_baseline_bytes`). On a CPU the rank's
# runtime (Python, torch, gloo) is measured by every run as its RSS before the build (about
# 240 MiB on this project's CPU machine); the planner reserves CPU_RANK_BASELINE_BYTES
# (bench/plan.py) per rank for it, so the model's CPU runtime term is 0.
RUNTIME_BYTES = {"cpu": 0, "cuda": 1280 * 2**20}


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak bytes on the most loaded device, by part. `model_bytes` is what the
    model, its state and its step hold (compare it with a measured peak minus the measured
    runtime baseline); `total_bytes` adds the runtime term."""
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    logits_bytes: int
    runtime_bytes: int = 0
    buffers_bytes: int = 0  # FSDP's gathered parameters/gradients, autocast's weight copies, the tied embedding's second gradient

    @property
    def model_bytes(self) -> int:
        """Every part at once. Live tensors never all coexist (activations are freed as
        backward makes gradients), but allocators keep what a step freed for the next one
        (glibc's heap and arenas for blocks under its mmap threshold, bench/launch.py; on a
        GPU the caching allocator's reserved blocks, which NVML counts), so the memory the
        system sees approaches the sum: measured on small, seq 128, batch 2, 2 CPU devices,
        within 15% for every strategy (tests/test_memory.py), and 20% over at batch 8."""
        return (self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.activations_bytes
                + self.logits_bytes + self.buffers_bytes)

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.runtime_bytes


# Bytes per (token x hidden unit) that one Block of bench/model.py keeps for its backward, from
# what autograd saves there (Korthikanti et al. 2022 count the same tensors for Megatron's block
# as 34 two-byte units with dropout; this model has no dropout and fused attention, SDPA, so no
# a*s^2 scores). "whole": the residual stream's LayerNorm inputs x and x2 (fp32 under autocast
# too) and the LayerNorm outputs the next matmuls keep (fp32: h1 once, shared by q, k and v, and
# h2; autocast: three bf16 casts of h1, one per projection, and one of h2: autocast caches casts
# of weights, not of activations). "split" by tensor parallel: q, k, v, the attention output
# (SDPA returns it in the query's (B, T, heads, d) layout, so the reshape for W^O is a view, no
# copy), the MLP's 4H pre- and post-GELU: fp32 12 + 4 + 16 + 16 = 48, autocast half. Sequence
# parallel also splits the LayerNorm inputs; the LayerNorm outputs are gathered whole before the
# projections that keep them. Measured with autograd's saved-tensor hooks on one Block (CPU):
# 64.5 and 40.5 bytes, the 0.5 being LayerNorm statistics and SDPA's logsumexp.
ACT_LN_IN = 8                              # x, x2: fp32
ACT_LN_OUT = {4: 8, 2: 3 * 2 + 2}          # compute bytes -> h1 (+casts) and h2
ACT_INNER = {4: 12 + 4 + 16 + 16, 2: 6 + 2 + 8 + 8}
# Under FSDP's mixed precision the weights, so the embeddings' output and the whole residual
# stream, are 2-byte. On a CPU autocast leaves LayerNorm in the input's dtype: x, x2, h1 (one
# tensor for q, k, v: their casts are no-ops) and h2 are 2-byte, 8 in all. On CUDA LayerNorm is
# on autocast's fp32 list: it keeps fp32 casts of x and x2, and h1, h2 as under autocast.
ACT_WHOLE_2BYTE_STREAM = {"cpu": 2 + 2 + 2 + 2, "cuda": 8 + 8}
# checkpointing keeps a block's input only (the residual stream's dtype)
ACT_CHECKPOINT = 4


def activation_bytes_per_layer(seq: int, micro_batch: int, hidden: int, compute_bytes: int = FP32_BYTES,
                               tp: int = 1, sequence_parallel: bool = False, stream_bytes: int = FP32_BYTES,
                               device: str = "cpu") -> int:
    """Bytes one block keeps for backward for one micro-batch (seq x micro_batch tokens):
    seq*b*h*(whole + split/tp), with whole = LayerNorm outputs (+ inputs unless sequence
    parallel splits them) and split = the attention and MLP tensors (see ACT_* above).
    `compute_bytes` 4 for fp32, 2 under bf16/fp16 autocast; `stream_bytes` 2 where the
    residual stream itself is 2-byte (FSDP's mixed precision)."""
    ln_in, ln_out = ACT_LN_IN, ACT_LN_OUT[compute_bytes]
    if stream_bytes < FP32_BYTES:
        both = ACT_WHOLE_2BYTE_STREAM[device]
        ln_in = ln_out = both // 2
    whole = ln_out + (0 if sequence_parallel else ln_in)
    split = ACT_INNER[compute_bytes] + (ln_in if sequence_parallel else 0)
    return seq * micro_batch * hidden * whole + seq * micro_batch * hidden * split // tp


def estimate_memory(L: int, H: int, V: int, T_max: int, seq: int, micro_batch: int,
                    layers_on_device: int, first: bool, last: bool, shard: int = 1, tp: int = 1,
                    in_flight: float = 1, logits_in_flight: int = 1, checkpointing: bool = False,
                    device: str = "cpu", sequence_parallel: bool = False, compute_bytes: int = FP32_BYTES,
                    fsdp_reshard: bool | None = None, fsdp_mixed: bool = False, microsteps: int = 1,
                    keeps_outputs: bool = False, chunked_head: bool = False,
                    vocab_parallel: bool = False) -> MemoryEstimate:
    """Peak bytes of one device holding `layers_on_device` blocks (plus the embeddings if
    `first`, the final LayerNorm and tied output layer if `last`), by part (how they add up:
    `MemoryEstimate.model_bytes`):

    - state: fp32 weights, fp32 gradients and AdamW's two fp32 moments (16 bytes/parameter,
      REFERENCE.md); the blocks' matrices divided by tensor parallel `tp`, and the tied V x H
      matrix too where it is vocabulary-parallel (`vocab_parallel`); everything divided
      by `shard` under FSDP's full sharding;
    - activations: `in_flight` micro-batches' worth of this device's blocks
      (`activation_bytes_per_layer`); with checkpointing each block keeps its fp32 input and
      one block at a time is recomputed whole;
    - logits (last stage): per micro-batch in flight, the fp32 log-softmax the loss keeps, plus
      two fp32 (tokens x V) tensors while its backward runs (the log-softmax's gradient and the
      logits'); under autocast also the 2-byte logits; where a pipeline schedule keeps each
      micro-batch's stage output until its backward (`keeps_outputs`,
      torch.distributed.pipelining's forward cache), the logits of every one in flight. Under
      the chunked head (`chunked_head`, bench/loss.py) one chunk's fp32 logits (and their 2-byte
      copy under autocast) at a time, and per micro-batch in flight the gradients its forward
      already made: the output matrix's (V x H fp32) and the hidden states' (tokens x H), and
      under autocast a chunk's 2-byte V x H product added into the first;
      vocabulary-parallel (`vocab_parallel`, tensor parallel) the same with V/tp columns, in
      chunks under the chunked head, in one chunk of all the tokens under the plain one;
    - buffers: FSDP's gathered units (root kept gathered; the running block and the prefetched
      next, or every block without resharding; in compute precision with FSDP's mixed precision
      `fsdp_mixed`, else fp32) and one block's unsharded fp32 gradient before its
      reduce-scatter (and its 2-byte original under mixed precision; FSDP2 gathers into its
      own buffers at dp = 1 too); autocast's cached 2-byte copies of the matrices it
      multiplies (not under FSDP's mixed precision: its gathered weights
      already are 2-byte); and a second copy of the largest gradient while it is accumulated
      into the first: where one module holds the tied embedding for input and output
      (`first and last`: its dense V x H gradient from the input side is added to the output
      side's), or where several micro-steps (`microsteps`: micro-batches x grad_accum) each
      produce a gradient to add (the embedding's when this device holds it, else a 4H x H/tp
      MLP matrix's).
    """
    block = 12 * H * H // tp + 13 * H
    p = layers_on_device * block
    vh = head_rows(V, tp, vocab_parallel) * H  # the tied matrix this device holds
    if first or last:
        p += vh
    if first:
        p += T_max * H
    if last:
        p += 2 * H
    params = p * FP32_BYTES // shard
    stream = compute_bytes if fsdp_mixed else FP32_BYTES
    per_layer = activation_bytes_per_layer(seq, micro_batch, H, compute_bytes, tp, sequence_parallel, stream,
                                           "cuda" if device == "cuda" else "cpu")
    if checkpointing:
        tokens_h = seq * micro_batch * H
        acts = int(in_flight * layers_on_device * tokens_h * ACT_CHECKPOINT * stream // FP32_BYTES) + per_layer
    else:
        acts = int(in_flight * layers_on_device * per_layer)
    tokens_v = micro_batch * seq * V
    logits = 0
    if last and (chunked_head or vocab_parallel):
        chunk = loss_chunk_tokens(device, vh // H, compute_bytes == FP32_BYTES) if chunked_head else micro_batch * seq
        chunk_v = min(chunk, micro_batch * seq) * (vh // H)
        logits = chunk_v * (FP32_BYTES + (compute_bytes if compute_bytes < FP32_BYTES else 0))
        logits += logits_in_flight * (vh + micro_batch * seq * H) * FP32_BYTES
        if compute_bytes < FP32_BYTES:  # a chunk's 2-byte product for the matrix's gradient (fp32: in place)
            logits += vh * compute_bytes
    elif last:
        logits = (logits_in_flight + 2) * tokens_v * FP32_BYTES
        if keeps_outputs:
            logits += logits_in_flight * tokens_v * compute_bytes
        elif compute_bytes < FP32_BYTES:
            logits += tokens_v * compute_bytes
    root = (vh if (first or last) else 0) + (T_max * H if first else 0)
    gathered = compute_bytes if fsdp_mixed else FP32_BYTES
    buffers = 0
    if fsdp_reshard is not None:
        blocks_gathered = 2 if fsdp_reshard else layers_on_device
        # one block's unsharded gradient (in the gather dtype) and its fp32 copy for the reduce-scatter
        grad_buffer = block * (FP32_BYTES + (gathered if fsdp_mixed else 0))
        buffers += root * gathered + min(blocks_gathered, layers_on_device) * block * gathered + grad_buffer
    if compute_bytes < FP32_BYTES and not fsdp_mixed:
        # autocast casts what F.linear multiplies: the blocks' matrices, and the tied embedding
        # on the last stage (the output layer); embeddings (wte as input, wpe) are never cast
        buffers += (layers_on_device * block + (vh if last else 0)) * compute_bytes
    grad_bytes = gathered if fsdp_reshard is not None else FP32_BYTES
    if (first and last) or microsteps > 1:
        buffers += (vh if (first or last) else 4 * H * H // tp) * grad_bytes
    return MemoryEstimate(params, params, 2 * params, acts, logits, RUNTIME_BYTES[device], buffers)


def pipeline_in_flight(schedule: str, microbatches: int, stages: int, stage: int, chunks: int = 1) -> float:
    """Micro-batches whose activations a pipeline stage holds at once, in units of one
    micro-batch through all of this rank's layers:

    - naive: 1 (the whole batch, one pass); GPipe: every micro-batch (all forwards first);
    - 1F1B: stage i starts p - i forwards before its first backward, min(m, p - i);
    - interleaved 1F1B (v chunks per rank): rank r runs (v-1)*p + 2*(p-1-r) warm-up forwards
      of chunks before its first backward (torch.distributed.pipelining.schedules
      `_get_warmup_ops`, with p micro-batches per round), so (that + 1) chunk-micro-batches of
      L/(p*v) layers each, at most m*v: divided by v in this unit.
    """
    m, p = microbatches, stages
    if schedule == "naive":
        return 1
    if schedule == "gpipe":
        return m
    if schedule == "1f1b":
        return min(m, p - stage)
    warmup = (chunks - 1) * p + 2 * (p - 1 - stage)
    return min(warmup + 1, m * chunks) / chunks


def predict_memory(spec: RunSpec) -> MemoryEstimate:
    """Predicted peak of the most loaded device: the largest of `predict_memory_stages`."""
    return max(predict_memory_stages(spec), key=lambda e: e.total_bytes)


def predict_memory_stages(spec: RunSpec) -> list[MemoryEstimate]:
    """Predicted peak of a device of each pipeline stage, first to last (one entry without a
    pipeline; see estimate_memory for the terms), from the
    layout: tp splits the blocks' matrices (and, vocabulary-parallel, the tied matrix), pp the layers, FSDP
    shards the state over dp, a pipeline keeps its schedule's micro-batches in flight (`pipeline_in_flight`;
    the last stage the logits of as many: all of them under GPipe), and a process that drives
    several devices (nn.DataParallel) holds all their activations."""
    s, lay = spec.shape, spec.layout
    pipe = lay.pipeline
    micro = spec.batch_size // (pipe.microbatches if pipe else 1)
    sharded = lay.data_parallel is DataParallel.fsdp
    compute = FP32_BYTES if spec.precision is Precision.fp32 else 2
    ests = []
    for i, r in enumerate(flops.stage_layers(s.n_layer, lay.pp)):
        held = pipeline_in_flight(pipe.schedule.value, pipe.microbatches, lay.pp, i, pipe.stages_per_rank) if pipe else 1
        ests.append(estimate_memory(
            s.n_layer, s.n_embd, s.vocab_size, s.block_size, spec.seq_len, micro * lay.devices_per_process, len(r),
            first=i == 0, last=i == lay.pp - 1, shard=lay.state_shards, tp=lay.tp, in_flight=held,
            logits_in_flight=pipe.microbatches if pipe is not None and pipe.schedule is Schedule.gpipe else 1,
            checkpointing=spec.activation_checkpointing is Checkpointing.full, device=spec.accelerator.value,
            sequence_parallel=lay.sequence_parallel, compute_bytes=compute,
            fsdp_reshard=lay.reshard_after_forward if sharded else None, fsdp_mixed=sharded and compute < FP32_BYTES,
            microsteps=(pipe.microbatches if pipe else 1) * spec.grad_accum,
            keeps_outputs=pipe is not None and pipe.schedule is not Schedule.naive,
            chunked_head=spec.loss_head == "chunked", vocab_parallel=lay.vocab_parallel))
    return ests
