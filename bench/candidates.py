"""The advisor's candidates: every layout the registry can run for a size, a device count and
a global batch, and each one's verdict before anything is launched.

`enumerate_candidates(base)` multiplies, for every strategy in the registry (bench/parallel/):
  * the strategy's own choices (`Strategy.variants`: fsdp's resharding, tp's sequence
    parallel, mp's schedules, hybrid's inner degrees and schedules);
  * the splits of the global batch G into per-replica batch b x grad accumulation a with
    b x a x dp = G (a over the divisors of G / dp);
  * for a pipeline with micro-batches (not `naive`), every micro-batch count m dividing b;
  * activation checkpointing off and on.
Nothing is left out because it looks slow or invalid: `classify` runs the planner's own
validator (bench.plan.make_spec) and the memory model on each, and the fates say why a
candidate was dropped.

The global batch is `global_batch_size`, or, when that is null, what `dp` would process:
batch_size x grad_accum x every device of the job. No torch here.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Any

from bench import parallel
from bench.config import CONF_DIR, BenchConfig, Checkpointing, StrategyConfig, show_number
from bench.memory import predict_memory
from bench.plan import MEMORY_MARGIN, Host, InvalidConfig, available_bytes, make_spec, memory_need

# fates before launching
INVALID = "invalid"  # the validator refuses it (its message)
PRUNED = "pruned"  # even the memory model's lower bound exceeds the capacity
AT_RISK = "at_risk"  # predicted over 90% of the capacity, but its lower bound fits: measured (force=true)
SURVIVOR = "survivor"


@dataclass(frozen=True)
class Candidate:
    """One layout: its overrides on top of the user's (as `bench.run` takes them) and its config."""
    overrides: tuple[tuple[str, str], ...]
    cfg: BenchConfig

    @property
    def name(self) -> str:
        """`strategy=tp strategy.sequence_parallel=true global_batch_size=16 grad_accum=2 ...`"""
        return " ".join(f"{k}={v}" for k, v in self.overrides)

    @property
    def label(self) -> str:
        """A short name for tables: `tp+sp b=8x2`, `mp/1f1b m=4 b=16x1+ckpt`."""
        s = self.cfg.strategy
        unit = parallel.STRATEGIES[s.name]
        lay = unit.layout(self.cfg.devices * self.cfg.launcher.nodes, s)
        pipe = lay.pipeline
        name = parallel.label(s.name, pipe.schedule.value if pipe else None, lay.tp, lay.pp, lay.sequence_parallel,
                              vocab_parallel=s.vocab_parallel)
        if lay.reshard_after_forward is False:
            name += " keep"
        if pipe is not None and pipe.microbatches > 1:
            name += f" m={pipe.microbatches}"
        dp = max(lay.dp, 1)
        gbs = self.cfg.global_batch_size or 0
        b = gbs // (dp * self.cfg.grad_accum) if gbs % (dp * self.cfg.grad_accum) == 0 else "?"
        name += f" b={b}x{self.cfg.grad_accum}"
        return name + ("+ckpt" if self.cfg.activation_checkpointing is Checkpointing.full else "")


@dataclass(frozen=True)
class Verdict:
    """A candidate's fate before launching, with the figures behind it."""
    fate: str  # INVALID | PRUNED | AT_RISK | SURVIVOR
    reason: str | None = None  # the validator's message, or the memory figures
    spec: Any = None  # the RunSpec, where it plans
    need_bytes: int | None = None  # the planner's figure (bench.plan.memory_need)
    need_low_bytes: int | None = None  # its lower bound
    capacity_bytes: int | None = None


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def global_batch(base: BenchConfig) -> int:
    """G: `global_batch_size`, or what dp would take: batch_size x grad_accum x every device."""
    return base.global_batch_size or base.batch_size * base.grad_accum * base.devices * base.launcher.nodes


