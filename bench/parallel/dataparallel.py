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
from bench.parallel import Ctx, Parallel, prepare_blocks, micro_steps
from bench.plan import RunSpec


class _Autocast(nn.Module):
    """DataParallel runs each replica in its own thread, where autocast is re-entered with
    the device's default dtype (fp16 on CUDA): enter ours inside the replica instead."""

    def __init__(self, module: nn.Module, ctx: Ctx):
        super().__init__()
        self.module, self._ctx = module, ctx

    def forward(self, x):
        with self._ctx.autocast():
            return self.module(x)


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    model = build_model(spec.shape, ctx.device, spec.seed)
    prepare_blocks(model, spec)
    dp = nn.DataParallel(_Autocast(model, ctx), device_ids=list(range(spec.devices)))
    return Parallel([dp], partial(micro_steps, dp, ctx=ctx), has_loss=True)
