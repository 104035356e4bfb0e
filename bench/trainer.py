"""The one measured training loop. It does not know the strategy (see bench/parallel).

Per optimizer step: zero grads, `forward_backward` (all micro-steps), optimizer step, then a
device synchronisation so that the step's wall time is the device's. Nothing else reads the
device inside a step: losses stay on the device until the window closes. Warm-up steps run
first and are not timed. After the window, per-step times are reduced with MAX across ranks
(the slowest rank counts) and losses are gathered from the ranks that compute them.
"""
from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from bench.parallel.rank import Ctx, Parallel
from bench.protocol import FAULT_ENV, QUIET_ENV, parse_fault
from bench.spec import RunSpec
from bench.telemetry import Sampler, os_counters, per_step


def make_optimizer(params: list[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, GPT-2/3 style: weight decay on matrices only. Fused kernels where the device
    has them (CUDA, CPU), else the multi-tensor (foreach) path."""
    # fused/foreach kernels take a group's tensors together and cannot mix DTensors (tensor
    # parallel shards) with plain tensors (replicated embeddings): one group per kind
    groups = []
    for dtensor in (False, True):
        for decay in (True, False):
            ps = [p for p in params if (p.dim() >= 2) == decay and hasattr(p, "to_local") == dtensor]
            if ps:
                groups.append({"params": ps, "weight_decay": 0.1 if decay else 0.0})
    kw: dict[str, Any] = {"lr": lr, "betas": (0.9, 0.95), "eps": 1e-8}
    try:
        return torch.optim.AdamW(groups, fused=device.type in ("cuda", "cpu"), **kw)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


def inject(fault: tuple[str, int, float] | None, rank: int, step: int) -> None:
    if fault is None or fault[0] == "slow" or fault[1] != rank or fault[2] != step:
        return
    if fault[0] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault[0] == "hang":
        time.sleep(10**6)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Progress:
    """One line per phase from rank 0: rewritten in place on a terminal, ~10 lines in a log."""

    def __init__(self, enabled: bool):
        self.enabled, self.tty = enabled and not os.environ.get(QUIET_ENV), sys.stdout.isatty()

    def __call__(self, phase: str, i: int, n: int, note: str = "") -> None:
        if not self.enabled:
            return
        line = f"  [{phase}] {i}/{n} {note}".rstrip()
        if self.tty:
            print("\r" + line.ljust(60), end="\n" if i == n else "", flush=True)
        elif i == n or i % max(1, n // 10) == 0:
            print(line, flush=True)


def train(par: Parallel, spec: RunSpec, ctx: Ctx, batches: torch.Tensor,
          progress: Callable[[str, int, int, str], None], sampler: Sampler | None = None,
          fault: str | None = None) -> dict[str, Any]:
    """Run warm-up + measured steps; returns the metrics (the same on every rank).
    `sampler` (bench/telemetry.py) runs over the measured window only. `fault`: a planted
    fault (bench.protocol.parse_fault's text; tests only), None: FAULT_ENV's."""
    opt = make_optimizer(par.parameters(), spec.lr, ctx.device)
    fault = parse_fault(os.environ.get(FAULT_ENV, "") if fault is None else fault)
    n_total = spec.warmup_steps + spec.steps
    batches = batches.to(ctx.device)  # all data resident before the first step
    losses: list[torch.Tensor] = []
    times: list[float] = []
    warmup_times: list[float] = []
    opt_times: list[float] = []  # from the end of forward-backward to the step's end (CPU: the optimizer)
    zero = torch.zeros((), device=ctx.device)
    t_window = 0.0
    for step in range(n_total):
        if step == spec.warmup_steps:  # open the window with every rank lined up
            synchronize(ctx.device)
            if ctx.world > 1:
                dist.barrier()
            t_window = time.perf_counter()
            counters0 = os_counters()
            if sampler is not None:
                sampler.start()
        inject(fault, ctx.rank, step)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = par.forward_backward(batches[step])
        t_fb = time.perf_counter()  # on a CPU the forward-backward is done here; on a GPU only queued
        if fault and fault[0] == "nan" and step == fault[2] and loss is not None:
            loss = loss * float("nan")
        if ctx.scaler is not None:
            ctx.scaler.step(opt)
            ctx.scaler.update()
        else:
            opt.step()
        synchronize(ctx.device)
        if fault and fault[0] == "slow" and fault[1] == ctx.rank:  # tests: a planted slowdown, inside the step
            time.sleep(fault[2] * (time.perf_counter() - t0))
        dt = time.perf_counter() - t0
        losses.append(loss if loss is not None else zero)
        if step >= spec.warmup_steps:
            times.append(dt)
            opt_times.append(t0 + dt - t_fb)
            progress("measure", step - spec.warmup_steps + 1, spec.steps, f"{dt:.3f} s/step")
        else:
            warmup_times.append(dt)
            progress("warm-up", step + 1, spec.warmup_steps, f"{dt:.3f} s/step")
    window = time.perf_counter() - t_window
    counters = per_step(counters0, os_counters(), spec.steps)
    if sampler is not None:
        sampler.stop()

    # reductions after the window: slowest rank per step, mean loss over loss ranks (= dp), the
    # most faults and preemptions of any rank; on the device: NCCL reduces CUDA tensors only (gloo
    # takes CPU ones, the device there)
    step_t = torch.tensor(times + opt_times + [window, *counters.values()], dtype=torch.float64, device=ctx.device)
    loss_t = torch.stack([l.float() for l in losses]).double()
    if ctx.world > 1:
        dist.all_reduce(step_t, op=dist.ReduceOp.MAX)
        n_loss = torch.tensor([1.0 if par.has_loss else 0.0], dtype=torch.float64, device=ctx.device)
        dist.all_reduce(loss_t)
        dist.all_reduce(n_loss)
        loss_t /= n_loss
    step_t, loss_t = step_t.cpu(), loss_t.cpu()
    n = len(times)
    times, opt_times, window = step_t[:n].tolist(), step_t[n:2 * n].tolist(), step_t[2 * n].item()
    counters = dict(zip(counters, step_t[2 * n + 1:].tolist()))
    q1, med, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    tokens_per_s = spec.tokens_per_step * spec.steps / window
    loss_list = loss_t.tolist()
    return {
        "tokens_per_step": spec.tokens_per_step,
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_per_device": tokens_per_s / spec.devices,
        "window_s": window,
        "step_time_s": med,
        "step_time_s_iqr": q3 - q1,
        "step_time_s_q1": q1,
        "step_time_s_q3": q3,
        "step_times_s": times,
        "loss": loss_list,
        "loss_first": loss_list[0],
        "loss_last": loss_list[-1],
        "optimizer": "AdamW fused" if opt.defaults.get("fused") else "AdamW foreach",
        # CPU only (a GPU step is timed whole: a synchronisation inside it would change it): the
        # optimizer's part of a step, slowest rank, median; what bench.project scales by parameters
        "optimizer_time_s": statistics.median(opt_times) if ctx.device.type == "cpu" else None,
        "warmup_times_s": warmup_times,
        # the rank's own figures over the window, the highest of any rank (bench.telemetry.os_counters)
        **counters,
        # compilation happens in the warm-up: its cost is the warm-up's excess over steady steps
        "compile_s": max(0.0, sum(warmup_times) - len(warmup_times) * med) if spec.compile else None,
    }
