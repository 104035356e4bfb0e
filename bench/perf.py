"""`python -m bench.perf`: the trainer against the hardware's limit, the harness against a bare loop.

One command, everything side by side in one run, nothing else running beside it:

  1. the matmul peak of one device (one core on a CPU, one GPU), fp32 and bf16, measured now
     (the cache keeps the best measurement ever made);
  2. for each size and precision, the suite's `single` point (the full path: plan, elastic
     launch, process group, strategy wrapper, timed loop, result) against a bare PyTorch loop
     on the same model, optimizer, data and device, alternated `--repeats` times: median
     step times, their ratio (the harness overhead), tokens/s and MFU against the peak;
  3. bf16 against fp32 throughput, per size;
  4. data-parallel scaling efficiency from 1 to 2 devices: tokens/s at 2 / (2 x tokens/s at 1);
  5. the fixed cost of a sweep point (launch, init, teardown: the point's wall time minus its
     warm-up and measured window) against its measured time;
  6. the targets, each met or missed, and for a missed one the profile that says why.

`--compile` adds torch.compile rows (compile time reported, never timed). On a GPU machine
the same command measures against the GPU's measured and datasheet bf16 peaks.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from typing import Any

from bench import config

TARGETS = {  # the figures this trainer is held to on a 2-core CPU (and MFU on a GPU)
    "overhead": 0.02,  # suite step / bare step - 1, at most
    "mfu_fp32_mini": 0.50,  # of the measured fp32 matmul peak, at least
    "bf16_speedup": 1.5,  # bf16 tokens/s / fp32 tokens/s, at least
    "dp_efficiency": 0.90,  # at 2 devices, at least
    "fixed_cost_s": 5.0,  # per point, at most
    "mfu_gpu_bf16": 0.45,  # of the datasheet dense bf16 peak, at least
}
# steps per size: enough for a stable median on small shapes, few where one step takes seconds
STEPS = {"tiny": (3, 30), "mini": (3, 20)}
STEPS_LARGE_CPU = (1, 3)
STEPS_GPU = (5, 20)


def _cfg(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from bench.run import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def bare_loop(spec_d: dict, q, profile: bool = False) -> None:
    """A minimal training loop, written as one would without this suite: same model, fused
    AdamW, autocast for bf16, data made up front, one device, a sync per step for timing."""
    import torch
    import torch.nn.functional as F

    from bench.data import make_batches
    from bench.model import GPTShape, build_model
    cuda = spec_d["accelerator"] == "cuda"
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if not cuda:
        _pin(0, spec_d["cpu_threads_per_device"])
    shape = GPTShape(**spec_d["shape"])
    model = build_model(shape, device, spec_d["seed"])
    if spec_d.get("compile"):
        for block in model.layers.values():
            block.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=spec_d["lr"], betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    n = spec_d["warmup_steps"] + spec_d["steps"]
    data = make_batches("synthetic", None, spec_d["seed"], n, 1, 1, 0, spec_d["batch_size"],
                        spec_d["seq_len"], shape.vocab_size).to(device)
    bf16 = spec_d["precision"] == "bf16"

    def step(i: int) -> None:
        x, y = data[i, 0, :, :-1], data[i, 0, :, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten(0, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    times = []
    for i in range(n):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    table = None
    if profile:
        from torch.profiler import ProfilerActivity
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=acts) as prof:
            for i in range(min(2, n)):
                step(i)
        table = _categories(prof, cuda, min(2, n))
    q.put((times[spec_d["warmup_steps"]:], table))


# where the time of a step goes, by kind of kernel (self time of the aten ops)
KINDS = (("matmul (mm, addmm, bmm, linear)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")),
         ("attention (SDPA kernels)", ("scaled_dot_product", "flash_attention", "efficient_attention")),
         ("optimizer (fused AdamW)", ("adam",)),
         ("casts and copies", ("aten::copy_", "aten::_to_copy", "aten::to")),
         ("GELU, LayerNorm, softmax, loss", ("gelu", "layer_norm", "softmax", "nll_loss", "cross_entropy")))


def _categories(prof, cuda: bool, steps: int) -> dict[str, float]:
    """ms per step by kind of op (self time, device time on a GPU)."""
    out: dict[str, float] = {name: 0.0 for name, _ in KINDS}
    out["everything else"] = 0.0
    from torch.autograd import DeviceType
    for e in prof.key_averages():
        if cuda and getattr(e, "device_type", DeviceType.CPU) != DeviceType.CPU:
            continue  # the kernels themselves: already in their op's self device time
        t = (getattr(e, "self_device_time_total", 0) if cuda else e.self_cpu_time_total) / 1e3 / steps
        key = e.key.lower()
        kind = next((name for name, pats in KINDS if any(p in key for p in pats)), "everything else")
        out[kind] += t
    return out


def _spawn(target, *args_per_process: tuple) -> Any:
    """Run `target(*args, queue)` in fresh spawned processes (one per args tuple) and return
    the first thing one of them puts on the queue: each measurement in a clean process."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=target, args=(*args, q)) for args in args_per_process]
    for p in ps:
        p.start()
    out = q.get()
    for p in ps:
        p.join()
    return out


