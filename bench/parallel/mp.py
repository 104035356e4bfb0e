"""mp: layer-wise model parallel (pipeline). The blocks are split over the ranks in order.

schedule=naive: the plain split. Stage i runs its blocks on the whole micro-step batch,
    sends the activations (B, T, C) to stage i+1, and in backward receives the gradient of
    its output and sends back the gradient of its input. One stage works at a time: the
    bubble is (p-1)/p.
schedule=gpipe | 1f1b | interleaved: the batch is cut into `microbatches` micro-batches and
    run by torch.distributed.pipelining (see bench/parallel/pipeline.py).
"""
from __future__ import annotations

from bench.config import Schedule
from bench.parallel.base import Strategy
from bench.spec import Layout, Pipeline


def pipeline_of(opts) -> Pipeline:
    """The schedule and its micro-batching from the strategy's options (mp and hybrid)."""
    if opts.schedule is Schedule.naive:
        return Pipeline(Schedule.naive)
    chunks = opts.stages_per_rank if opts.schedule.value == "interleaved" else 1
    return Pipeline(opts.schedule, opts.microbatches, chunks)


class MP(Strategy):
    name = "mp"
    summary = ("layers split over devices in order; `naive`: whole batch, activations sent stage to stage; "
               "`gpipe`, `1f1b`, `interleaved`: micro-batches through `torch.distributed.pipelining`")

    def layout(self, devices, opts):
        return Layout(dp=1, tp=1, pp=devices, pipeline=pipeline_of(opts))


    def variants(self, devices):
        return [{"schedule": s.value} for s in Schedule]


STRATEGY = MP()
