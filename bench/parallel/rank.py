"""What a rank's strategy works with and hands the trainer: `Ctx` (this rank: device,
precision, mesh) and `Parallel` (its part of the model and one optimizer step's
forward-backward). The contract between bench/parallel/'s mechanics and bench/trainer.py.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh

from bench.config import Precision

AMP_DTYPES = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


@dataclass
class Ctx:
    """What the mechanics need to know about this rank; passed explicitly, no globals."""
    rank: int
    world: int
    local_rank: int
    device: torch.device
    precision: Precision
    scaler: torch.amp.GradScaler | None = field(default=None)
    mesh: DeviceMesh | None = None  # named dims, dp outermost: ("dp",), ("tp",), ("pp",), ("dp", "tp"), ...

    def autocast(self):
        if self.precision not in AMP_DTYPES:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AMP_DTYPES[self.precision])

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()


@dataclass
class Parallel:
    modules: list[nn.Module]  # what this rank holds
    forward_backward: Callable[[torch.Tensor], torch.Tensor | None]  # (accum, B, T+1) tokens -> mean loss
    has_loss: bool  # whether this rank computes the loss (last pipeline stage)

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]
