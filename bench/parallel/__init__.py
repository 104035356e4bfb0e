"""Parallel strategies: the registry, keyed by the config name (`strategy=<name>`).

One unit per strategy, a module named after its config name (`single`, `dp`, `fsdp`, `tp`,
`mp`, `dataparallel`, `hybrid`), each a `Strategy` (bench/parallel/base.py) that says its
layout (degrees dp x tp x pp, which parallelisms, sharding, processes), its checks and its
`apply`. Nothing outside bench/parallel/ and conf/strategy/ branches on a strategy's name:
the planner, the memory model, the worker and the report read the layout.

Adding a strategy that composes the parallelisms there are: its unit `<name>.py` (a
`Strategy` with `name`, `summary`, `layout`, and `checks` if it has any), its import and its
entry in `STRATEGIES` below, and `conf/strategy/<name>.yaml` (its `name`, and any option it
sets otherwise). Then `python -m bench.config` prints the README's key table, which lists it
(a test compares them), and tests/test_strategies.py needs a case that checks it against
`single` (a test asks for one).

The mechanics, in torch, are shared building blocks: `parallelize.py` (the fixed apply
order, tensor parallel, DDP, FSDP, nn.DataParallel, checkpointing, compile) and
`pipeline.py` (stages and schedules). This module imports no torch.
"""
from __future__ import annotations

from bench.config import Checkpointing
from bench.parallel import dataparallel, dp, fsdp, hybrid, mp, single, tp
from bench.parallel.base import Strategy

REFERENCE = "single"  # the one-device reference: strategies are checked against it, scaling is judged by it
STRATEGIES: dict[str, Strategy] = {unit.STRATEGY.name: unit.STRATEGY
                                   for unit in (single, dp, mp, tp, fsdp, dataparallel, hybrid)}


def get(name: str) -> Strategy:
    """The strategy called `name`; KeyError names the ones there are."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"strategy={name} is not implemented; use one of {', '.join(STRATEGIES)}") from None


def vocab_parallel_on(cfg: dict) -> bool:
    """Whether a (plain dict) config splits the output layer by vocabulary: `strategy.vocab_parallel`
    on, for a strategy that runs tensor parallelism (Strategy.vocab_split; at every device count,
    so that a series' 1-device point shares the identity of its larger ones). What enters the
    config hash and the identity (bench.config.bench_hash, bench.results)."""
    strategy = cfg.get("strategy") or {}
    unit = STRATEGIES.get(strategy.get("name"))
    return bool(strategy.get("vocab_parallel") and unit is not None and unit.vocab_split(strategy))


def label(strategy: str, schedule: str | None = None, tp: int = 1, pp: int = 1,
          sequence_parallel: bool = False, checkpointing: str | None = None,
          vocab_parallel: bool | None = None) -> str:
    """A layout's short name for reports: the strategy's own label ('mp/1f1b', 'hybrid tp=2')
    and the options that change it ('tp+sp', 'dp+ckpt'). A name the registry does not know
    (results from another version) keeps its name."""
    unit = STRATEGIES.get(strategy)
    name = unit.label(schedule, tp, pp) if unit else strategy + (f"/{schedule}" if schedule else "")
    if sequence_parallel:
        name += "+sp"
    if vocab_parallel is False and unit is not None and unit.vocab_split({"tp": tp}):
        name += "+full-head"  # the default splits the output layer: say where every tp rank computes it whole
    if checkpointing == Checkpointing.full.value:
        name += "+ckpt"
    return name
