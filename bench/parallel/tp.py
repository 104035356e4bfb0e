"""tp: head-wise (Megatron-style) tensor parallel through DTensor plans.

In each block, Q, K, V and the MLP's first layer are split column-wise (each rank computes
n_head/tp whole heads and 4H/tp hidden units), the attention output projection W^O and the
MLP's second layer row-wise, so a block costs two all-reduces forward and, in backward, one
per column-parallel input (Q, K, V and the MLP's first layer: four; bench/comm.py).
Embeddings, LayerNorms and the tied output layer stay replicated (every rank computes them
on the same data, so their gradients agree without communication). With
`strategy.sequence_parallel=true` (Korthikanti et al.) the residual stream between blocks is
split along the sequence and the all-reduces become all-gather + reduce-scatter.
"""
from __future__ import annotations

from bench.parallel.base import Strategy
from bench.spec import Layout


class TP(Strategy):
    name = "tp"
    summary = ("Megatron-style through DTensor `parallelize_module`: Q/K/V and the MLP's first layer "
               "column-wise, W^O and the MLP's second layer row-wise; `strategy.sequence_parallel=true` "
               "adds sequence parallelism")

    def layout(self, devices, opts):
        return Layout(dp=1, tp=devices, pp=1, tensor_parallel=True, sequence_parallel=opts.sequence_parallel)


    def variants(self, devices):
        return [{"sequence_parallel": sp} for sp in (False, True)]


STRATEGY = TP()
