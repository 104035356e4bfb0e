"""fsdp: FSDP2 (`fully_shard`), parameters, gradients and optimizer state sharded over dp.

Each block is its own unit (all-gathered just before its forward and backward, then freed
if `reshard_after_forward`), the root holds the embeddings, final LayerNorm and tied output
layer. Under bf16/fp16 the mixed-precision policy computes in that dtype and reduces
gradients in fp32; the sharded master weights stay fp32.
"""
from __future__ import annotations

from bench.parallel.base import Strategy
from bench.spec import DataParallel, Layout


class FSDP(Strategy):
    name = "fsdp"
    summary = ("FSDP2 `fully_shard` per block then the root, over a 1-D mesh; bf16/fp16 through its "
               "mixed-precision policy (fp32 reduce)")

    def layout(self, devices, opts):
        return Layout(dp=devices, tp=1, pp=1, data_parallel=DataParallel.fsdp,
                      reshard_after_forward=opts.reshard_after_forward)


    def variants(self, devices):
        return [{"reshard_after_forward": r} for r in (True, False)]


STRATEGY = FSDP()
