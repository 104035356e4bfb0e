"""The mechanics every strategy composes, and the one fixed order they are applied in.

`parallelize(spec, ctx)` turns the model into a `Parallel` for this rank from the layout the
strategy chose (`spec.layout`). The trainer only sees `Parallel`: the modules this rank
holds and a `forward_backward(batch)` that runs one optimizer step's worth of micro-steps
and leaves the gradients in place, so the timed loop is the same code for every strategy.

Each parallelism is a small function of a module, a mesh and plain arguments
(`apply_tp`, `apply_fsdp`, `apply_ddp`, `apply_dataparallel`; the pipeline's in pipeline.py).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh

from bench.config import Checkpointing, Precision
from bench.model import GPT, materialise
from bench.parallel import pipeline
from bench.parallel.rank import AMP_DTYPES, Ctx, Parallel
from bench.spec import DataParallel, RunSpec


def parallelize(spec: RunSpec, ctx: Ctx) -> Parallel:
    """This rank's part of the model, in the fixed apply order (torchtitan's):

      1. build on the meta device (no storage yet): the whole model, or under a pipeline only
         the blocks this rank's stage(s) hold;
      2. tensor parallel: shard each block's Linear layers over the "tp" mesh dimension, and
         (vocab-parallel) the tied embedding / output matrix by vocabulary;
      3. activation checkpointing, then torch.compile, of each block (compile sees the
         checkpointed, sharded blocks, so one compilation serves them all);
      4. data parallel last (FSDP2 or DDP over "dp", or nn.DataParallel), so that it wraps
         the final, already sharded parameters;
      5. the step: the pipeline schedule, or plain micro-steps with gradient accumulation.

    Storage and initial weights come after the sharding steps (`model.materialise`), so no
    rank ever holds more than its own shards (and one whole parameter while it is drawn):
    after FSDP when FSDP shards, else before DDP / nn.DataParallel, which need real tensors
    (DDP broadcasts rank 0's).
    """
    lay = spec.layout
    if lay.pipeline is not None:
        chunks = pipeline.build_stages(spec, ctx)  # 1
    else:
        with torch.device("meta"):
            chunks = [GPT(spec.shape)]  # 1
    for m in chunks:
        m.loss_head = spec.loss_head  # the last stage's output layer + loss (bench/loss.py)
        if lay.tensor_parallel:
            apply_tp(m, ctx.mesh["tp"], lay.sequence_parallel)  # 2
            if lay.vocab_parallel:
                apply_vocab_parallel(m, ctx.mesh["tp"])  # 2
        prepare_blocks(m, spec)  # 3
    fsdp = lay.data_parallel is DataParallel.fsdp
    for m in chunks:
        if fsdp:
            apply_fsdp(m, ctx.mesh["dp"], spec.precision, lay.reshard_after_forward)  # 4
        materialise(m, ctx.device, spec.seed)  # same seed: replicas start equal
    if lay.pipeline is not None:
        if lay.data_parallel not in (None, DataParallel.fsdp):
            raise ValueError(f"a pipeline composes with FSDP only, not {lay.data_parallel.value}")
        return pipeline.schedule(chunks, spec, ctx)  # 5
    model = chunks[0]
    if lay.data_parallel is DataParallel.ddp:
        ddp = apply_ddp(model, ctx.mesh["dp"], ctx.device)  # 4
        return Parallel([ddp], partial(micro_steps, ddp, ctx=ctx, no_sync=ddp.no_sync), has_loss=True)  # 5
    if lay.data_parallel is DataParallel.dataparallel:
        model = apply_dataparallel(model, spec.devices_per_node, ctx)  # 4
    return Parallel([model], partial(micro_steps, model, ctx=ctx), has_loss=True)  # 5


def micro_steps(model: nn.Module, batch: torch.Tensor, ctx: Ctx,
                no_sync: Callable[[], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
    """Forward and backward of every micro-step of one optimizer step on a whole model.

    batch: (grad_accum, B, T + 1) tokens. Gradients are those of the mean loss over the
    micro-steps. `no_sync` (DDP) skips the gradient all-reduce on all but the last.
    """
    accum = batch.shape[0]
    total = torch.zeros((), device=ctx.device)
    for i in range(accum):
        x, y = batch[i, :, :-1], batch[i, :, 1:]
        sync = no_sync() if (no_sync is not None and i < accum - 1) else contextlib.nullcontext()
        with sync:
            with ctx.autocast():
                loss = model(x, y)  # the head inside the forward (FSDP's gathered output matrix)
                if loss.dim():  # nn.DataParallel: one loss per device, each the mean of an equal share
                    loss = loss.mean()
            ctx.backward(loss / accum)
        total += loss.detach()
    return total / accum


# -- 2. tensor parallel ---------------------------------------------------------------------

def apply_tp(model: GPT, mesh: DeviceMesh, sequence_parallel: bool) -> None:
    """Shard every block of `model` over the 1-D tensor-parallel `mesh`: Q, K, V and the MLP's
    first layer column-wise (n_head/tp whole heads, 4H/tp hidden units per rank), W^O and the
    MLP's second layer row-wise: two all-reduces per block forward, two backward. Sequence
    parallel (Korthikanti et al.) splits the residual stream and the LayerNorms by sequence
    between blocks; the all-reduces become all-gather + reduce-scatter."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, PrepareModuleOutput,
                                                   RowwiseParallel, SequenceParallel, parallelize_module)
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


