"""`python -m bench.run [-m] key=value ...`: one benchmark point per Hydra job.

compose -> plan (RunSpec, validation, memory prediction) -> launch -> record. Before Hydra
starts, every point of the sweep is composed once (`preflight`): a wrong key, type or
option stops the command with one line and exit code 2, before any job runs. A point that
composes but cannot run (`invalid`, `predicted_oom`) or fails while running is recorded in
its result.json and the sweep goes on: the job function never raises.

Everything up to the launch imports no torch (nor pandas): bad input is answered at once.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bench import config, hardware
from bench.config import BenchConfig, to_dict
from bench.memory import predict_memory
from bench.plan import Host, InvalidConfig, PredictedOOM, available_bytes, check_memory, config_hash, make_spec
from bench.protocol import FAULT_ENV, QUIET_ENV, TOTAL_ENV, node_tag
from bench.results import SCHEMA_VERSION, SKIPPED_NAME, ok_index, write_result

config.register()
_exit_code = 0
_ok_cache: dict[str, dict] = {}  # results_root -> ok_index, read once per process


def _already_ok(chash: str, results_root: str, label: str) -> list[str]:
    root = os.path.abspath(results_root)
    if root not in _ok_cache:
        _ok_cache[root] = ok_index(root)
    return _ok_cache[root].get((chash, label), [])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _launch(spec, out_dir):
    """The real launch: torch elastic, with the worker's rank entry point."""
    from bench.launch import launch
    from bench.worker import run_rank
    return launch(spec, out_dir, run_rank)


def run_point(cfg: BenchConfig, out_dir: str, launch: Callable = _launch) -> list[dict[str, Any]]:
    """Plan, launch and record one point, `cfg.repeats` times (each run its own processes and
    its own result file in `out_dir`); returns what was recorded, one dict per run. `launch`
    (spec, out_dir) -> bench.launch.Outcome; tests of the bookkeeping hand in their own."""
    fp = hardware.fingerprint()
    label = cfg.hardware_label or hardware.label(fp)
    chash = config_hash(cfg)
    reused: list[str] = []
    if cfg.resume:
        reused = _already_ok(chash, cfg.results_root, label)[:cfg.repeats]
        if reused:  # pointers, not copies: the measured results stay where they are, untouched
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, SKIPPED_NAME), "w") as f:
                json.dump({"status": "skipped", "results": [os.path.abspath(p) for p in reused],
                           "config_hash": chash, "hardware_label": label, "at": _now()}, f, indent=1)
        if len(reused) >= cfg.repeats:
            return [{"status": "skipped", "error": f"resume: {len(reused)} ok run(s) exist, e.g. {reused[0]}"}]
    taken = {_repeat_of(p) for p in reused}
    out = []
    for i in [i for i in range(cfg.repeats + len(taken)) if i not in taken][:cfg.repeats - len(reused)]:
        r = _run_once(cfg, out_dir, launch, hardware.fingerprint() if out else fp, label, chash, i)
        out.append(r)
        if r["status"] in ("invalid", "predicted_oom"):
            break  # decided before launching: every repeat would be the same
    return out


def _repeat_of(path: str) -> int | None:
    try:
        with open(path) as f:
            return json.load(f).get("repeat", 0)
    except (OSError, ValueError):
        return None


def _run_once(cfg: BenchConfig, out_dir: str, launch: Callable, fp: dict[str, Any], label: str, chash: str,
              repeat: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = new_result(cfg, out_dir, fp, label, chash, repeat)
    try:
        spec = plan_run(cfg, result, Host.from_fingerprint(fp))
        if spec is not None:
            if not os.environ.get(QUIET_ENV):
                r = spec.rendezvous
                across = (f" on this node, {spec.devices} on {spec.nodes} nodes (rendezvous {r.backend} at "
                          f"{r.endpoint}, run id {r.run_id})") if spec.nodes > 1 else ""
                print(f"  [launch] starting {spec.procs} rank(s){across}", flush=True)
            out = launch(spec, out_dir)
            if not out.writes_result:  # another node holds rank 0 and records the job
                note = {"this_node": out.status, "error": out.error, "nodes": spec.nodes,
                        "config_hash": chash, "at": _now(),
                        "note": "this node did not hold rank 0; the job's status is in the result.json that node wrote"}
                os.makedirs(out_dir, exist_ok=True)
                path = os.path.join(out_dir, f"node.{node_tag()}{f'.{repeat}' if repeat else ''}.json")  # nodes share it
                with open(path + ".tmp", "w") as f:
                    json.dump(note, f, indent=1)
                os.replace(path + ".tmp", path)
                return {"status": out.status,
                        "error": out.error or "the node holding rank 0 writes result.json",
                        "node_only": True}
            record_outcome(result, out)
    except KeyboardInterrupt:
        result.update(status="interrupted", error="interrupted (Ctrl-C or SIGTERM); the sweep stopped here")
        _finish(result, t0, out_dir)
        raise
    except Exception as e:  # a bug of ours must not end the sweep either
        import traceback
        result.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0],
                      error_detail=traceback.format_exc())
    _finish(result, t0, out_dir)
    return result


