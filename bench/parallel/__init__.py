"""Parallel strategies: each file turns the model into a `Parallel` for this rank.

Every strategy exposes one entry, `apply(spec, ctx) -> Parallel`, and its building block as
a small function taking a mesh and plain arguments (`tensor.apply_tp`, `fsdp.apply_fsdp`,
`pipeline.build_stages`). The trainer only sees `Parallel`: the parameters this rank
optimises and a `forward_backward(batch)` that runs one optimizer step's worth of
micro-steps and leaves the gradients in place. So the timed loop is the same code for
every strategy.

Apply order, fixed (hybrid.py composes them in this order; the 1-D strategies use a prefix):
  1. tensor parallel: shard each block's Linear layers over the tp mesh dimension;
  2. pipeline split: which blocks (and embeddings) this rank holds;
  3. activation checkpointing, then torch.compile (compile=true), of the blocks this rank holds;
  4. data parallel last (DDP or FSDP over the dp mesh dimension), so that it sees the
     final, already sharded parameters.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh

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
    mesh: DeviceMesh | None = None  # named dims: ("dp",), ("tp",), ("pp",), ("dp", "tp"), ("dp", "pp")

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


def prepare_blocks(model: nn.Module, spec: RunSpec) -> None:
    """Step 3 of the apply order: checkpointing, then compilation, of the blocks this rank holds."""
    if spec.activation_checkpointing == "full":
        apply_checkpointing(model)
    if spec.compile:
        apply_compile(model)


MESH_DIMS = {"dp": ("dp",), "fsdp": ("dp",), "tp": ("tp",), "mp": ("pp",)}


def mesh_shape(spec: RunSpec) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """The device mesh a strategy runs on; dp is the outer dimension in hybrids."""
    if spec.strategy in MESH_DIMS:
        return (spec.devices,), MESH_DIMS[spec.strategy]
    if spec.strategy == "hybrid":
        inner = ("tp", spec.tp) if spec.tp > 1 else ("pp", spec.pp)
        return (spec.dp, inner[1]), ("dp", inner[0])
    return None  # single, dataparallel: one process


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    from bench.parallel import dataparallel, ddp, fsdp, hybrid, pipeline, single, tensor
    impl = {"single": single, "dp": ddp, "mp": pipeline, "tp": tensor, "fsdp": fsdp,
            "dataparallel": dataparallel, "hybrid": hybrid}[spec.strategy]
    return impl.apply(spec, ctx)
