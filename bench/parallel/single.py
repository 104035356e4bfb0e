"""single: the whole model on one device; the reference every strategy is checked against."""
from __future__ import annotations

from bench.parallel.base import Strategy
from bench.spec import Layout


class Single(Strategy):
    name = "single"
    summary = "the whole model on one device; the reference"

    def layout(self, devices, opts):
        return Layout(dp=1, tp=1, pp=1)

    def checks(self, opts, where):
        if where.nodes > 1:
            yield (f"strategy=single runs on one device, not on {where.nodes} nodes; use launcher=local "
                   "or strategy=dp")
        elif where.devices != 1:
            yield (f"strategy=single runs on one device, not devices={where.devices}; "
                   "use devices=1 or strategy=dp")


STRATEGY = Single()