def _pin(index: int, threads: int) -> None:
    """Pin this process as a rank would be: `threads` threads on its own cores, in order."""
    import torch
    torch.set_num_threads(threads)
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, [cores[(index * threads + i) % len(cores)] for i in range(threads)])


def _bare(spec_d: dict, profile: bool = False) -> tuple[list[float], dict | None]:
    return _spawn(_bare_proc, (spec_d, profile))


def _bare_proc(spec_d: dict, profile: bool, q) -> None:
    bare_loop(spec_d, q, profile)


def _suite(cfg: dict[str, Any]) -> dict[str, Any]:
    """One point through the suite's own entry (run_point: plan, launch, record)."""
    from bench.run import run_point
    with tempfile.TemporaryDirectory() as d:
        r = run_point(cfg, d)
    if r["status"] != "ok":
        raise SystemExit(f"error: the suite's run failed ({r['status']}): {r['error']}")
    return r


def _peaks(accelerator: str) -> dict[str, float]:
    """Measure the matmul peaks now, in a process pinned like a rank (one core / GPU 0)."""
    return _spawn(_peak_proc, (accelerator,))


def _peak_proc(accelerator: str, q) -> None:
    import torch

    from bench import hardware
    if accelerator == "cuda":
        dev = torch.device("cuda", 0)
    else:
        dev = torch.device("cpu")
        _pin(0, 1)
    out = {d: hardware.matmul_peak(dev, d, refresh=True, seconds=3.0)[0] for d in ("fp32", "bf16")}
    if accelerator == "cuda":
        name = torch.cuda.get_device_name(dev)
        out["datasheet_bf16"] = hardware.table_peak(name, "bf16")[0]
        out["device"] = name
    else:
        out["device"] = hardware.cpu_model() + " (1 core)"
    q.put(out)


def _measure_row(cfg: dict[str, Any], repeats: int, peaks: dict[str, float]) -> dict[str, Any]:
    """The suite and the bare loop on one configuration, `repeats` times each in ABBA order
    (the order alternates, so that a drift of the machine's speed, frequent on shared VMs,
    does not land on one side); one row of the table."""
    from bench.plan import make_spec
    spec = make_spec(cfg)
    suite, bare, fixed, window, compile_s = [], [], [], [], []
    for i in range(repeats):
        for which in (("suite", "bare") if i % 2 == 0 else ("bare", "suite")):
            if which == "bare":
                bare.append(statistics.median(_bare(spec.to_dict())[0]))
                continue
            r = _suite(cfg)
            m = r["metrics"]
            suite.append(m["step_time_s"])
            window.append(m["window_s"])
            fixed.append(r["duration_s"] - m["window_s"] - sum(m["warmup_times_s"]))
            compile_s.append(m.get("compile_s"))
        print(f"  {spec.size} {spec.precision}{' compile' if spec.compile else ''} {i + 1}/{repeats}: suite "
              f"{_fmt_ms(suite[-1])} ms/step, bare {_fmt_ms(bare[-1])} ms/step", flush=True)
    s, b = statistics.median(suite), statistics.median(bare)
    fpt, peak = m["flops_per_token"], peaks[spec.precision]
    tps, bare_tps = spec.tokens_per_step / s, spec.tokens_per_step / b
    datasheet = peaks.get("datasheet_bf16") if spec.precision == "bf16" else None
    return dict(size=spec.size, precision=spec.precision, compile=spec.compile, suite_ms=s * 1e3, bare_ms=b * 1e3,
                overhead=s / b - 1, overhead_best=min(suite) / min(bare) - 1, tokens_per_s=tps,
                bare_tokens_per_s=bare_tps, mfu=fpt * tps / peak, bare_mfu=fpt * bare_tps / peak,
                mfu_datasheet=fpt * tps / datasheet if datasheet else None,
                fixed_s=statistics.median(fixed), window_s=statistics.median(window),
                compile_s=compile_s[0], steps=spec.steps, repeats=repeats, spec=spec)


