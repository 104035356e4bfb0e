"""fsdp: FSDP2 (`fully_shard`), parameters, gradients and optimizer state sharded over dp.

Each block is its own unit (all-gathered just before its forward and backward, then freed
if `reshard_after_forward`), the root holds the embeddings, final LayerNorm and tied output
layer. Under bf16/fp16 the mixed-precision policy computes in that dtype and reduces
gradients in fp32; the sharded master weights stay fp32.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from bench.model import build_model
from bench.parallel import Ctx, Parallel, prepare_blocks, micro_steps
from bench.plan import RunSpec

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, precision: str, reshard_after_forward: bool) -> None:
    """Shard `model` (a GPT or one pipeline stage of it) over the 1-D data-parallel `mesh`."""
    mp = MixedPrecisionPolicy(param_dtype=DTYPES[precision], reduce_dtype=torch.float32) \
        if precision in DTYPES else MixedPrecisionPolicy()
    for block in model.layers.values():
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    # the root's own parameters are used last in forward: keep them gathered for backward
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    model = build_model(spec.shape, ctx.device, spec.seed)
    prepare_blocks(model, spec)
    apply_fsdp(model, ctx.mesh["dp"], spec.precision, spec.reshard_after_forward)
    return Parallel([model], partial(micro_steps, model, ctx=ctx), has_loss=True)
