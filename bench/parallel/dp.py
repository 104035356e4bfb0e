"""dp: DistributedDataParallel, one process per device, each holding a full replica.

Gradients are all-reduced in buckets during backward (overlapping communication with the
remaining backward); `gradient_as_bucket_view` makes .grad a view into the bucket, saving a
copy and a model's worth of memory. Under gradient accumulation the all-reduce runs only on
the last micro-step (`no_sync` on the others).
"""
from __future__ import annotations

from bench.parallel.base import Strategy
from bench.spec import DataParallel, Layout


class DP(Strategy):
    name = "dp"
    summary = ("DistributedDataParallel, one process per device, gradient buckets as views, "
               "`no_sync` under grad_accum")

    def layout(self, devices, opts):
        return Layout(dp=devices, tp=1, pp=1, data_parallel=DataParallel.ddp)


STRATEGY = DP()
