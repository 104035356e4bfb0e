"""hybrid: data parallel over model parallel on a 2-D device mesh ("dp", "tp" | "pp").

dp x tp: each block tensor-parallel over the inner "tp" dimension, then FSDP2 over the outer
"dp" dimension (torchtitan's 2-D layout: tp within a node's fast links, dp across).
dp x mp: each dp replica is a pipeline over the inner "pp" dimension; every stage module is
FSDP2-sharded over "dp" before the schedule sees it.
The order is the fixed one of bench/parallel/__init__.py: TP -> PP split -> checkpointing -> FSDP.
"""
from __future__ import annotations

from functools import partial

from bench.model import build_model
from bench.parallel import Ctx, Parallel, prepare_blocks, micro_steps, pipeline
from bench.parallel.fsdp import apply_fsdp
from bench.parallel.tensor import apply_tp
from bench.plan import RunSpec


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    dp_mesh = ctx.mesh["dp"]
    shard = partial(apply_fsdp, mesh=dp_mesh, precision=spec.precision,
                    reshard_after_forward=spec.reshard_after_forward)
    if spec.pp > 1:
        return pipeline.apply(spec, ctx, wrap=lambda m: shard(m))
    model = build_model(spec.shape, ctx.device, spec.seed)
    apply_tp(model, ctx.mesh["tp"], spec.sequence_parallel)
    prepare_blocks(model, spec)
    shard(model)
    return Parallel([model], partial(micro_steps, model, ctx=ctx), has_loss=True)
