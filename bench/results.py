"""The result file: schema, atomic write that never overwrites, and `load` into a DataFrame.

One `result.json` per job, written whatever happened to the job:

    schema_version  int, SCHEMA_VERSION
    status          ok | invalid | failed | timeout | oom | predicted_oom | diverged | interrupted
    error           one line, or null;  error_detail: traceback or null
    config          the resolved config (all keys);  config_hash: of its benchmark keys
    spec            the RunSpec (bench/spec.py: resolved precision/accelerator, derived batch,
                    `layout` and `rendezvous` as nested groups) or null
    degrees         {dp, tp, pp, nodes, devices_per_node, procs, schedule, microbatches,
                    stages_per_rank, bubble_ideal, sequence_parallel, activation_checkpointing}
    metrics         measured figures (units in the names), or null
    prediction      the memory model's figures (bench/memory.py: parts, model_bytes, total_bytes), or null
    hardware, hardware_label, software, started_at, finished_at, duration_s, output_dir
    fault           only when SCALEBENCH_FAULT planted one (tests, demonstrations): its value
    kind            absent for a benchmark point; `probe` for an interconnect probe (bench.probe:
                    its table under metrics.probe), which `load` leaves out and `load_probes` reads
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from bench import flops
from bench.config import LEGACY_MMAP_THRESHOLD
from bench.spec import LOSS_CHUNK_TOKENS

if TYPE_CHECKING:
    import pandas as pd

# 2: `spec` holds nested groups (layout, rendezvous) instead of flat fields. Version 1 files
# (flat spec) are read as well.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
STATUSES = ("ok", "invalid", "failed", "timeout", "oom", "predicted_oom", "diverged", "interrupted")
RESULT_NAME = "result.json"
SKIPPED_NAME = "skipped.json"  # what a resumed sweep leaves in a point's folder: pointers to the runs it reused
# what a sweep's points may end in and still exit 0: a benchmark outcome (the point could not
# run as configured, did not fit, or was reused); anything else is a failure of the run
BENCHMARK_OUTCOMES = ("ok", "oom", "predicted_oom", "invalid", "skipped")


def sweep_exit_code(statuses) -> int:
    """0 when every point of a sweep ended in a benchmark outcome, 1 when any failed, timed
    out or diverged (an interrupted sweep exits 130 on its own)."""
    return 0 if all(s in BENCHMARK_OUTCOMES for s in statuses) else 1


def _new_temp_file(out_dir: str) -> tuple[int, str]:
    """A new, uniquely named temp file in `out_dir`, open for writing: (fd, path). Made with
    mode 0666 less the process umask (0644 under the usual 022), as any other output file,
    so that a result is readable like one; `tempfile.mkstemp` would make it 0600."""
    for _ in range(100):
        path = os.path.join(out_dir, f".result.{secrets.token_hex(6)}.tmp")
        try:  # O_EXCL: never an existing file (nor a link planted under the name)
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {out_dir}")


def write_result(out_dir: str, result: dict[str, Any]) -> str:
    """Write atomically (temp file, then link into place) and never replace a file that is
    already there: a second write beside it gets the next free `result.N.json`. The file's
    mode follows the umask (0644 under the default 022), as any file the process writes."""
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = _new_temp_file(out_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        for n in range(1000):
            path = os.path.join(out_dir, RESULT_NAME if n == 0 else f"result.{n}.json")
            try:
                os.link(tmp, path)  # fails if the name exists: no overwrite, no race
                return path
            except FileExistsError:
                continue
        raise RuntimeError(f"too many results in {out_dir}")
    finally:
        os.unlink(tmp)


def find_result_files(paths: Iterable[str]) -> list[str]:
    files: list[str] = []
    for p in paths:
        if os.path.isfile(p):
            files.append(p)
            continue
        for root, dirs, names in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [os.path.join(root, n) for n in sorted(names)
                      if n == RESULT_NAME or (n.startswith("result.") and n.endswith(".json"))]
    return files


def read_result(path: str) -> dict[str, Any]:
    """Parse one file; ValueError (with the reason) when it is not a readable result."""
    try:
        with open(path) as f:
            r = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    if not isinstance(r, dict) or r.get("schema_version") not in READABLE_VERSIONS or r.get("status") not in STATUSES:
        raise ValueError(f"{path}: not a scalebench result of schema version "
                         f"{' or '.join(map(str, READABLE_VERSIONS))}")
    return r


def ok_index(root: str) -> dict[tuple[str, str], list[str]]:
    """(config_hash, hardware_label) -> the ok result files under `root` (one per run): what
    a resumed sweep may reuse. Unreadable and foreign files are passed over (resume reruns
    rather than trusts them)."""
    index: dict[tuple[str, str], list[str]] = {}
    if os.path.isdir(root):
        for f, r in records(root):
            if r["status"] == "ok" and r.get("kind", "benchmark") == "benchmark":
                index.setdefault((r.get("config_hash"), r.get("hardware_label")), []).append(f)
    return index


REPEAT_KEYS = ("seed",)  # what differs between repeats of one configuration


def point_key(cfg: dict[str, Any]) -> str:
    """The benchmark configuration without the repeat axes: repeats of one point, and the
    same point measured on other machines, share it."""
    from bench.config import bench_hash
    from bench.parallel import vocab_parallel_on
    return bench_hash(cfg, exclude=REPEAT_KEYS, vocab_parallel=vocab_parallel_on(cfg))


def flatten(r: dict[str, Any], path: str = "") -> dict[str, Any]:
    """One tidy row: the benchmark axes, the degrees, the scalar metrics, and the lists."""
    cfg = r.get("config") or {}
    spec = r.get("spec") or {}
    degrees = r.get("degrees") or {}
    size, strat = cfg.get("size") or {}, cfg.get("strategy") or {}
    m = r.get("metrics") or {}
    pred = r.get("prediction") or {}
    row: dict[str, Any] = {
        "path": path, "status": r["status"], "error": r.get("error"),
        "size": size.get("name"), "strategy": strat.get("name"),
        "schedule": degrees.get("schedule") or spec.get("schedule") or None,  # (flat spec: schema 1)
        # all devices of the job (nodes x devices per node)
        "devices": spec.get("devices", cfg.get("devices")), "nodes": degrees.get("nodes", spec.get("nodes", 1)),
        "batch_size": spec.get("batch_size", cfg.get("batch_size")),
        "global_batch_size": spec.get("global_batch_size"), "grad_accum": cfg.get("grad_accum"),
        "seq_len": spec.get("seq_len", cfg.get("seq_len")),
        "precision": spec.get("precision", cfg.get("precision")),
        "accelerator": spec.get("accelerator", cfg.get("accelerator")),
        "seed": cfg.get("seed"), "steps": cfg.get("steps"),
        "config_hash": r.get("config_hash"), "hardware_label": r.get("hardware_label"),
        "started_at": r.get("started_at"), "finished_at": r.get("finished_at"), "duration_s": r.get("duration_s"),
        "mem_predicted_bytes": pred.get("total_bytes"),
        # the prediction without its runtime term: compare with mem_peak_bytes - mem_baseline_bytes
        "mem_predicted_model_bytes": pred.get("model_bytes", pred["total_bytes"] - pred.get("runtime_bytes", 0)
                                              if pred.get("total_bytes") is not None else None),
    }
    hw = r.get("hardware") or {}
    gpu = hw.get("gpu") or {}
    row.update(
        point_key=point_key(cfg),
        global_batch_requested=cfg.get("global_batch_size"),  # set: strong scaling
        shape=(f"L{size['n_layer']} a{size['n_head']} H{size['n_embd']} V{size['vocab_size']} T{size['block_size']}"
               if all(k in size for k in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size")) else None),
        strategy_options=_options(cfg) if strat else None,
        compile=bool(cfg.get("compile")), threads=cfg.get("cpu_threads_per_device"),
        oversubscribe=bool(cfg.get("oversubscribe")), data_path=cfg.get("data_path"),
        colocated=int(cfg.get("colocated") or 1),
        loss_head=spec.get("loss_head", "plain"),  # results before the key: the plain head
        # the allocator policy of a CPU rank (results before the keys: issue 14's 1 MiB, glibc's trim)
        malloc_mmap_threshold=_allocator(m, cfg, "malloc_mmap_threshold", row["accelerator"], LEGACY_MMAP_THRESHOLD),
        malloc_trim_threshold=_allocator(m, cfg, "malloc_trim_threshold", row["accelerator"], None),
        malloc_mmap_max=_allocator(m, cfg, "malloc_mmap_max", row["accelerator"], None),
        repeat=r.get("repeat", 0), repeats=r.get("repeats", 1),
        n_params=(flops.n_params(size["n_layer"], size["n_embd"], size["vocab_size"], size["block_size"])
                  if all(k in size for k in ("n_layer", "n_embd", "vocab_size", "block_size")) else None),
        capacity_bytes=(gpu.get("memory_bytes") or [None])[0] if row["accelerator"] == "cuda" else hw.get("ram_bytes"),
        data=cfg.get("data"), activation_checkpointing=cfg.get("activation_checkpointing"),
        software_torch=(r.get("software") or {}).get("torch"),
    )
    adv = r.get("advise") or {}  # a run of bench.advise: which candidate, which pass, which sweep
    row.update(advise_candidate=adv.get("candidate"), advise_stage=adv.get("stage"), advise_sweep=adv.get("sweep"))
    row.update({f"degree_{k}": v for k, v in degrees.items()})
    if degrees and "data_parallel" not in degrees:  # results before it was recorded: the registry knows
        row["degree_data_parallel"] = _data_parallel_of(strat, row["devices"])
    for k, v in m.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            row[k] = v
    # the chunked head's tokens per chunk: as planned (the spec; failed runs too), else as the rank
    # recorded it, else 1024 (bench.spec.LOSS_CHUNK_TOKENS), what chunked results ran before either
    # record, except CPU ones made 2026-12-01 04:22-05:26 (128 at GPT-2's vocabulary: bench.perf's own
    # runs, in temporary folders; none kept in results/)
    row["loss_chunk_tokens"] = (spec.get("loss_chunk_tokens") or m.get("loss_chunk_tokens")
                                or (LOSS_CHUNK_TOKENS if row["loss_head"] == "chunked" else None))
    row["step_times_s"] = m.get("step_times_s")
    row["loss"] = m.get("loss")
    return row



def _allocator(m: dict[str, Any], cfg: dict[str, Any], key: str, accelerator: str, before: int | None) -> int | None:
    """A CPU rank's allocator setting `key`: the rank's own record (the environment it ran
    under), else for a failed run the config's, else `before` (results from before the key);
    None on a GPU, where the keys do not apply."""
    if key in m:
        return m[key]
    return cfg.get(key, before) if accelerator == "cpu" else None

def _options(cfg: dict[str, Any]) -> str:
    """The strategy's options as JSON (sorted keys). `vocab_parallel`, a later key, only where it is
    on for a strategy it belongs to (bench.parallel.vocab_parallel_on): a point that replicates
    the output layer keeps the identity of the results made before the key."""
    from bench.parallel import vocab_parallel_on
    opts = {k: v for k, v in cfg["strategy"].items() if k not in ("name", "vocab_parallel")}
    if vocab_parallel_on(cfg):
        opts["vocab_parallel"] = True
    return json.dumps(opts, sort_keys=True)


def _data_parallel_of(strat: dict[str, Any], devices: int | None) -> str | None:
    """How a strategy holds its replicas, from the registry (for results that did not say)."""
    from bench import parallel
    from bench.config import Schedule, StrategyConfig
    try:
        opts = StrategyConfig(**{**strat, "schedule": Schedule[strat.get("schedule", "naive")]})
        kind = parallel.get(strat["name"]).layout(int(devices), opts).data_parallel
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return kind.value if kind else None


def records(paths: Iterable[str] | str, on_skip=None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, record) of every readable result under `paths` (folders are searched); an
    unreadable or foreign file is passed over, `on_skip(message)` told about each."""
    for f in find_result_files([paths] if isinstance(paths, str) else paths):
        try:
            yield f, read_result(f)
        except ValueError as e:
            if on_skip is not None:
                on_skip(str(e))


def load(paths: Iterable[str] | str, on_skip=None) -> pd.DataFrame:
    """Every result under `paths` (folders are searched), one row per run. Unreadable or
    foreign files are skipped; `on_skip(message)` is told about each."""
    import pandas as pd
    return pd.DataFrame([flatten(r, f) for f, r in records(paths, on_skip)
                         if r.get("kind", "benchmark") == "benchmark"])  # probes (bench.probe): load_probes


def load_probes(paths: Iterable[str] | str) -> list[dict[str, Any]]:
    """The ok interconnect probes (bench.probe) under `paths`: their result records, each with
    `path` added, oldest first."""
    out = [{**r, "path": f} for f, r in records(paths) if r.get("kind") == "probe" and r["status"] == "ok"]
    return sorted(out, key=lambda r: r.get("started_at") or "")
