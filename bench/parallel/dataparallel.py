"""dataparallel: the single-process `nn.DataParallel` of the seed design, GPUs only.

One process drives every GPU: each step it scatters the batch, replicates the module from
GPU 0 to the others, gathers the outputs back on GPU 0 and reduces the gradients there.
It is here to show, next to `dp`, why DDP replaced it; it has no CPU meaning.
"""
from __future__ import annotations

from bench.config import Accelerator
from bench.parallel.base import Strategy
from bench.spec import DataParallel, Layout


class DataParallelStrategy(Strategy):
    name = "dataparallel"
    summary = "the single-process `nn.DataParallel` over `devices` GPUs (invalid without CUDA)"

    def layout(self, devices, opts):
        return Layout(dp=devices, tp=1, pp=1, data_parallel=DataParallel.dataparallel,
                      devices_per_process=devices)

    def checks(self, opts, where):
        if where.nodes > 1:
            yield ("strategy=dataparallel (nn.DataParallel) runs in one process on one node; "
                   "use strategy=dp across nodes")
        if where.accelerator is not Accelerator.cuda:
            yield ("strategy=dataparallel (nn.DataParallel) is a multi-GPU, single-process "
                   "strategy with no CPU meaning; use strategy=dp on CPU")


STRATEGY = DataParallelStrategy()
