"""dp: DistributedDataParallel, one process per device, each holding a full replica.

Gradients are all-reduced in buckets during backward (overlapping communication with the
remaining backward); `gradient_as_bucket_view` makes .grad a view into the bucket, saving a
copy and a model's worth of memory. Under gradient accumulation the all-reduce runs only on
the last micro-step (`no_sync` on the others).
"""
from __future__ import annotations

from functools import partial

from torch.nn.parallel import DistributedDataParallel as DDP

from bench.model import build_model
from bench.parallel import Ctx, Parallel, prepare_blocks, micro_steps
from bench.plan import RunSpec


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    model = build_model(spec.shape, ctx.device, spec.seed)  # same seed: replicas start equal
    prepare_blocks(model, spec)
    ddp = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
              gradient_as_bucket_view=True, process_group=ctx.mesh["dp"].get_group())
    return Parallel([ddp], partial(micro_steps, ddp, ctx=ctx, no_sync=ddp.no_sync), has_loss=True)