def new_result(cfg: BenchConfig, out_dir: str, fp: dict[str, Any], label: str, chash: str,
               repeat: int) -> dict[str, Any]:
    """A run's result record before anything is decided: config, machine, software."""
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "status": None, "error": None, "error_detail": None,
        "config": to_dict(cfg), "config_hash": chash, "repeat": repeat, "repeats": cfg.repeats, "spec": None,
        "degrees": None, "metrics": None, "prediction": None,
        "hardware": fp, "hardware_label": label,
        "software": hardware.software(), "started_at": _now(), "output_dir": os.path.abspath(out_dir),
    }
    if os.environ.get(FAULT_ENV):  # a planted fault (tests, demonstrations) stays visible in the result
        result["fault"] = os.environ[FAULT_ENV]
    return result


def plan_run(cfg: BenchConfig, result: dict[str, Any], host: Host) -> Any:
    """Everything about one run that is known before launching, into its `result` record
    (spec, degrees, memory prediction): its RunSpec, or None for a run decided here
    (`invalid`, `predicted_oom`, status and message set). bench.advise records its runs
    through this too, so that theirs are ordinary results."""
    repeat = result["repeat"]
    try:
        spec = make_spec(cfg, host)
        if repeat and spec.nodes > 1:  # each run its own rendezvous, as each point has
            spec = dataclasses.replace(spec, rendezvous=dataclasses.replace(
                spec.rendezvous, run_id=f"{spec.rendezvous.run_id}-r{repeat}"))
        lay = spec.layout
        result["spec"] = spec.to_dict()
        # the stored config says what ran (precision=auto resolved: bf16 only where the GPU computes
        # it natively); config_hash stays the hash of what was asked, so resume finds the point
        if cfg.precision.value == "auto":
            result["config"].update(precision=spec.precision.value, precision_requested="auto")
        pipe = lay.pipeline
        result["degrees"] = {"dp": lay.dp, "tp": lay.tp, "pp": lay.pp, "nodes": spec.nodes,
                             "data_parallel": lay.data_parallel.value if lay.data_parallel else None,
                             "devices_per_node": spec.devices_per_node, "procs": spec.procs,
                             "schedule": pipe.schedule.value if pipe else None,
                             "microbatches": pipe.microbatches if pipe else 1,
                             "stages_per_rank": pipe.stages_per_rank if pipe else 1,
                             "bubble_ideal": lay.bubble_ideal, "sequence_parallel": lay.sequence_parallel,
                             "vocab_parallel": lay.vocab_parallel,
                             "reshard_after_forward": lay.reshard_after_forward,
                             "activation_checkpointing": spec.activation_checkpointing.value}
        pred = predict_memory(spec)
        result["prediction"] = {**vars(pred), "total_bytes": pred.total_bytes, "model_bytes": pred.model_bytes,
                                "source": "bench.memory.estimate_memory"}
        if not cfg.force:
            check_memory(spec, pred, available_bytes(spec, host))
        return spec
    except InvalidConfig as e:
        result.update(status="invalid", error=str(e))
    except PredictedOOM as e:
        result.update(status="predicted_oom", error=str(e))
    return None


def record_outcome(result: dict[str, Any], out: Any) -> None:
    """A launched run's outcome (bench.launch.Outcome) into its result record."""
    if out.metrics and "nccl" in out.metrics:  # the version the ranks loaded
        result["software"]["nccl"] = out.metrics.pop("nccl")
    result.update(status=out.status, error=out.error, error_detail=out.error_detail, metrics=out.metrics,
                  launch_s=out.launch_s, cores=out.cores)
    if out.rank_errors:
        result["rank_errors"] = [{k: e.get(k) for k in ("rank", "status", "error")} for e in out.rank_errors]


