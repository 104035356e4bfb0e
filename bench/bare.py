"""The bare reference loop: training as one would write it without this suite, for
`bench.perf` to hold the suite's step against.

Same model, same optimizer (`trainer.make_optimizer`: fused AdamW, weight decay on matrices
only), same data (`data.make_batches`, made up front), autocast for bf16, one device pinned
by the same rule as a rank (`cores.pin`), a synchronisation per step for timing. No process
group, no strategy wrapper, no sampler, no result. Also: a profile of its step by kind of op.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench import cores
from bench.config import Accelerator, Precision
from bench.spec import RunSpec
from bench.telemetry import os_counters, per_step

# where the time of a step goes, by kind of kernel (self time of the aten ops)
KINDS = (("matmul (mm, addmm, bmm, linear)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")),
         ("attention (SDPA kernels)", ("scaled_dot_product", "flash_attention", "efficient_attention")),
         ("optimizer (fused AdamW)", ("adam",)),
         ("casts and copies", ("aten::copy_", "aten::_to_copy", "aten::to")),
         ("GELU, LayerNorm, softmax, loss", ("gelu", "layer_norm", "softmax", "nll_loss", "cross_entropy", "logsumexp")))


def bare_loop(spec: RunSpec, profile: bool = False) -> tuple[list[float], dict[str, float] | None, dict[str, float]]:
    """Run warm-up + measured steps of `spec` (strategy ignored: one device). Returns the
    measured step times (s), with `profile` ms per step by kind of op over two more steps (else
    None), and the process's page faults and preemptions per measured step (as the suite records
    them: bench.telemetry.per_step)."""
    return run_loop(spec, _suite_model, profile)


def _suite_model(spec: RunSpec, device: Any) -> tuple[Callable, Any]:
    """The suite's model and optimizer: (loss of (x, y), optimizer)."""
    from bench.model import build_model
    from bench.trainer import make_optimizer
    model = build_model(spec.shape, device, spec.seed)
    model.loss_head = spec.loss_head  # the point's loss head: forward(x, targets) returns the loss
    if spec.compile:
        for block in model.layers.values():
            block.compile()
    return model, make_optimizer(list(model.parameters()), spec.lr, device)  # model(x, y): the loss


def run_loop(spec: RunSpec, make: Callable[[RunSpec, Any], tuple[Callable, Any]],
             profile: bool = False) -> tuple[list[float], dict[str, float] | None, dict[str, float]]:
    """The plain training loop around `make(spec, device)` -> (loss of (x, y), optimizer): one
    device pinned as a rank is, data made up front, autocast for bf16, a synchronisation per
    step on a GPU. The bare loop and the reference trainers (bench/references.py) both run here.
    Returns the measured step times (s), with `profile` ms per step by kind of op, and the
    page faults and preemptions per measured step."""
    import torch

    from bench.data import make_batches
    cuda = spec.accelerator is Accelerator.cuda
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if not cuda:
        torch.set_num_threads(spec.cpu_threads_per_device)
        cores.pin(0, spec.cpu_threads_per_device)
    # data, then model and optimizer: the order a rank makes them in (bench.worker.measure), so that
    # under the same allocator policy the two processes lay their heaps out alike
    n = spec.warmup_steps + spec.steps
    data = make_batches("synthetic", None, spec.seed, n, 1, 1, 0, spec.batch_size, spec.seq_len,
                        spec.shape.vocab_size).to(device)
    loss_of, opt = make(spec, device)
    bf16 = spec.precision is Precision.bf16

    def step(i: int) -> None:
        x, y = data[i, 0, :, :-1], data[i, 0, :, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    times = []
    for i in range(n):
        if i == spec.warmup_steps:
            counters0 = os_counters()
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    counters = per_step(counters0, os_counters(), spec.steps)
    table = None
    if profile:
        from torch.profiler import ProfilerActivity
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        k = min(2, n)
        with torch.profiler.profile(activities=acts) as prof:
            for i in range(k):
                step(i)
        table = by_kind(prof, cuda, k)
    return times[spec.warmup_steps:], table, counters


def by_kind(prof: Any, cuda: bool, steps: int) -> dict[str, float]:
    """ms per step by kind of op (self time; on a GPU the ops' self device time, each kernel
    counted once)."""
    from torch.autograd import DeviceType
    out: dict[str, float] = {name: 0.0 for name, _ in KINDS}
    out["everything else"] = 0.0
    for e in prof.key_averages():
        if cuda and getattr(e, "device_type", DeviceType.CPU) != DeviceType.CPU:
            continue  # the kernels themselves: already in their op's self device time
        t = (getattr(e, "self_device_time_total", 0) if cuda else e.self_cpu_time_total) / 1e3 / steps
        key = e.key.lower()
        kind = next((name for name, pats in KINDS if any(p in key for p in pats)), "everything else")
        out[kind] += t
    return out
