"""single: the whole model on one device; the reference every strategy is checked against."""
from __future__ import annotations

from functools import partial

from bench.model import build_model
from bench.parallel import Ctx, Parallel, prepare_blocks, micro_steps
from bench.plan import RunSpec


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    model = build_model(spec.shape, ctx.device, spec.seed)
    prepare_blocks(model, spec)
    return Parallel([model], partial(micro_steps, model, ctx=ctx), has_loss=True)
