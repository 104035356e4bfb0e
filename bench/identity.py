"""One identity for "the same benchmark", and the keys the report and compare group by.

A run's identity is everything that changes the measured work or the machine: the hardware
label, the model's shape, the strategy with all its options, the resolved precision and
accelerator, sequence length, per-replica and global batch, grad accumulation, activation
checkpointing, compile, the data, threads per device, oversubscription, co-located copies
(`colocated`: bench.project's calibration), the loss head and its chunk, a CPU rank's allocator policy (glibc's mmap
threshold, trim threshold and mmap count: they change the step's page faults), nodes and devices.
Runs with one identity are repeats of one measurement (seeds, `repeats=N`): only they are
ever aggregated. The seed, the number of steps, the warm-up and the learning rate are not
part of it: they do not change the work of a step.

Keys derived from it (each a short hash; `describe` gives the readable fields):
  * `work`: the identity without the machine: what `bench.compare` and the hardware page
    match across machines;
  * `series`: the identity without the device count, anchored by the batch the user fixed
    (weak scaling: the per-replica batch; strong scaling: the global batch): one scaling curve;
  * `setting`: what the best-strategy map holds fixed: the machine, the work without the
    strategy, the devices and the global tokens per step;
  * `computation`: what the ranks compute and communicate, with the parallelisms that do
    nothing at degree 1 left out: the best-strategy map names layouts with one computation
    (single, mp/naive on one device, dp on one device) as equivalent; each is still a
    candidate of its own, with its own runs.

Pure functions of the tidy rows of bench.results.load (missing fields count as None).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from bench.spec import DataParallel

# the machine and what ran on it: the hardware label, the torch version, and the result set a
# comparison's report came from (`bench.compare --pdf`: before/after on one machine stay apart)
MACHINE = ("hardware_label", "software_torch", "result_set")
WORK = ("accelerator", "size", "shape", "strategy", "strategy_options", "precision", "seq_len", "grad_accum",
        "activation_checkpointing", "compile", "data", "data_path", "threads", "oversubscribe", "colocated",
        "malloc_mmap_threshold", "malloc_trim_threshold", "malloc_mmap_max", "loss_head", "loss_chunk_tokens")
SCALE = ("nodes", "devices", "batch_size", "global_batch_size")
IDENTITY = MACHINE + WORK + SCALE
STRATEGY_FIELDS = ("strategy", "strategy_options")


def _get(row: Mapping[str, Any], k: str) -> Any:
    v = row.get(k)
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)  # pandas turns integer columns with gaps into floats
    return v


def _hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fields(row: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: _get(row, k) for k in keys}


def identity(row: Mapping[str, Any]) -> str:
    """The key of everything that changes the measured work or the machine."""
    return _hash(fields(row, IDENTITY))


def work(row: Mapping[str, Any]) -> str:
    """The identity without the machine: the same configuration on other hardware."""
    return _hash(fields(row, WORK + SCALE))


def strong(row: Mapping[str, Any]) -> bool:
    """Strong scaling: the user fixed the global batch (global_batch_size); weak: the batch
    per replica. (Whether a series' global batch really stays fixed is `scaling_mode`.)"""
    return _get(row, "global_batch_requested") is not None


def series(row: Mapping[str, Any]) -> str:
    """One scaling curve: the identity without the device count (nor the node count: `devices`
    counts every device of the job), anchored by the batch the user fixed (per-replica batch
    for weak scaling, global batch for strong)."""
    anchor = ("global_batch_size",) if strong(row) else ("batch_size",)
    return _hash({**fields(row, MACHINE + WORK + anchor), "strong": strong(row)})


def setting(row: Mapping[str, Any]) -> str:
    """A cell of the best-strategy map: the machine, the work without the strategy, the
    devices and the global tokens per step."""
    keys = MACHINE + tuple(k for k in WORK if k not in STRATEGY_FIELDS) + ("nodes", "devices", "global_batch_size")
    return _hash(fields(row, keys))


def computation(row: Mapping[str, Any]) -> str:
    """What the ranks compute and communicate: the degrees and, where a degree is above 1,
    how it is done (data-parallel kind, sequence parallel, pipeline schedule and chunks);
    micro-batching wherever it splits the batch; checkpointing and compile. Degree-1
    parallelisms communicate nothing and change no math: they are left out."""
    dp, tp, pp = (int(_get(row, f"degree_{k}") or 1) for k in ("dp", "tp", "pp"))
    micro = int(_get(row, "degree_microbatches") or 1)
    kind = _get(row, "degree_data_parallel")
    # FSDP's mixed precision keeps bf16/fp16 weights (autocast keeps fp32 ones): a computation of
    # its own at any degree then; at dp > 1 resharding changes the communication too
    fsdp = kind == DataParallel.fsdp.value and (dp > 1 or _get(row, "precision") not in ("fp32", None))
    sig = {"dp": dp, "tp": tp, "pp": pp, "micro": micro,
           "dp_kind": kind if dp > 1 or fsdp else None,
           "reshard": _reshard(row) if fsdp and dp > 1 else None,
           "sp": bool(_get(row, "degree_sequence_parallel")) if tp > 1 else False,
           "vp": bool(_get(row, "degree_vocab_parallel")) if tp > 1 else False,
           "schedule": _get(row, "schedule") if pp > 1 else None,
           "chunks": int(_get(row, "degree_stages_per_rank") or 1) if pp > 1 else 1,
           **fields(row, MACHINE + tuple(k for k in WORK if k not in STRATEGY_FIELDS) + SCALE)}
    return _hash(sig)


def _reshard(row: Mapping[str, Any]) -> Any:
    v = _get(row, "degree_reshard_after_forward")
    if v is None and isinstance(_get(row, "strategy_options"), str):  # results that did not record it
        v = json.loads(row["strategy_options"]).get("reshard_after_forward")
    return v


def machine(row: Mapping[str, Any]) -> str:
    """The machine part of the identity (hardware label, torch, result set)."""
    return _hash(fields(row, MACHINE))


def with_keys(df):
    """`df` (tidy rows) with the columns identity, machine, work, series, setting, computation."""
    rows = df.to_dict("records")
    return df.assign(identity=[identity(r) for r in rows], machine=[machine(r) for r in rows],
                     work=[work(r) for r in rows],
                     series=[series(r) for r in rows], setting=[setting(r) for r in rows],
                     computation=[computation(r) for r in rows])


def describe(df, keys: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """Of `keys`, those with one value in all of `df` ({key: value}) and those that vary."""
    fixed, varying = {}, []
    for k in keys:
        if k not in df:
            continue
        vals = {_get({"v": v}, "v") for v in df[k]}
        if len(vals) == 1:
            fixed[k] = vals.pop()
        else:
            varying.append(k)
    return fixed, varying


LABELS = {"hardware_label": "{}", "software_torch": "torch {}", "result_set": "set {}", "precision": "{}", "seq_len": "seq {}", "accelerator": "{}", "data": "data {}",
          "grad_accum": "accum {}", "activation_checkpointing": "ckpt {}", "compile": "compile {}",
          "threads": "{} thread(s)/device", "nodes": "{} node(s)", "batch_size": "b={}/replica",
          "global_batch_size": "global batch {}", "devices": "{} device(s)", "shape": "{}", "data_path": "{}",
          "oversubscribe": "oversubscribe {}", "strategy_options": "options {}", "colocated": "{} co-located",
          "malloc_mmap_threshold": "malloc mmap threshold {} B",
          "malloc_trim_threshold": "malloc trim threshold {} B", "malloc_mmap_max": "malloc mmap max {}", "loss_head": "{} loss head",
          "loss_chunk_tokens": "{}-token loss chunks"}


def fixed_text(df, keys: Iterable[str]) -> str:
    """What a page holds fixed, for its title: 'EPYC-2c-24GB, fp32, seq 256, data text'."""
    fixed, _ = describe(df, keys)
    skip = {"strategy", "strategy_options", "shape", "data_path", "oversubscribe", "result_set"}  # in labels
    parts = [LABELS.get(k, k + " {}").format(v) for k, v in fixed.items() if k not in skip and v is not None]
    return ", ".join(parts)


def varying_text(row: Mapping[str, Any], keys: Iterable[str]) -> str:
    """The fields among `keys` that distinguish this row's group, for a legend."""
    return ", ".join(LABELS.get(k, k + " {}").format(_get(row, k)) for k in keys if _get(row, k) is not None)