def _finish(result: dict[str, Any], t0: float, out_dir: str) -> str:
    result["finished_at"] = _now()
    result["duration_s"] = time.perf_counter() - t0
    return write_result(out_dir, result)


def summary_line(r: dict[str, Any]) -> str:
    m = r.get("metrics") or {}
    if r.get("node_only"):
        return f"  -> {r['status']} on this node: {r['error']}"
    if r["status"] == "ok":
        pred = r.get("prediction") or {}
        mfu = m.get("mfu") if m.get("mfu") is not None else m.get("mfu_measured_peak")
        return (f"  -> ok: {m['tokens_per_s']:,.0f} tokens/s, step {m['step_time_s'] * 1e3:.1f} ms "
                f"(IQR {m['step_time_s_iqr'] * 1e3:.1f}), loss {m['loss_first']:.3f} -> {m['loss_last']:.3f}, "
                + (f"MFU {mfu:.2f} ({'datasheet' if m.get('mfu') is not None else 'measured'} peak), "
                   if mfu is not None else "")
                + f"peak {m['mem_peak_bytes'] / 2**20:,.0f} MiB ({m['mem_source']}"
                + (f"; {(m['mem_peak_bytes'] - m['mem_baseline_bytes']) / 2**20:,.0f} above the runtime baseline"
                   if m.get("mem_baseline_bytes") else "")
                + (f"), predicted {pred['model_bytes'] / 2**20:,.0f} MiB above it" if pred.get("model_bytes")
                   else f"), predicted {pred['total_bytes'] / 2**20:,.0f} MiB" if pred.get("total_bytes") else ")")
                + (f" [planted fault {r['fault']}]" if r.get("fault") else ""))
    return f"  -> {r['status']}: {r['error']}"


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def job(cfg: DictConfig) -> None:
    global _exit_code
    hc = HydraConfig.get()
    what = hc.job.override_dirname or "defaults"
    if hc.mode.name == "MULTIRUN":
        print(f"[point {hc.job.num + 1}/{os.environ.get(TOTAL_ENV, '?')}] {what}", flush=True)
    else:
        print(f"[run] {what}", flush=True)
    bench_cfg = OmegaConf.to_object(cfg)
    for r in run_point(bench_cfg, hc.runtime.output_dir):
        if bench_cfg.repeats > 1 and "repeat" in r:
            print(f"  run {r['repeat'] + 1}/{bench_cfg.repeats}", flush=True)
        print(summary_line(r), flush=True)
        if hc.mode.name != "MULTIRUN" and r["status"] not in ("ok", "skipped"):
            _exit_code = max(_exit_code, 2 if r["status"] in ("invalid", "predicted_oom") else 1)


def _one_line(e: BaseException) -> str:
    """Hydra/OmegaConf errors span several lines; keep what names the problem and the fix."""
    missing = re.search(r"Could not find '([\w-]+)/([^']+)'", str(e))
    if missing:
        group, name = missing.groups()
        return f"{group}={name} does not exist; choose one of: {', '.join(config.options(group))}"
    parts = []
    while e is not None:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if first not in parts:
            parts.append(first.rstrip('.'))
        e = e.__cause__
    line = ": ".join(parts)
    if "Key '" in line and " not in '" in line:
        line += " (python -m bench.run --help lists every key)"
    return line


