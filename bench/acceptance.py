"""`python -m bench.acceptance --out DIR`: check an install on a GPU machine in one command.

What it runs, each step a subprocess, in this order (a failed step is recorded and the rest
still run; `plan_steps` is the list, a pure function of the GPU count):

  1. the `gpu`-marked tests (CUDA bf16 for every strategy, NVML telemetry);
  2. one sweep on 1 GPU, `size=small`, bf16: single, dp, fsdp, tp, mp (GPipe) and
     dataparallel; then `single` in fp32 and fp16;
  3. where the machine has 2+ GPUs, dp, fsdp and tp on 2 GPUs;
  4. `bench.perf` in bf16 on one GPU for small, medium, large and xl at seq 1024, batch 16
     (16,384 tokens a step: at the default 2,048 a step of `small` is a few milliseconds of
     kernel launches, not a measure of the chip), eager and with `compile=true`: MFU against
     the datasheet's dense bf16 peak (an H200's 989 TFLOP/s, bench/peaks.py) and against the
     measured matmul peak;
  5. `single` with `compile=true` (after perf: compilation is the step most likely to be slow);
  6. the report of every result (`DIR/report.pdf` and its page CSVs).

Each step has a time limit (`Step.timeout_s`); a step past it is ended, with every process it
started, and recorded with exit code 124, and the next step runs.

Everything lands in DIR: `results/`, `report.pdf`, `perf.csv` (bench.perf's table), `log.txt` (every step's output, each
line as it comes), `steps.csv` (each step: command, exit code, seconds) and `figures.csv`
(per result: tokens/s, MFU against both peaks, NVML's used peak beside torch's reserved and
the predicted memory, energy and tokens/J). Sized for about 8 minutes on one H200-class GPU.

`--cpu-rehearsal` runs the same steps where a CPU can (size tiny, a few steps, 2 CPU devices
for the 2-device step, the perf step on tiny): every path that does not need CUDA, and the
CUDA-only points (fp16, dataparallel) recorded `invalid` with their reasons, as a GPU-less
machine records them. The exit code is 1 when a step failed, else 0.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

PY = sys.executable
OUTPUTS = ("results/, report.pdf (+ report.csv, report.md, a CSV per page), perf.csv, figures.csv, steps.csv, "
           "log.txt, sweep-reports/")
# the gpu-marked tests of this checkout (the step needs pytest: `python -m bench.install --test`)
TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]  # after `python -m`
    timeout_s: float = 300.0  # past it the step and its processes are ended (exit code 124)


def plan_steps(out: str, gpus: int, rehearsal: bool) -> list[Step]:
    """The acceptance steps for a machine with `gpus` GPUs (ignored when `rehearsal`: the CPU
    stands in, 2 devices for the 2-device step), writing under the folder `out`."""
    results = os.path.join(out, "results")
    common = [f"results_root={results}", f"report_dir={os.path.join(out, 'sweep-reports')}"]
    if rehearsal:
        size, run = "tiny", ["accelerator=cpu", "steps=3", "warmup_steps=2", "seq_len=64", *common]
        perf = ("bench.perf", "accelerator=cpu", "--sizes", "tiny", "--precisions", "bf16", "--compile", "--repeats",
                "1", "--no-dp", "--profile", "never", "--csv", os.path.join(out, "perf.csv"))
        two = True
    else:
        size, run = "small", ["accelerator=cuda", "steps=10", "warmup_steps=3", *common]
        perf = ("bench.perf", "accelerator=cuda", "seq_len=1024", "batch_size=16", "--sizes", "small,medium,large,xl",
                "--precisions", "bf16", "--compile", "--repeats", "1", "--no-dp", "--profile", "never",
                "--csv", os.path.join(out, "perf.csv"))
        two = gpus >= 2
    steps = [
        Step("gpu tests", ("pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", TESTS), 180.0),
        Step("1 device, bf16, every strategy",
             ("bench.run", "-m", f"size={size}", "strategy=single,dp,fsdp,tp,mp,dataparallel",
              "strategy.schedule=gpipe", "devices=1", "precision=bf16", *run)),
        Step("single: fp32, fp16", ("bench.run", "-m", f"size={size}", "strategy=single", "devices=1",
                                    "precision=fp32,fp16", *run), 180.0),
    ]
    if two:
        steps.append(Step("2 devices, bf16", ("bench.run", "-m", f"size={size}", "strategy=dp,fsdp,tp", "devices=2",
                                              "precision=bf16", *run)))
    # perf: 4 sizes eager and compiled, each against the bare loop (about 290 s on an H200)
    steps += [Step("perf, bf16", perf, 600.0),
              Step("single: compile", ("bench.run", "-m", f"size={size}", "strategy=single", "devices=1",
                                       "precision=bf16", "compile=true", *run), 240.0),
              Step("report", ("bench.report", results, "-o", os.path.join(out, "report.pdf")), 180.0)]
    return steps


def figures(results: str) -> list[dict]:
    """One row per result under `results`: what the acceptance run is read for."""
    rows = []
    for f in sorted(glob.glob(os.path.join(results, "**", "result*.json"), recursive=True)):
        r = json.load(open(f))
        m, cfg, pred = r.get("metrics") or {}, r.get("config") or {}, r.get("prediction") or {}
        rows.append({
            "point": os.path.relpath(os.path.dirname(f), results), "status": r.get("status"),
            "size": (cfg.get("size") or {}).get("name"), "strategy": (cfg.get("strategy") or {}).get("name"),
            "devices": cfg.get("devices"), "precision": (r.get("spec") or {}).get("precision", cfg.get("precision")),
            "tokens_per_s": m.get("tokens_per_s"), "mfu_datasheet": m.get("mfu"),
            "mfu_measured_peak": m.get("mfu_measured_peak"), "peak_flops_source": m.get("peak_flops_source"),
            "mem_nvml_used_peak_bytes": m.get("mem_peak_bytes") if str(m.get("mem_source", "")).startswith("nvml")
            else None,
            "mem_torch_max_reserved_bytes": m.get("mem_torch_max_reserved_bytes"),
            "mem_predicted_bytes": pred.get("total_bytes"), "mem_source": m.get("mem_source"),
            # the like-for-like pair: the measured peak above the runtime baseline, the model's part
            "mem_baseline_bytes": m.get("mem_baseline_bytes"),
            "mem_peak_above_baseline_bytes": m.get("mem_peak_above_baseline_bytes"),
            "mem_predicted_model_bytes": pred.get("model_bytes"),
            "energy_j": m.get("energy_j"), "tokens_per_j": m.get("tokens_per_j"), "error": r.get("error"),
        })
    return rows


def run_step(step: Step, log) -> tuple[int, float]:
    """Run one step, its output to the terminal and the log as it comes; (exit code, seconds)."""
    cmd = [PY, "-m", *step.argv]
    head = f"\n=== {step.name}: {' '.join(cmd)}\n"
    print(head, end="", flush=True)
    log.write(head)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # its own session: on timeout the whole group goes (the launcher's ranks, compile workers)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          start_new_session=True) as p:
        ended = threading.Event()
        timer = threading.Timer(step.timeout_s, _end_group, (p.pid, ended))
        timer.daemon = True
        timer.start()
        try:
            for line in p.stdout:
                print(line, end="", flush=True)
                log.write(line)
                log.flush()
            p.wait()
        except KeyboardInterrupt:  # its own session does not get the terminal's Ctrl-C: pass it on
            _end_group(p.pid, ended)
            raise
        finally:
            timer.cancel()
    took = time.perf_counter() - t0
    if ended.is_set():
        note = f"=== {step.name}: ended after its limit of {step.timeout_s:.0f} s (exit code 124)\n"
        print(note, end="", flush=True)
        log.write(note)
        return 124, took
    return p.returncode, took


def _end_group(pid: int, ended: threading.Event) -> None:
    """SIGTERM the step's process group, then SIGKILL what is left 10 s later; `ended` says so."""
    ended.set()
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(wait)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.acceptance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="a new or empty folder for " + OUTPUTS)
    ap.add_argument("--cpu-rehearsal", action="store_true", help="the same steps where a CPU can: size tiny, a "
                    "few steps, 2 CPU devices for the 2-device step (fp16 and dataparallel recorded invalid)")
    a = ap.parse_args(argv)
    from bench import hardware
    info = hardware.gpus()
    gpus = info["count"]
    if not gpus and not a.cpu_rehearsal:
        why = ("this torch is a CPU build; install a CUDA build of torch" if info["cuda"] is None and info["driver"]
               else f"NVML: {info['nvml']}")
        print(f"error: no NVIDIA GPU this torch can use ({why}); on a CPU use --cpu-rehearsal", file=sys.stderr)
        return 2
    if os.path.isdir(a.out) and os.listdir(a.out):
        # a second run into the same folder would pool its results with the first's in the report
        print(f"error: --out {a.out} is not empty; give a new folder (each run its own)", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    steps = plan_steps(os.path.abspath(a.out), gpus, a.cpu_rehearsal)
    done = []
    with open(os.path.join(a.out, "log.txt"), "a") as log:
        log.write(f"acceptance {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {gpus} GPU(s), "
                  f"{'CPU rehearsal' if a.cpu_rehearsal else 'GPU'}\n")
        for step in steps:
            rc, s = run_step(step, log)
            done.append({"step": step.name, "exit_code": rc, "seconds": round(s, 1),
                         "command": " ".join(["python", "-m", *step.argv])})
    with open(os.path.join(a.out, "steps.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(done[0]))
        w.writeheader()
        w.writerows(done)
    rows = figures(os.path.join(a.out, "results"))
    if rows:
        with open(os.path.join(a.out, "figures.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    # a sweep exits 1 for a failed point and 0 for benchmark outcomes (invalid, predicted_oom)
    failed = [d for d in done if d["exit_code"] != 0]
    print("\nacceptance:", ", ".join(f"{d['step']} {'ok' if d['exit_code'] == 0 else 'FAILED'} ({d['seconds']:.0f} s)"
                                     for d in done))
    print(f"{len(rows)} result(s) in {a.out}: {OUTPUTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
