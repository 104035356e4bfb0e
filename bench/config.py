"""Typed configuration: every key, its type, default, unit and meaning, once.

`conf/config.yaml` extends `base_config` (the `BenchConfig` dataclass), so Hydra checks
every override's key and type when it composes: a misspelt key or a wrong type fails at
once, before anything is launched. The composed config becomes these dataclasses
(`OmegaConf.to_object`) and `bench.plan.make_spec` takes them as they are.

Each field's help text (`key(default, help)`) is what `python -m bench.run --help` prints and
what the README's key table is generated from (`python -m bench.config` prints it; a test
checks the README against it), so a key's meaning lives here and nowhere else.

No torch here: the command line answers bad input before torch is imported.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING

CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def key(default: Any, help: str) -> Any:
    """A config field with its default and its one-line help (meaning, unit)."""
    return field(default=default, metadata={"help": help})


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast; weights, gradients and optimizer state stay fp32
    fp16 = "fp16"  # autocast + gradient scaling; CUDA only
    auto = "auto"  # bf16 on a CUDA device that supports it, else fp32


class Accelerator(str, Enum):
    auto = "auto"  # cuda when a CUDA device is visible to this torch build, else cpu
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


class LauncherKind(str, Enum):
    local = "local"  # every device of the job on this machine
    multinode = "multinode"  # torch elastic across machines


@dataclass
class SizeConfig:
    """A GPT shape (conf/size/*.yaml)."""
    name: str = key(MISSING, "the size's name")
    n_layer: int = key(MISSING, "transformer blocks (L)")
    n_head: int = key(MISSING, "attention heads per block (a)")
    n_embd: int = key(MISSING, "hidden size (H)")
    vocab_size: int = key(MISSING, "vocabulary (V), padded to a multiple of 64")
    block_size: int = key(MISSING, "maximum context in tokens (positions)")


@dataclass
class StrategyConfig:
    """A parallel strategy and its options (conf/strategy/*.yaml; bench/parallel/ has one unit each)."""
    name: str = key(MISSING, "the strategy (bench/parallel/ registry)")
    schedule: Schedule = key(Schedule.naive, "`mp`/`hybrid` pipeline schedule: `naive`, `gpipe`, `1f1b`, "
                                              "`interleaved`")
    microbatches: int = key(4, "micro-batches per micro-step for `gpipe`, `1f1b`, `interleaved` "
                               "(must divide the batch)")
    stages_per_rank: int = key(2, "model chunks per rank (v) for `interleaved`")
    tp: int = key(1, "`hybrid`: tensor-parallel degree (the rest of the devices is data parallel)")
    pp: int = key(1, "`hybrid`: pipeline degree (the rest of the devices is data parallel); exactly one of "
                     "tp, pp above 1")
    sequence_parallel: bool = key(False, "`tp`/`hybrid` with tp: LayerNorms and the residual stream split "
                                         "by sequence")
    reshard_after_forward: bool = key(True, "`fsdp`/`hybrid`: free gathered block weights after forward "
                                            "(false: keep them for backward)")


@dataclass
class LauncherConfig:
    """Where the ranks run (conf/launcher/*.yaml)."""
    name: LauncherKind = key(LauncherKind.local, "`local`, or `multinode` (torch elastic across machines)")
    nodes: int = key(1, "`multinode`: machines in the job (`devices` is per node)")
    node_rank: Optional[int] = key(None, "`multinode`: this node's rank (static rendezvous); null: "
                                         "c10d numbers the nodes as they arrive")
    rdzv_endpoint: Optional[str] = key(None, "`multinode`: HOST:PORT of the rendezvous, the same on every node")
    run_id: str = key("scalebench", "`multinode`: shared by the nodes; each point appends its config hash")
    join_timeout_s: float = key(600.0, "`multinode`: seconds a node waits for the others to arrive")


@dataclass
class BenchConfig:
    """One benchmark point. `size`, `strategy` and `launcher` are config groups."""
    size: SizeConfig = key(MISSING, "model shape")
    strategy: StrategyConfig = key(MISSING, "parallel strategy")
    launcher: LauncherConfig = key(MISSING, "where the ranks run")
    devices: int = key(1, "processes (CPU) or GPUs per node; `single` needs 1")
    batch_size: int = key(8, "sequences per data-parallel replica per micro-step")
    grad_accum: int = key(1, "micro-steps per optimizer step")
    global_batch_size: Optional[int] = key(None, "sequences per optimizer step, all replicas; when set, "
                                                 "`batch_size` is derived (must divide by dp x grad_accum)")
    seq_len: Optional[int] = key(256, "tokens per sequence; null: the size's full context")
    precision: Precision = key(Precision.auto, "`fp32`, `bf16` (autocast), `fp16` (CUDA only, gradient "
                                               "scaling), `auto` (bf16 on a CUDA GPU that has it, else fp32)")
    warmup_steps: int = key(2, "optimizer steps run before timing starts")
    steps: int = key(8, "timed optimizer steps")
    seed: int = key(0, "weights and data are a function of the seed alone")
    lr: float = key(3e-4, "AdamW learning rate")
    accelerator: Accelerator = key(Accelerator.auto, "`cpu`, `cuda`, or `auto` (cuda when a GPU is visible)")
    cpu_threads_per_device: int = key(1, "threads of each CPU rank, each rank pinned to its own cores; "
                                         "devices x threads may not exceed the usable cores")
    activation_checkpointing: Checkpointing = key(Checkpointing.none, "`full`: recompute each block in "
                                                                      "backward, for every strategy")
    compile: bool = key(False, "torch.compile each block; compilation runs in the warm-up (needs "
                               "warmup_steps>=2), reported as compile_s, never timed")
    oversubscribe: bool = key(False, "allow more CPU ranks than cores: for correctness tests only, "
                                     "never for benchmarks; recorded in the result")
    timeout_s: float = key(1800.0, "seconds for the whole job; past it every rank is ended (`timeout`)")
    data: Data = key(Data.synthetic, "`synthetic` (seeded uniform tokens) or `text` (a UTF-8 file as byte tokens)")
    data_path: Optional[str] = key(None, "`text`: the file; null: Python's own standard-library docs")
    results_root: str = key("results", "where each point's folder and result.json go")
    report_dir: str = key("reports", "where the end-of-sweep report (PDF, CSV, Markdown) goes")
    hardware_label: Optional[str] = key(None, "overrides the label derived from the machine "
                                              "(e.g. `EPYC-2c-24GB`, `8xH100-80GB-HBM3`)")
    force: bool = key(False, "run even when the memory model predicts an out-of-memory")
    repeats: int = key(1, "runs of each point, each its own process and result file; comparisons and "
                          "intervals treat a run as one sample and need 3+")
    resume: bool = key(False, "skip points with `repeats` ok results for the same config hash and hardware "
                              "label under results_root; the rest run (the missing runs) again")


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
    """Hash of the keys that define what is measured (less `exclude`), over the plain
    config dict (`to_dict`): the config hash, and without the repeat axes the key that
    matches a point across repeats and machines."""
    keys = {k: cfg.get(k) for k in BENCH_KEYS if k not in exclude}
    for k, (value, default) in _later_keys(cfg).items():
        if value != default:  # only then, so that the hashes of earlier results stay as they were
            keys[k] = value
    blob = json.dumps(keys, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def to_dict(obj: Any) -> Any:
    """A config dataclass as the plain dict a result records (enums as their values)."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    return obj


def options(group: str) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/."""
    return sorted(f[:-5] for f in os.listdir(os.path.join(CONF_DIR, group)) if f.endswith(".yaml"))


GROUPS = {"size": SizeConfig, "strategy": StrategyConfig, "launcher": LauncherConfig}


def key_rows() -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every key a user sets, from the fields above; a group's
    option that sets a key otherwise (conf/<group>/<option>.yaml) is named beside the default."""
    rows = []
    for f in fields(BenchConfig):
        if f.name not in GROUPS:
            rows.append((f.name, _fmt(f.default), f.metadata["help"]))
            continue
        rows.append((f.name, _default_of(f.name), f"{f.metadata['help']}: {', '.join(options(f.name))}"))
        set_by = _set_by_options(f.name)
        for g in fields(GROUPS[f.name]):
            if g.name == "name":
                continue
            default = _fmt(g.default) if g.default is not MISSING else f"from {f.name}"
            if set_by.get(g.name):
                default += " (" + ", ".join(f"{o}: {_fmt(v)}" for o, v in set_by[g.name]) + ")"
            rows.append((f"{f.name}.{g.name}", default, g.metadata["help"]))
    return rows


def _set_by_options(group: str) -> dict[str, list[tuple[str, Any]]]:
    """key -> [(option, value)] for the keys a group's options set (not the shapes of sizes)."""
    if group == "size":
        return {}
    from omegaconf import OmegaConf
    out: dict[str, list[tuple[str, Any]]] = {}
    for o in options(group):
        for k, v in OmegaConf.to_container(OmegaConf.load(os.path.join(CONF_DIR, group, f"{o}.yaml"))).items():
            if k != "name":
                out.setdefault(k, []).append((o, v))
    return out


def _default_of(group: str) -> str:
    import re
    text = open(os.path.join(CONF_DIR, "config.yaml")).read()
    found = re.search(rf"^\s*-\s*{group}:\s*(\S+)", text, re.M)
    return found.group(1) if found else ""


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if v is NO_DEFAULT:
        return ""
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def markdown_table() -> str:
    """The README's key table."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {m} |" if d else f"| `{k}` | | {m} |" for k, d, m in key_rows()]
    return "\n".join(lines)


def help_text() -> str:
    """`python -m bench.run --help`: the keys with their defaults and meanings."""
    rows = key_rows()
    width, dwidth = max(len(k) for k, _, _ in rows) + 2, max(len(d) for _, d, _ in rows) + 1
    body = "\n".join(f"  {k:<{width}}{d:<{dwidth}} {m.replace('`', '')}" for k, d, m in rows)
    return ("scalebench: one benchmark point per job; -m sweeps comma-separated values (a cartesian product).\n\n"
            "  python -m bench.run size=mini strategy=dp devices=2\n"
            "  python -m bench.run -m size=tiny,mini strategy=single,dp,mp devices=1,2\n\n"
            f"== Keys (key=value) ==\n  {'key':<{width}}{'default':<{dwidth}} meaning\n{body}\n\n"
            "== Config groups ==\n$APP_CONFIG_GROUPS\n\n"
            "python -m bench.run --cfg job prints the composed config; --hydra-help shows Hydra's own flags.\n")


@contextlib.contextmanager
def composing() -> Iterator[None]:
    """A block in which `hydra.compose("config", ...)` composes conf/: Hydra's loader for the
    block, or the one already set up in this process (tests keep one for their session)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            yield


def register() -> None:
    """Put the schema and the help page into Hydra's ConfigStore; the `${uniq:}` resolver."""
    import secrets

    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=BenchConfig)
    cs.store(group="hydra/help", name="scalebench",
             node={"app_name": "bench.run", "header": "", "footer": "", "template": help_text()})
    # `${uniq:}` in the sweep folder's name: two sweeps started in the same second get two
    # folders. Cached like Hydra's `${now:}`, so every job of a sweep (also a job that
    # submitit runs in another process, which receives the sweep's resolver cache) agrees.
    OmegaConf.register_new_resolver("uniq", lambda: secrets.token_hex(2), use_cache=True, replace=True)


if __name__ == "__main__":  # the README's key table
    print(markdown_table())