def apply_vocab_parallel(model: GPT, mesh: DeviceMesh) -> None:
    """Split the tied token embedding / output matrix (V, H) by vocabulary over the 1-D
    tensor-parallel `mesh` (Megatron-LM's VocabParallelEmbedding; torchtitan's RowwiseParallel
    on the embedding, whose backward makes a whole V x H gradient on every rank): each rank holds
    V/tp rows. As the input embedding, a rank looks up the ids in its slice, zeros the others and
    one all-reduce makes the whole (B, T, H) embedding; as the
    output layer, bench/loss.py makes each rank's V/tp logits only (the loss's own all-reduces);
    both lookups are bench/loss.py's (`embedding`, `linear_cross_entropy`), on the local rows.
    Without it every tp rank holds the whole matrix and computes the whole output layer."""
    from torch.distributed.tensor import Shard, distribute_tensor
    wte = model.wte
    wte.weight = nn.Parameter(distribute_tensor(wte.weight, mesh, [Shard(0)]))


# -- 3. checkpointing and compile ------------------------------------------------------------

def prepare_blocks(model: nn.Module, spec: RunSpec) -> None:
    """Step 3 of the apply order: checkpointing, then compilation, of the blocks this rank holds."""
    if spec.activation_checkpointing is Checkpointing.full:
        apply_checkpointing(model)
    if spec.compile:
        apply_compile(model)


def apply_checkpointing(model: nn.Module) -> None:
    """Full activation checkpointing: each block keeps only its input and recomputes the
    rest in backward (non-reentrant, so it composes with DTensor and FSDP)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    for name, block in list(model.layers.items()):
        model.layers[name] = checkpoint_wrapper(block)


def apply_compile(model: nn.Module) -> None:
    """torch.compile each block in place (as torchtitan does): the blocks are identical, so
    one compilation serves them all, and the module tree (names, FSDP units, DDP buckets)
    stays as it was. Compilation happens in the first warm-up steps, outside the window."""
    for block in model.layers.values():
        block.compile()


# -- 4. data parallel -----------------------------------------------------------------------

def apply_fsdp(model: nn.Module, mesh: DeviceMesh, precision: Precision, reshard_after_forward: bool) -> None:
    """FSDP2 over the 1-D data-parallel `mesh`: each block its own unit (gathered just before
    its forward and backward, freed after forward if `reshard_after_forward`), then the root
    (embeddings, final LayerNorm, tied output layer). Under bf16/fp16 the policy computes in
    that dtype and reduces gradients in fp32; the sharded master weights stay fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mp = MixedPrecisionPolicy(param_dtype=AMP_DTYPES[precision], reduce_dtype=torch.float32) \
        if precision in AMP_DTYPES else MixedPrecisionPolicy()
    for block in model.layers.values():
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    # the root's own parameters are used last in forward: keep them gathered for backward
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)


def apply_ddp(model: nn.Module, mesh: DeviceMesh, device: torch.device) -> nn.Module:
    """DistributedDataParallel over the 1-D `mesh`: gradients all-reduced in buckets during
    backward; `gradient_as_bucket_view` makes .grad a view into the bucket (no copy, one
    model's worth of memory less)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
               gradient_as_bucket_view=True, process_group=mesh.get_group())


class _Autocast(nn.Module):
    """nn.DataParallel runs each replica in its own thread, where autocast is re-entered with
    the device's default dtype (fp16 on CUDA): enter ours inside the replica instead."""

    def __init__(self, module: nn.Module, ctx: Ctx):
        super().__init__()
        self.module, self._ctx = module, ctx

    def forward(self, x, targets=None):
        with self._ctx.autocast():
            return self.module(x, targets)  # each replica's own loss (bench/model.py GPT.forward)


def apply_dataparallel(model: nn.Module, n_gpus: int, ctx: Ctx) -> nn.Module:
    """The single-process nn.DataParallel over GPUs 0..n-1: each step it scatters the batch,
    replicates the module from GPU 0, gathers the outputs there and reduces the gradients."""
    return nn.DataParallel(_Autocast(model, ctx), device_ids=list(range(n_gpus)))
