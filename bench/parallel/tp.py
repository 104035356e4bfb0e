"""tp: head-wise (Megatron-style) tensor parallel through DTensor plans.

In each block, Q, K, V and the MLP's first layer are split column-wise (each rank computes
n_head/tp whole heads and 4H/tp hidden units), the attention output projection W^O and the
MLP's second layer row-wise, so a block costs two all-reduces forward and, in backward, one
per column-parallel input (Q, K, V and the MLP's first layer: four; bench/comm.py).
The tied token embedding / output matrix is split by vocabulary (`strategy.vocab_parallel`, on by
default: Megatron-LM's vocab-parallel embedding and cross entropy, bench/loss.py), which costs an
all-reduce of the embedding, one of the output layer's input gradient (in the loss's forward,
which forms the gradients) and the loss's small ones; with `vocab_parallel=false` every rank holds and computes the whole output
layer. The position embedding and LayerNorms stay replicated (every rank computes them on the
same data, so their gradients agree without communication). With
`strategy.sequence_parallel=true` (Korthikanti et al.) the residual stream between blocks is
split along the sequence and the all-reduces become all-gather + reduce-scatter.
"""
from __future__ import annotations

from bench.parallel.base import Strategy
from bench.spec import Layout


class TP(Strategy):
    name = "tp"
    summary = ("Megatron-style through DTensor `parallelize_module`: Q/K/V and the MLP's first layer "
               "column-wise, W^O and the MLP's second layer row-wise, the tied embedding / output layer by "
               "vocabulary; `strategy.sequence_parallel=true` adds sequence parallelism")

    def layout(self, devices, opts):
        return Layout(dp=1, tp=devices, pp=1, tensor_parallel=True, sequence_parallel=opts.sequence_parallel,
                      vocab_parallel=opts.vocab_parallel and devices > 1)


    def vocab_split(self, opts):
        return True

    def variants(self, devices):
        return [{"sequence_parallel": sp} for sp in (False, True)]


STRATEGY = TP()