def _fmt_ms(x: float) -> str:
    return f"{x * 1e3:,.1f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", default=[], help="config overrides for every run, e.g. seq_len=256")
    ap.add_argument("--sizes", default=None, help="comma list (default: mini,small on CPU; small,medium,large,xl on GPU)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--repeats", type=int, default=5, help="suite/bare alternations for sizes up to mini "
                    "(bigger sizes run once on a CPU)")
    ap.add_argument("--compile", action="store_true", help="also measure compile=true (torch.compile per block)")
    ap.add_argument("--no-dp", action="store_true", help="skip the 1 -> 2 device data-parallel rows")
    ap.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                    help="profile the bare loop by kind of op: where a target is missed (auto), always, never")
    a = ap.parse_args(argv)
    if a.repeats < 1:
        ap.error("--repeats must be at least 1")
    config.register()
    os.environ["SCALEBENCH_QUIET"] = "1"  # the ranks' progress lines; perf prints its own
    from bench.plan import make_spec

    base = _cfg(["strategy=single", *a.overrides])
    accel = make_spec(base).accelerator
    sizes = (a.sizes or ("small,medium,large,xl" if accel == "cuda" else "mini,small")).split(",")
    precisions = a.precisions.split(",")
    t_start = time.perf_counter()

    print(f"scalebench perf, {time.strftime('%Y-%m-%d %H:%M')}: measuring matmul peaks ...", flush=True)
    peaks = _peaks(accel)
    print(f"device: {peaks['device']}; measured matmul peak fp32 {peaks['fp32'] / 1e9:,.1f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:,.1f} GFLOP/s" + (f"; datasheet bf16 {peaks['datasheet_bf16'] / 1e12:,.0f} TFLOP/s"
                                                        if peaks.get("datasheet_bf16") else ""), flush=True)

    rows: list[dict[str, Any]] = []
    variants = [False, True] if a.compile else [False]
    for size in sizes:
        warm, steps = STEPS_GPU if accel == "cuda" else STEPS.get(size, STEPS_LARGE_CPU)
        repeats = a.repeats if (accel == "cuda" or size in STEPS) else 1
        for prec in precisions:
            for comp in variants:
                w = max(warm, 2) if comp else warm  # compilation needs two warm-up steps
                cfg = _cfg(["strategy=single", f"size={size}", f"precision={prec}", f"warmup_steps={w}",
                            f"steps={steps}", f"compile={str(comp).lower()}", *a.overrides])
                rows.append(_measure_row(cfg, repeats, peaks))

    print(f"\n{'size':<6} {'prec':<5} {'compile':<7} {'suite ms':>9} {'bare ms':>9} {'overhead':>9} "
          f"{'(best)':>7} {'tokens/s':>9} {'MFU':>5} {'bare MFU':>8}" + (" MFU(datasheet)" if accel == "cuda" else ""))
    for r in rows:
        print(f"{r['size']:<6} {r['precision']:<5} {'yes' if r['compile'] else 'no':<7} {r['suite_ms']:>9,.1f} "
              f"{r['bare_ms']:>9,.1f} {r['overhead']:>+9.1%} {r['overhead_best']:>+7.1%} {r['tokens_per_s']:>9,.0f} "
              f"{r['mfu']:>5.2f} "
              f"{r['bare_mfu']:>8.2f}" + (f" {r['mfu_datasheet']:>14.2f}" if r["mfu_datasheet"] else ""))
    print("  (step times: median over the repeats of each run's median step; overhead = suite / bare - 1, "
          "also from the best runs;\n   MFU: (6N + 12LHT) x tokens/s over the measured matmul peak of the same "
          f"precision; seq {rows[0]['spec'].seq_len}, batch {rows[0]['spec'].batch_size}, one device)")
    for r in rows:
        if r["compile"] and r["compile_s"] is not None:
            print(f"  compile: {r['size']} {r['precision']}: {r['compile_s']:.1f} s of compilation in the warm-up, "
                  "not in the measured window")

    speedups = {}
    for size in sizes:
        by = {r["precision"]: r for r in rows if r["size"] == size and not r["compile"]}
        if "fp32" in by and "bf16" in by:
            speedups[size] = (by["bf16"]["tokens_per_s"] / by["fp32"]["tokens_per_s"],
                              by["bf16"]["bare_tokens_per_s"] / by["fp32"]["bare_tokens_per_s"])
            print(f"bf16 / fp32 throughput, {size}: suite {speedups[size][0]:.2f}x, bare loop {speedups[size][1]:.2f}x")

    dp_eff = None
    can_dp = not a.no_dp and (accel == "cpu" and len(os.sched_getaffinity(0)) >= 2 or accel == "cuda" and _gpus() >= 2)
    if can_dp:
        size = sizes[0] if accel == "cuda" else "mini"
        warm, steps = STEPS_GPU if accel == "cuda" else STEPS["mini"]
        tps = {1: [], 2: []}
        for i in range(a.repeats):
            for n in ((1, 2) if i % 2 == 0 else (2, 1)):  # ABBA, as above
                r = _suite(_cfg(["strategy=dp", f"devices={n}", f"size={size}", "precision=fp32" if accel == "cpu"
                                 else "precision=bf16", f"warmup_steps={warm}", f"steps={steps}", *a.overrides]))
                tps[n].append(r["metrics"]["tokens_per_s"])
                if n == 2:
                    m2 = r["metrics"]
            print(f"  dp {size} {i + 1}/{a.repeats}: 1 device {tps[1][-1]:,.0f} tokens/s, 2 devices {tps[2][-1]:,.0f}",
                  flush=True)
        t1, t2 = statistics.median(tps[1]), statistics.median(tps[2])
        dp_eff = t2 / (2 * t1)
        print(f"data parallel, {size}: 1 device {t1:,.0f} tokens/s, 2 devices {t2:,.0f} tokens/s, "
              f"efficiency {dp_eff:.3f}")
        dp_detail = (size, t1, t2, m2)

    eager = [r for r in rows if not r["compile"]]
    fixed = statistics.median(r["fixed_s"] for r in eager)
    f0 = min(eager, key=lambda r: r["window_s"])
    print(f"fixed cost of a point (launch, init, teardown): {fixed:.2f} s (median over the runs); "
          f"{f0['size']} {f0['precision']}: {f0['fixed_s']:.2f} s against {f0['window_s']:.2f} s measured "
          f"({f0['steps']} steps)")

    # targets, met or missed
    print("\ntargets")
    checks: list[tuple] = []
    for r in eager:
        if r["repeats"] < 3:  # one run each: between-process noise, not the harness
            print(f"  (harness overhead, {r['size']} {r['precision']}: {r['overhead']:+.1%} from one run each, "
                  "not judged: runs of one configuration differ by several % between processes here)")
            continue
        checks.append((f"harness overhead, {r['size']} {r['precision']}", f"{r['overhead']:+.1%}",
                       f"<= {TARGETS['overhead']:.0%}", r["overhead"] <= TARGETS["overhead"], r))
    if accel == "cpu":
        for r in eager:
            if r["size"] == "mini" and r["precision"] == "fp32":
                checks.append(("MFU fp32, mini (of the measured peak)", f"{r['mfu']:.2f}",
                               f">= {TARGETS['mfu_fp32_mini']:.2f}", r["mfu"] >= TARGETS["mfu_fp32_mini"], r))
        for size, (sp, _) in speedups.items():
            checks.append((f"bf16 / fp32 throughput, {size}", f"{sp:.2f}x", f">= {TARGETS['bf16_speedup']}x",
                           sp >= TARGETS["bf16_speedup"], ("speedup", size)))
    else:
        for r in eager:
            if r["precision"] == "bf16" and r["mfu_datasheet"] is not None:
                checks.append((f"MFU bf16, {r['size']} (of the datasheet peak)", f"{r['mfu_datasheet']:.2f}",
                               f">= {TARGETS['mfu_gpu_bf16']:.2f}", r["mfu_datasheet"] >= TARGETS["mfu_gpu_bf16"], r))
    if dp_eff is not None:
        checks.append(("data-parallel efficiency, 1 -> 2 devices", f"{dp_eff:.3f}", f">= {TARGETS['dp_efficiency']}",
                       dp_eff >= TARGETS["dp_efficiency"], None))
    checks.append(("fixed cost of a point", f"{fixed:.2f} s", f"< {TARGETS['fixed_cost_s']:.0f} s",
                   fixed < TARGETS["fixed_cost_s"], None))
    for name, got, want, ok, _ in checks:
        print(f"  {'met   ' if ok else 'MISSED'} {name:<48} {got:>8}  (target {want})")
    if dp_eff is not None and (a.profile == "always" or (a.profile == "auto" and dp_eff < TARGETS["dp_efficiency"])):
        _dp_profile(*dp_detail, accel)

    # profiles: where the step's time goes, for what missed (or everything, --profile always)
    todo = list(rows) if a.profile == "always" else []
    for name, _, _, ok, what in checks:
        if a.profile == "always" or (a.profile == "auto" and not ok):
            if isinstance(what, tuple):  # bf16 speedup: both precisions of that size
                todo += [r for r in eager if r["size"] == what[1]]
            elif isinstance(what, dict):
                todo.append(what)
    seen = set()
    for r in todo:
        key = (r["size"], r["precision"], r["compile"])
        if key in seen:
            continue
        seen.add(key)
        spec = r["spec"]
        _, table = _bare({**spec.to_dict(), "warmup_steps": 1, "steps": 1}, profile=True)
        total = sum(table.values()) or 1.0
        print(f"\nprofile, bare loop, {r['size']} {r['precision']}{' compiled' if r['compile'] else ''} "
              "(torch.profiler, self time per step):")
        for kind, ms in sorted(table.items(), key=lambda kv: -kv[1]):
            print(f"  {kind:<36} {ms:>9,.1f} ms  {ms / total:>5.0%}")
    print(f"\n(perf took {time.perf_counter() - t_start:,.0f} s)")


