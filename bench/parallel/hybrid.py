"""hybrid: data parallel (FSDP2) over model parallel on a 2-D device mesh ("dp", "tp" | "pp").

dp x tp: each block tensor-parallel over the inner "tp" dimension, then FSDP2 over the outer
"dp" dimension (torchtitan's 2-D layout: tp within a node's fast links, dp across).
dp x mp: each dp replica is a pipeline over the inner "pp" dimension; every stage module is
FSDP2-sharded over "dp" before the schedule sees it.
"""
from __future__ import annotations

from bench.parallel.base import Strategy
from bench.parallel.mp import pipeline_of
from bench.spec import DataParallel, Layout


class Hybrid(Strategy):
    name = "hybrid"
    summary = ("FSDP2 over the outer \"dp\" dimension of a 2-D mesh, with TP (`strategy.tp=N`) or a "
               "pipeline (`strategy.pp=N`, any schedule) on the inner one")

    def layout(self, devices, opts):
        tp, pp = opts.tp, opts.pp
        return Layout(dp=devices // (tp * pp), tp=tp, pp=pp, data_parallel=DataParallel.fsdp,
                      tensor_parallel=tp > 1, pipeline=pipeline_of(opts) if pp > 1 else None,
                      sequence_parallel=opts.sequence_parallel and tp > 1,
                      vocab_parallel=opts.vocab_parallel and tp > 1,
                      reshard_after_forward=opts.reshard_after_forward)

    def label(self, schedule, tp, pp):
        return super().label(schedule, tp, pp) + (f" tp={tp}" if tp > 1 else f" pp={pp}")

    def checks(self, opts, where):
        tp, pp = opts.tp, opts.pp
        if tp < 1 or pp < 1 or (tp > 1) == (pp > 1):
            yield (f"strategy=hybrid needs exactly one of strategy.tp or strategy.pp above 1 "
                   f"(got tp={tp}, pp={pp}); e.g. strategy.tp=2 strategy.pp=1")
        elif where.devices % (tp * pp):
            yield (f"strategy=hybrid: dp x tp x pp must equal devices={where.devices}, but "
                   f"{tp * pp} does not divide it; use devices that are a multiple of {tp * pp}")


    def vocab_split(self, opts):
        return (opts.get("tp") or 1) > 1

    def variants(self, devices):
        """dp x tp with and without sequence parallel, and dp x pp with every schedule, for
        every inner degree that leaves dp above 1 (dp = 1 is `tp` or `mp`)."""
        from bench.config import Schedule
        inner = [d for d in range(2, devices) if devices % d == 0]
        return ([{"tp": d, "pp": 1, "sequence_parallel": sp} for d in inner for sp in (False, True)]
                + [{"tp": 1, "pp": d, "schedule": s.value} for d in inner for s in Schedule])


STRATEGY = Hybrid()
