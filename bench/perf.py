"""`python -m bench.perf`: what the harness costs, measured side by side.

The suite's `single` strategy (elastic launch, gloo group, strategy wrapper, timed loop)
against a bare PyTorch loop on the same model, optimizer, data and thread count, each in its
own process pinned to the same core, alternated `--repeats` times. Prints median step times
and their ratio (the harness overhead), plus the fixed cost of one sweep point.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time

from bench import config


def bare_loop(spec_d: dict, q) -> None:
    """A minimal training loop, written as one would without this suite."""
    import torch
    import torch.nn.functional as F

    from bench.data import make_batches
    from bench.model import GPTShape, build_model
    torch.set_num_threads(spec_d["cpu_threads_per_device"])
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:spec_d["cpu_threads_per_device"]])
    shape = GPTShape(**spec_d["shape"])
    model = build_model(shape, torch.device("cpu"), spec_d["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=spec_d["lr"], betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    n = spec_d["warmup_steps"] + spec_d["steps"]
    data = make_batches("synthetic", None, spec_d["seed"], n, 1, 1, 0, spec_d["batch_size"],
                        spec_d["seq_len"], shape.vocab_size)
    times = []
    for step in range(n):
        t0 = time.perf_counter()
        x, y = data[step, 0, :, :-1], data[step, 0, :, 1:]
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(0, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    q.put(times[spec_d["warmup_steps"]:])


def _bare(spec_d: dict) -> list[float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=bare_loop, args=(spec_d, q))
    p.start()
    times = q.get()
    p.join()
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", default=[], help="config overrides, e.g. size=mini seq_len=256")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from bench.launch import launch
    from bench.plan import make_spec
    from bench.run import CONF_DIR
    config.register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["strategy=single", "accelerator=cpu", "precision=fp32",
                                           "steps=20", "warmup_steps=3", *a.overrides])
    spec = make_spec(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    suite, bare, fixed = [], [], []
    for i in range(a.repeats):
        with tempfile.TemporaryDirectory() as d:
            out = launch(spec, d)
        if out.status != "ok":
            raise SystemExit(f"error: the suite's run failed: {out.error}")
        m = out.metrics
        suite.append(m["step_time_s"])
        fixed.append(out.launch_s - m["window_s"])
        bare.append(statistics.median(_bare(spec.to_dict())))
        print(f"repeat {i + 1}/{a.repeats}: suite {suite[-1] * 1e3:.2f} ms/step, bare {bare[-1] * 1e3:.2f} ms/step",
              flush=True)
    s, b = statistics.median(suite), statistics.median(bare)
    print(f"\n{spec.size}, batch {spec.batch_size} x seq {spec.seq_len}, fp32, "
          f"{spec.cpu_threads_per_device} thread(s), {spec.steps} timed steps, median of {a.repeats} repeats")
    print(f"{'suite step (ms)':>22} {'bare loop (ms)':>16} {'overhead':>10} {'fixed cost/point (s)':>22}")
    print(f"{s * 1e3:>22.2f} {b * 1e3:>16.2f} {s / b - 1:>+10.1%} {statistics.median(fixed):>22.2f}")


if __name__ == "__main__":
    main()
