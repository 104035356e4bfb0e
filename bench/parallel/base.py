"""What every strategy unit says about itself. No torch here: the planner reads these facts
before anything is launched; only `apply` (run in each rank) imports torch.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bench.config import StrategyConfig
from bench.spec import Layout

if TYPE_CHECKING:
    from bench.plan import Placement
    from bench.spec import RunSpec


class Strategy:
    """One parallel strategy: a registry entry keyed by its config name (`conf/strategy/<name>.yaml`).

    A unit says
      * `layout(devices, opts)`: its degrees dp x tp x pp on `devices` (all devices of the job),
        which parallelisms it composes (data-parallel kind, tensor parallel, pipeline and its
        schedule), how it shards state and activations, and how many devices each process
        drives; the mesh follows from the layout (`Layout.mesh`);
      * `checks(opts, where)`: what makes it invalid where it would run (`where`, a
        bench.plan.Placement: accelerator, precision, seq_len, nodes, devices of the job,
        devices_per_node), one message each, naming the number to change (the checks every
        layout shares, heads vs tp, layers vs stages, micro-batches vs batch, live in
        bench/plan.py);
      * `apply(spec, ctx)`: this rank's part of the model, ready to train. The default composes
        the layout in the fixed order of `bench.parallel.parallelize`; a strategy with
        mechanics of its own overrides it.
    """

    name: str = ""
    summary: str = ""  # one line: what runs

    def layout(self, devices: int, opts: StrategyConfig) -> Layout:
        raise NotImplementedError

    def checks(self, opts: StrategyConfig, where: Placement) -> Iterable[str | None]:
        return ()

    def variants(self, devices: int) -> list[dict[str, Any]]:
        """Its own choices on `devices` (all devices of the job), as `strategy.*` overrides:
        what the advisor (bench/candidates.py) tries; the batch split, micro-batch counts and
        checkpointing, which every layout shares, are varied there. The validator, not this
        list, decides what is invalid."""
        return [{}]

    def vocab_split(self, opts: dict[str, Any]) -> bool:
        """Whether `strategy.vocab_parallel` applies with these options (a plain dict): it splits
        the output layer over tensor parallelism, so only where tp runs. At every device count,
        so that a series' 1-device point shares the identity of its larger ones."""
        return False

    def label(self, schedule: str | None, tp: int, pp: int) -> str:
        """Its name in reports: the name, and the pipeline schedule where it has one."""
        return self.name + (f"/{schedule}" if schedule else "")

    def apply(self, spec: RunSpec, ctx: Any) -> Any:
        from bench.parallel.parallelize import parallelize
        return parallelize(spec, ctx)