def _allreduce_proc(rank: int, n: int, port: int, q) -> None:
    import torch
    import torch.distributed as dist
    _pin(rank, 1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    buf = torch.zeros(n)
    for _ in range(3):
        dist.all_reduce(buf)
    ts = []
    for _ in range(20):
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        ts.append(time.perf_counter() - t0)
    if rank == 0:
        q.put(statistics.median(ts))
    dist.destroy_process_group()


def _dp_profile(size: str, t1: float, t2: float, m: dict[str, Any], accel: str) -> None:
    """Why 2 devices fall short of 2x: the all-reduce of the gradients (measured alone, same
    size, same backend, the same one core per rank) against the step, and what is left."""
    from bench.launch import free_port
    step1 = m["tokens_per_step"] / 2 / t1  # one replica's step on its own
    step2 = m["tokens_per_step"] / t2
    n = m["n_params"]
    print(f"\nprofile, data parallel {size} on 2 devices: step {step2 * 1e3:.1f} ms against {step1 * 1e3:.1f} ms on one "
          f"(+{step2 / step1 - 1:.0%})")
    if accel != "cpu":
        return
    port = free_port()
    ar = _spawn(_allreduce_proc, *[(r, n, port) for r in range(2)])  # rank 0 reports
    print(f"  gloo all-reduce of the {n * 4 / 2**20:.1f} MiB fp32 gradient, 2 ranks on 2 cores: {ar * 1e3:.1f} ms "
          f"({ar / step2:.0%} of the step; on a CPU the all-reduce runs on the cores that compute, so DDP's "
          "overlap with backward cannot hide it)")
    rest = step2 - step1 - ar
    print(f"  the rest, {max(rest, 0) * 1e3:.1f} ms ({max(rest, 0) / step2:.0%}): every step waits for the slower of "
          "the two ranks (each step's time is the maximum over ranks), DDP's bucketing and the agent process "
          "sharing the two cores")


def _gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


if __name__ == "__main__":
    main()
