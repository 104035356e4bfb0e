"""Pure arithmetic about the model: parameters, FLOPs per token, memory per device.

No torch here, so every figure can be checked by hand (tests/test_flops.py does).
Formulas and their sources are in shared/REFERENCE.md; the conventions are:

* parameters (tied embedding, biases, LayerNorms):
      V*H + T_max*H + L*(12*H^2 + 13*H) + 2*H
* matmul parameters N (what multiplies activations; the tied embedding counts once, as the
  output layer):  12*L*H^2 + V*H
* training FLOPs per token (forward + backward, PaLM appendix B; torchtitan and nanoGPT use
  the same form):  6*N + 12*L*H*T, T the sequence length. The attention term does not
  discount causal masking (it counts the full T x T score matrix), as PaLM does not.
"""
from __future__ import annotations

from dataclasses import dataclass

FP32_BYTES = 4


def n_params(L: int, H: int, V: int, T_max: int) -> int:
    """All trainable parameters of the GPT-2-style model (embedding counted once)."""
    return V * H + T_max * H + L * (12 * H * H + 13 * H) + 2 * H


def n_matmul_params(L: int, H: int, V: int) -> int:
    """Parameters that take part in matrix multiplies (the 'N' of 6N)."""
    return 12 * L * H * H + V * H


def flops_per_token(L: int, H: int, V: int, T: int) -> int:
    """Model FLOPs per trained token: 6N + 12*L*H*T."""
    return 6 * n_matmul_params(L, H, V) + 12 * L * H * T


def bubble_fraction(stages: int, microbatches: int, chunks: int = 1) -> float:
    """Ideal pipeline bubble (REFERENCE.md): GPipe and 1F1B (p - 1) / (m + p - 1); interleaved
    1F1B with v chunks per stage (p - 1) / (v*m + p - 1). The naive layer split is m = 1:
    (p - 1) / p, one stage busy at a time."""
    return (stages - 1) / (chunks * microbatches + stages - 1)


def stage_layers(n_layer: int, stages: int) -> list[range]:
    """Contiguous blocks per pipeline stage; the first `n_layer % stages` get one more."""
    base, extra = divmod(n_layer, stages)
    out, start = [], 0
    for s in range(stages):
        n = base + (1 if s < extra else 0)
        out.append(range(start, start + n))
        start += n
    return out


# What a rank holds beyond the model's tensors once it trains, measured on this project's
# CPU machine (torch 2.13, gloo): allocator caches and kernel workspaces add 110-150 MiB to
# the RSS right after the process group exists. On a GPU the CUDA context, cuBLAS and NCCL
# workspaces take 0.3-0.6 GB outside torch's allocator (REFERENCE.md); NVML counts them.
RUNTIME_BYTES = {"cpu": 128 * 2**20, "cuda": 512 * 2**20}


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak bytes on the most loaded device, by part."""
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    logits_bytes: int
    runtime_bytes: int = 0
    buffers_bytes: int = 0  # FSDP's gathered parameters/gradients, autocast's weight copies

    @property
    def total_bytes(self) -> int:
        return (self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.activations_bytes
                + self.logits_bytes + self.runtime_bytes + self.buffers_bytes)


def activation_bytes_per_layer(s: int, b: int, h: int, a: int, act_bytes: int,
                               fused_attention: bool = True) -> int:
    """Korthikanti et al. (2022) per-layer activations, s*b*h*(34 + 5*a*s/h) in 2-byte units.

    The 34 counts 2-byte activations; `act_bytes` rescales it (4 for fp32 activations).
    Fused attention (SDPA) does not keep the a*s*s score and softmax tensors: the 5*a*s/h
    term is dropped then.
    """
    per = 34 + (0 if fused_attention else 5 * a * s / h)
    return int(s * b * h * per * act_bytes / 2)


def estimate_memory(L: int, H: int, V: int, T_max: int, a: int, seq: int, micro_batch: int,
                    layers_on_device: int, first: bool, last: bool, shard: int = 1, tp: int = 1,
                    act_bytes: int = FP32_BYTES, in_flight: int = 1,
                    checkpointing: bool = False, device: str = "cpu", sequence_parallel: bool = False,
                    compute_bytes: int = FP32_BYTES, fsdp_reshard: bool | None = None) -> MemoryEstimate:
    """Peak memory of one device holding `layers_on_device` blocks: fp32 weights, fp32
    gradients and AdamW's two fp32 moments (16 bytes per parameter), the blocks' matrices
    divided by the tensor-parallel degree `tp`, everything divided by `shard` under full
    sharding (FSDP); `in_flight` micro-batches' activations alive at once. With
    checkpointing a block keeps only its input (2*s*b*h in 2-byte units) plus one block's
    full activations being recomputed. `compute_bytes` is 2 under bf16/fp16 autocast."""
    block = 12 * H * H // tp + 13 * H
    p = layers_on_device * block
    if first or last:
        p += V * H
    if first:
        p += T_max * H
    if last:
        p += 2 * H
    params = p * FP32_BYTES // shard
    per_layer = activation_bytes_per_layer(seq, micro_batch, H, a, act_bytes)
    if tp > 1:  # Korthikanti: 10 of the 34 stay whole (LayerNorm inputs, residuals), 24 split;
        whole = 10 / tp if sequence_parallel else 10  # sequence parallel splits those too
        per_layer = int(seq * micro_batch * H * (whole + 24 / tp) * act_bytes / 2)
    if checkpointing:
        acts = in_flight * layers_on_device * seq * micro_batch * H * act_bytes + per_layer
    else:
        acts = in_flight * layers_on_device * per_layer
    # at the start of backward three (tokens x V) fp32 tensors live together: the saved
    # log-softmax, its gradient and the logits' gradient
    logits = 3 * micro_batch * seq * V * FP32_BYTES if last else 0
    # buffers: under FSDP (shard > 1, fsdp_reshard set) the root's parameters stay gathered,
    # a block is gathered in compute precision while it runs (and the next is prefetched),
    # its full fp32 gradient exists until the reduce-scatter; without resharding every
    # block stays gathered from forward to backward. Under autocast, the bf16/fp16 copies
    # of the weights are cached for the step.
    root = (V * H if (first or last) else 0) + (T_max * H if first else 0)
    buffers = 0
    if fsdp_reshard is not None and shard > 1:
        blocks_gathered = 2 if fsdp_reshard else layers_on_device
        buffers += root * compute_bytes + blocks_gathered * block * compute_bytes + block * FP32_BYTES
    if compute_bytes < FP32_BYTES:
        buffers += (layers_on_device * block + root) * compute_bytes
    return MemoryEstimate(params, params, 2 * params, acts, logits, RUNTIME_BYTES[device], buffers)