@functools.cache
def _yaml_options(name: str) -> dict[str, Any]:
    """What conf/strategy/<name>.yaml sets (beyond its name)."""
    from omegaconf import OmegaConf
    path = os.path.join(CONF_DIR, "strategy", f"{name}.yaml")
    values = OmegaConf.to_container(OmegaConf.load(path)) if os.path.exists(path) else {}
    return {k: v for k, v in values.items() if k != "name"}


def strategy_config(name: str, opts: dict[str, Any]) -> StrategyConfig:
    """The strategy's config as `strategy=<name> strategy.k=v ...` composes it (typed)."""
    from omegaconf import OmegaConf
    node = OmegaConf.merge(OmegaConf.structured(StrategyConfig), {"name": name, **_yaml_options(name), **opts})
    return OmegaConf.to_object(node)


def _show(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else show_number(v)


def enumerate_candidates(base: BenchConfig, strategies: list[str] | None = None,
                         checkpointing: bool = True) -> list[Candidate]:
    """Every layout for `base`'s size, devices and global batch (see the module's docstring),
    in a fixed order. `strategies`: the registry's names to try (None: all);
    `checkpointing=False`: only `base`'s own activation_checkpointing."""
    devices = base.devices * base.launcher.nodes
    gbs = global_batch(base)
    ckpts = list(Checkpointing) if checkpointing else [base.activation_checkpointing]
    out: list[Candidate] = []
    for name, unit in parallel.STRATEGIES.items():
        if strategies is not None and name not in strategies:
            continue
        for opts in unit.variants(devices):
            sc = strategy_config(name, opts)
            lay = unit.layout(devices, sc)
            dp = max(lay.dp, 1)
            splits = [(gbs // (dp * a), a) for a in divisors(gbs // dp)] if gbs % dp == 0 else [(None, 1)]
            for b, accum in splits:
                pipe = lay.pipeline
                micro = divisors(b) if pipe is not None and pipe.schedule.value != "naive" and b else [None]
                for m in micro:
                    s_opts = {**opts, **({"microbatches": m} if m is not None else {})}
                    s_cfg = strategy_config(name, s_opts)
                    for ck in ckpts:
                        cfg = dataclasses.replace(base, strategy=s_cfg, global_batch_size=gbs, grad_accum=accum,
                                                  activation_checkpointing=ck)
                        ov = [("strategy", name)] + [(f"strategy.{k}", _show(v)) for k, v in s_opts.items()]
                        ov += [("global_batch_size", str(gbs)), ("grad_accum", str(accum)),
                               ("activation_checkpointing", ck.value)]
                        out.append(Candidate(tuple(ov), cfg))
    return out


def classify(c: Candidate, host: Host, capacity_bytes: int | None = None) -> Verdict:
    """A candidate's fate before launching: INVALID (the validator's message), PRUNED (even
    the lower bound of its memory need exceeds the capacity: it cannot fit), AT_RISK
    (predicted over MEMORY_MARGIN of the capacity, lower bound within it: measured anyway,
    since it may fit), else SURVIVOR. `capacity_bytes`: what the point may use (None: what
    the planner would use, bench.plan.available_bytes)."""
    try:
        spec = make_spec(c.cfg, host)
    except InvalidConfig as e:
        return Verdict(INVALID, str(e))
    pred = predict_memory(spec)
    cap = capacity_bytes if capacity_bytes is not None else available_bytes(spec, host)
    need, low = memory_need(spec, pred), memory_need(spec, pred, low=True)
    gib = 2**30
    if low > cap:
        return Verdict(PRUNED, f"predicted {need / gib:.2f} GiB (at least {low / gib:.2f}) but {cap / gib:.2f} GiB "
                               "is available", spec, need, low, cap)
    if need > MEMORY_MARGIN * cap:
        return Verdict(AT_RISK, f"predicted {need / gib:.2f} GiB of {cap / gib:.2f} GiB available "
                                f"(over {MEMORY_MARGIN:.0%}; at least {low / gib:.2f}): may not fit", spec, need, low, cap)
    return Verdict(SURVIVOR, None, spec, need, low, cap)
