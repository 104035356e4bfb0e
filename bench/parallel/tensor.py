"""tp: head-wise (Megatron-style) tensor parallel through DTensor plans.

In each block, Q, K, V and the MLP's first layer are split column-wise (each rank computes
n_head/tp whole heads and 4H/tp hidden units), the attention output projection W^O and the
MLP's second layer row-wise, so a block costs two all-reduces forward and two backward.
Embeddings, LayerNorms and the tied output layer stay replicated (every rank computes them
on the same data, so their gradients agree without communication).

Sequence parallel (Korthikanti et al.): between blocks the residual stream is split along
the sequence, the LayerNorms run on their slice, and the all-reduces become an all-gather
before attention/MLP and a reduce-scatter after; activation memory outside the matmuls
shrinks by tp.
"""
from __future__ import annotations

from functools import partial

from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, PrepareModuleOutput,
                                               RowwiseParallel, SequenceParallel, parallelize_module)

from bench.model import GPT, build_model
from bench.parallel import Ctx, Parallel, prepare_blocks, micro_steps
from bench.plan import RunSpec


def apply_tp(model: GPT, mesh: DeviceMesh, sequence_parallel: bool) -> None:
    """Shard every block of `model` over the 1-D tensor-parallel `mesh`."""
    out = Shard(1) if sequence_parallel else Replicate()  # layout of the block outputs
    plan = {"attn.q": ColwiseParallel(), "attn.k": ColwiseParallel(), "attn.v": ColwiseParallel(),
            "attn.proj": RowwiseParallel(output_layouts=out),
            "mlp.fc": ColwiseParallel(), "mlp.proj": RowwiseParallel(output_layouts=out)}
    if sequence_parallel:
        gather = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
        plan |= {"ln_1": SequenceParallel(), "ln_2": SequenceParallel(), "attn": gather, "mlp": gather}
    blocks = list(model.layers.values())
    for block in blocks:
        parallelize_module(block, mesh, plan)
    if sequence_parallel and blocks:
        # the first block takes the whole sequence and keeps its slice (no communication);
        # the last block gives the whole sequence back for the final LayerNorm and output
        parallelize_module(blocks[0], mesh, PrepareModuleInput(
            input_layouts=(Replicate(),), desired_input_layouts=(Shard(1),), use_local_output=True))
        parallelize_module(blocks[-1], mesh, PrepareModuleOutput(
            output_layouts=(Shard(1),), desired_output_layouts=(Replicate(),), use_local_output=True))


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    model = build_model(spec.shape, ctx.device, spec.seed)  # same full weights on every rank,
    apply_tp(model, ctx.mesh["tp"], spec.sequence_parallel)  # then each keeps its shard
    prepare_blocks(model, spec)
    return Parallel([model], partial(micro_steps, model, ctx=ctx), has_loss=True)