def sweep_points(overrides: list[Any]) -> list[list[str]]:
    """The cartesian product of parsed overrides, as Hydra's basic sweeper forms it: one
    list of `key=value` per point; a key given twice keeps its first place and last value."""
    by_key: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ValueError(f"{o.input_line}: only comma-separated sweeps (a=1,2) are supported")
            by_key[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            by_key[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(p) for p in itertools.product(*by_key.values())]


def compose_points(overrides: list[str], multirun: bool) -> tuple[list[tuple[str, BenchConfig]], str]:
    """Compose every point of the command once, as Hydra will: (its overrides, its typed
    config) per point, and the Hydra launcher's target. Raises on a wrong key, type or option."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    def typed(c: DictConfig) -> BenchConfig:
        return OmegaConf.to_object(c)

    with config.composing():
        parser = OverridesParser.create()
        parsed = parser.parse_overrides(overrides)
        if not multirun:
            sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
            if sweeps:
                raise ValueError(f"{sweeps[0]} is a sweep, which needs -m: python -m bench.run -m {' '.join(overrides)}")
            return [(" ".join(overrides), typed(compose("config", overrides=overrides)))], "basic"
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        base = compose("config", overrides=fixed, return_hydra_config=True)
        params = base.hydra.sweeper.get("params") or {}
        lines = [f"{k}={v}" for k, v in params.items()] + overrides
        points = sweep_points(parser.parse_overrides(lines))
        target = str(base.hydra.launcher.get("_target_", ""))
        return [(" ".join(p), typed(compose("config", overrides=p))) for p in points], target


def check_writable(folder: str, key: str) -> None:
    """`folder` exists as a writable folder or can be made: tried for real (a temporary
    folder in its nearest existing ancestor), since permission bits do not tell root."""
    import tempfile
    if not str(folder or "").strip():
        raise ValueError(f"{key} is empty; give a folder (e.g. {key}={'results' if key == 'results_root' else 'reports'})")
    path = os.path.abspath(folder)
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"{key}={folder} cannot be made: {probe} is a file; choose another {key}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".scalebench-probe-", dir=probe))
    except OSError as e:
        raise ValueError(f"{key}={folder} is not writable ({e.strerror}: {probe}); "
                         f"choose another {key}") from None


def preflight(overrides: list[str], multirun: bool) -> int:
    """Everything that can be checked before the first job: every point composes, the output
    folders are writable, and each point plans (devices, degrees, batch split, precision,
    context). A single run that cannot run stops here; a sweep records its invalid points
    (they belong in the report) and stops only when none can run. Returns the point count."""
    for a in overrides:  # Hydra's own message ("Error parsing override") does not say what it wants
        if "=" not in a and not a.startswith(("~", "+")):
            raise ValueError(f"{a}: expected key=value (python -m bench.run --help lists every key)")
        key, _, value = a.partition("=")
        # a point's folder is named after its overrides: '..' in a value would put it outside results_root
        if ".." in value.replace(",", "/").split("/"):
            raise ValueError(f"{a}: a '..' in a value would put the point's folder outside results_root; "
                             "use an absolute path")
    points, target = compose_points(overrides, multirun)
    for key in ("results_root", "report_dir"):
        for folder in sorted({getattr(c, key) for _, c in points}):
            check_writable(folder, key)
    if "submitit" in target:
        # the points run elsewhere (SLURM nodes, or submitit's own processes): what this host
        # has (GPUs, cores, a SLURM job) says nothing about them, so planning waits for the job.
        # One thing must hold here: a job array has one allocation size for all its points.
        shapes = {(c.launcher.name.value, c.launcher.nodes) for _, c in points}
        if len(shapes) > 1:
            raise ValueError(f"a SLURM array has one node count for every point, but this sweep has "
                             f"{sorted(shapes)}; sweep launcher and launcher.nodes in separate commands")
        return len(points)
    host = Host.from_fingerprint(hardware.fingerprint())
    invalid = []
    for what, cfg in points:
        try:
            make_spec(cfg, host)
        except InvalidConfig as e:
            invalid.append((what, str(e)))
    if invalid and (not multirun or len(invalid) == len(points)):
        what, msg = invalid[0]
        # the message names its key already when the point is that one override ("seq_len=0: ...")
        where = "" if msg.startswith(f"{what}:") else f"{what}: "
        raise ValueError(msg if not multirun else f"no point of this sweep can run; {where}{msg}")
    if invalid:
        print(f"note: {len(invalid)} of {len(points)} points cannot run and will be recorded as invalid, "
              f"e.g. {invalid[0][0]}: {invalid[0][1]}", flush=True)
    if points[0][1].resume and multirun:
        print("resume: points with an ok result for the same config and hardware under "
              f"{points[0][1].results_root} are skipped", flush=True)
    return len(points)


def main() -> None:
    import signal

    def terminate(signum, frame):  # SIGTERM (a scheduler, kill): stop as Ctrl-C does
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    args = sys.argv[1:]
    multirun = "-m" in args or "--multirun" in args
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    if not any(a.startswith("-") for a in overrides):  # other Hydra flags: let Hydra handle them
        try:
            os.environ[TOTAL_ENV] = str(preflight(overrides, multirun))
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            sys.exit(2)
    try:
        job()
    except KeyboardInterrupt:
        print("\ninterrupted: the points finished so far keep their result.json", file=sys.stderr)
        sys.exit(130)
    if multirun:  # the end-of-sweep callback judged every point, also those run elsewhere (submitit)
        from bench.callbacks import SweepReport
        sys.exit(max(_exit_code, SweepReport.exit_code))
    sys.exit(_exit_code)


if __name__ == "__main__":
    main()
