"""dataparallel: the single-process `nn.DataParallel` of the seed design, GPUs only.

One process drives every GPU: each step it scatters the batch, replicates the module from
GPU 0 to the others, gathers the outputs back on GPU 0 and reduces the gradients there.
It is here to show, next to `dp`, why DDP replaced it; it has no CPU meaning (plan.py
rejects it without CUDA devices).
"""
from __future__ import annotations

from functools import partial

import torch.nn as nn

from bench.model import build_model
from bench.parallel import Ctx, Parallel, apply_checkpointing, micro_steps
from bench.plan import RunSpec


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    model = build_model(spec.shape, ctx.device, spec.seed)
    if spec.activation_checkpointing == "full":
        apply_checkpointing(model)
    dp = nn.DataParallel(model, device_ids=list(range(spec.devices)))
    return Parallel([dp], partial(micro_steps, dp, ctx=ctx), has_loss=True)
