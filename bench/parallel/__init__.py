"""Parallel strategies: each file turns the model into a `Parallel` for this rank.

Every strategy exposes one entry, `apply(spec, ctx) -> Parallel`. The trainer only sees
`Parallel`: the parameters this rank optimises and a `forward_backward(batch)` that runs one
optimizer step's worth of micro-steps and leaves gradients in place. So the timed loop is
the same code for every strategy.

Apply order, fixed here for the strategies that compose (hybrids, later):
  1. tensor parallel (shards each block's Linear layers across the tp group),
  2. pipeline split (which blocks this rank holds),
  3. activation checkpointing (wraps the blocks this rank holds),
  4. data parallel wrapper last (DDP or FSDP), so it sees the final parameters.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from bench.model import loss_fn
from bench.plan import RunSpec


@dataclass
class Ctx:
    """What a strategy needs to know about this rank; passed explicitly, no globals."""
    rank: int
    world: int
    local_rank: int
    device: torch.device
    precision: str
    scaler: torch.amp.GradScaler | None = field(default=None)

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()


@dataclass
class Parallel:
    modules: list[nn.Module]  # what this rank holds
    forward_backward: Callable[[torch.Tensor], torch.Tensor | None]  # batch -> mean loss
    has_loss: bool  # whether this rank computes the loss (last pipeline stage)

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]


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
                loss = loss_fn(model(x), y)
            ctx.backward(loss / accum)
        total += loss.detach()
    return total / accum


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    from bench.parallel import ddp, pipeline, single
    impl = {"single": single, "dp": ddp, "mp": pipeline}[spec.strategy]
    return impl.apply(spec, ctx)
