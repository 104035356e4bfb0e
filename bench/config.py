"""Typed configuration schema, registered in Hydra's ConfigStore.

`conf/config.yaml` extends `base_config`, so Hydra checks every key and type of every
override against these dataclasses when it composes: a misspelt key or a wrong type fails at
once, before anything is launched.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast; weights, gradients and optimizer state stay fp32
    fp16 = "fp16"  # autocast + gradient scaling; CUDA only
    auto = "auto"  # bf16 on a CUDA device that supports it, else fp32


class Accelerator(str, Enum):
    auto = "auto"  # cuda when torch sees a GPU, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Data(str, Enum):
    synthetic = "synthetic"  # seeded uniform tokens, made once per rank before timing
    text = "text"  # a local UTF-8 file read as byte tokens (the loss visibly falls)


# naive: plain layer split, whole batch, one stage busy at a time; gpipe: all forwards then
# all backwards; 1f1b: one forward, one backward, at most p micro-batches in flight;
# interleaved: interleaved 1F1B with `stages_per_rank` model chunks per rank. (Functional
# form because "1f1b" is no Python identifier; OmegaConf matches enum members by name.)
Schedule = Enum("Schedule", {n: n for n in ("naive", "gpipe", "1f1b", "interleaved")}, type=str)


class Checkpointing(str, Enum):
    none = "none"
    full = "full"  # recompute each block in backward: keeps only the block inputs


@dataclass
class SizeConfig:
    name: str = MISSING
    n_layer: int = MISSING
    n_head: int = MISSING
    n_embd: int = MISSING
    vocab_size: int = MISSING
    block_size: int = MISSING


@dataclass
class StrategyConfig:
    name: str = MISSING
    schedule: Schedule = Schedule.naive  # mp / hybrid with pp: pipeline schedule
    microbatches: int = 4  # micro-batched schedules: micro-batches per micro-step
    stages_per_rank: int = 2  # interleaved schedule: model chunks per rank (v)
    tp: int = 1  # hybrid: tensor-parallel degree (the rest of the devices is dp)
    pp: int = 1  # hybrid: pipeline degree (the rest of the devices is dp)
    sequence_parallel: bool = False  # tp: shard LayerNorms and the residual stream by sequence
    reshard_after_forward: bool = True  # fsdp: free gathered parameters after forward (ZeRO-3)


@dataclass
class LauncherConfig:
    name: str = "local"  # local | multinode
    nodes: int = 1  # multinode: machines in the job (devices is per node)
    node_rank: Optional[int] = None  # multinode: this node's rank (static rendezvous); null: c10d assigns
    rdzv_endpoint: Optional[str] = None  # multinode: host:port of the rendezvous, the same on every node
    run_id: str = "scalebench"  # multinode: shared by the nodes; each point appends its config hash
    join_timeout_s: float = 600.0  # multinode: how long a node waits for the others


@dataclass
class BenchConfig:
    size: SizeConfig = MISSING
    strategy: StrategyConfig = MISSING
    launcher: LauncherConfig = MISSING
    devices: int = 1  # processes (CPU) or GPUs per node
    batch_size: int = 8  # sequences per data-parallel replica per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    global_batch_size: Optional[int] = None  # strong scaling: batch_size is derived from it
    seq_len: Optional[int] = 256  # null: the size's full context (block_size)
    precision: Precision = Precision.auto
    warmup_steps: int = 2  # steps run before timing starts
    steps: int = 8  # timed optimizer steps
    seed: int = 0
    lr: float = 3e-4
    accelerator: Accelerator = Accelerator.auto
    cpu_threads_per_device: int = 1  # a CPU "device" is a process with this many threads
    activation_checkpointing: Checkpointing = Checkpointing.none
    compile: bool = False  # torch.compile each block; compilation runs in the warm-up, outside the window
    oversubscribe: bool = False  # allow more CPU ranks than cores: for tests, never for benchmarks
    timeout_s: float = 1800.0  # the whole job, launch to teardown
    data: Data = Data.synthetic
    data_path: Optional[str] = None  # text data; null: Python's own standard-library docs
    results_root: str = "results"
    report_dir: str = "reports"  # where the end-of-sweep report goes
    hardware_label: Optional[str] = None  # null: derived from the machine's fingerprint
    force: bool = False  # run even when the memory model predicts an out-of-memory
    resume: bool = False  # skip points with an ok result (same config hash and hardware) under results_root


# Keys that change what is measured; everything else (paths, timeouts, labels) does not
# enter the config hash.
BENCH_KEYS = ("size", "strategy", "devices", "batch_size", "grad_accum", "global_batch_size",
              "seq_len", "precision", "warmup_steps", "steps", "seed", "lr", "accelerator",
              "cpu_threads_per_device", "activation_checkpointing", "oversubscribe", "data", "data_path")


def _later_keys(cfg: dict) -> dict:
    """Keys that joined the benchmark after results existed: (value, default) each."""
    return {"nodes": ((cfg.get("launcher") or {}).get("nodes", 1), 1),
            "compile": (bool(cfg.get("compile")), False)}


def bench_hash(cfg: dict, exclude: tuple[str, ...] = ()) -> str:
    """Hash of the keys that define what is measured (less `exclude`): the config hash,
    and without the repeat axes the key that matches a point across repeats and machines."""
    import hashlib
    import json
    keys = {k: cfg.get(k) for k in BENCH_KEYS if k not in exclude}
    for k, (value, default) in _later_keys(cfg).items():
        if value != default:  # only then, so that the hashes of earlier results stay as they were
            keys[k] = value
    blob = json.dumps(keys, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def register() -> None:
    import secrets

    from omegaconf import OmegaConf
    ConfigStore.instance().store(name="base_config", node=BenchConfig)
    # `${uniq:}` in the sweep folder's name: two sweeps started in the same second get two
    # folders. Cached like Hydra's `${now:}`, so every job of a sweep (also a job that
    # submitit runs in another process, which receives the sweep's resolver cache) agrees.
    OmegaConf.register_new_resolver("uniq", lambda: secrets.token_hex(2), use_cache=True, replace=True)
