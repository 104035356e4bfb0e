"""Typed configuration: every key, its type, default, unit and meaning, once.

`conf/config.yaml` extends `base_config` (the `BenchConfig` dataclass), so Hydra checks
every override's key and type when it composes: a misspelt key or a wrong type fails at
once, before anything is launched. The composed config becomes these dataclasses
(`OmegaConf.to_object`) and `bench.plan.make_spec` takes them as they are.

Each field's help text and, for a number, its valid range (`key(default, help, ge=1)`) are
what `python -m bench.run --help` prints and what the README's key table is generated from
(`python -m bench.config` prints it; a test checks the README against it), so a key's meaning
and its valid values live here and nowhere else (bench.plan refuses a value outside the range,
`numeric_keys` walks them).

No torch here: the command line answers bad input before torch is imported.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import MISSING

CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


@dataclass(frozen=True)
class Range:
    """The values a numeric key accepts: inclusive bounds (`ge`, `le`) or exclusive ones
    (`gt`, `lt`), None where unbounded. A float key must also be finite (no nan, no inf).
    Whether null is accepted is the key's type (`Optional[int]`), declared beside it."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def admits(self, value: float) -> bool:
        # written as "not (inside)" so that nan, which compares false with everything, is refused
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return not ((self.ge is not None and not value >= self.ge) or (self.gt is not None and not value > self.gt)
                    or (self.le is not None and not value <= self.le) or (self.lt is not None and not value < self.lt))

    def text(self, is_float: bool = False, nullable: bool = False) -> str:
        """In words, as the refusal and the key table say it: 'at least 1', 'a finite number
        more than 0', 'at least 0 and at most 4294967295', '..., or null'."""
        bounds = [f"{word} {show_number(b)}" for word, b in (("at least", self.ge), ("more than", self.gt),
                                                             ("at most", self.le), ("less than", self.lt))
                  if b is not None]
        unbounded_above = self.le is None and self.lt is None  # then "finite" says that inf is out
        out = ("a finite number " if is_float and unbounded_above else "") + (" and ".join(bounds) or "any")
        return out + (", or null" if nullable else "")


def show_number(v: Any) -> str:
    """A number as a user would type it: 0 rather than 0.0, 0.0003, inf, nan."""
    if isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return str(v)


def key(default: Any, help: str, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None) -> Any:
    """A config field with its default, its one-line help (meaning, unit) and, for a number,
    the range it accepts (`ge`/`le` inclusive, `gt`/`lt` exclusive): the one place a key's
    valid values are declared. bench.plan refuses a value outside it before anything starts;
    the key table shows it. Metadata only: the default (and so every config hash) is as it was."""
    meta: dict[str, Any] = {"help": help}
    if (ge, gt, le, lt) != (None,) * 4:
        meta["valid"] = Range(ge=ge, gt=gt, le=le, lt=lt)
    return field(default=default, metadata=meta)


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


class LossHead(str, Enum):
    auto = "auto"  # chunked where a micro-batch's fp32 logits exceed CHUNKED_FROM_BYTES, else plain
    plain = "plain"  # the whole logits, then cross entropy
    chunked = "chunked"  # output layer + cross entropy chunk by chunk, never the whole logits (bench/loss.py)


class Checkpointing(str, Enum):
    none = "none"
    full = "full"  # recompute each block in backward: keeps only the block inputs


class LauncherKind(str, Enum):
    local = "local"  # every device of the job on this machine
    multinode = "multinode"  # torch elastic across machines


# CPU ranks' allocator by default (bench.launch.malloc_env): glibc's largest mmap threshold, and a
# trim threshold that is never reached, so each step reuses the heap blocks (up to 32 MiB) the last
# one freed (issue 18)
STEADY_MMAP_THRESHOLD = 32 * 2**20
STEADY_TRIM_THRESHOLD = 2**40
# The longest timeout a key accepts (about 31 years: no limit, in practice). The launcher's
# watchdog waits with threading, which refuses more than threading.TIMEOUT_MAX (about 9.2e9 s
# on Linux) and would then leave the job without any timeout.
MAX_TIMEOUT_S = 1e9


@dataclass
class SizeConfig:
    """A GPT shape (conf/size/*.yaml)."""
    name: str = key(MISSING, "the size's name")
    n_layer: int = key(MISSING, "transformer blocks (L)", ge=1)
    n_head: int = key(MISSING, "attention heads per block (a)", ge=1)
    n_embd: int = key(MISSING, "hidden size (H); divides by n_head", ge=1)
    vocab_size: int = key(MISSING, "vocabulary (V), padded to a multiple of 64; `data=text` needs 256+",
                          ge=1)
    block_size: int = key(MISSING, "maximum context in tokens (positions)", ge=1)


@dataclass
class StrategyConfig:
    """A parallel strategy and its options (conf/strategy/*.yaml; bench/parallel/ has one unit each)."""
    name: str = key(MISSING, "the strategy (bench/parallel/ registry)")
    schedule: Schedule = key(Schedule.naive, "`mp`/`hybrid` pipeline schedule: `naive`, `gpipe`, `1f1b`, "
                                              "`interleaved`")
    microbatches: int = key(4, "micro-batches per micro-step for `gpipe`, `1f1b`, `interleaved` "
                               "(must divide the batch; `1f1b` needs at least the stages, `interleaved` a "
                               "multiple of them)", ge=1)
    stages_per_rank: int = key(2, "model chunks per rank (v) for `interleaved`", ge=1)
    tp: int = key(1, "`hybrid`: tensor-parallel degree (the rest of the devices is data parallel)", ge=1)
    pp: int = key(1, "`hybrid`: pipeline degree (the rest of the devices is data parallel); exactly one of "
                     "tp, pp above 1", ge=1)
    sequence_parallel: bool = key(False, "`tp`/`hybrid` with tp: LayerNorms and the residual stream split "
                                         "by sequence")
    vocab_parallel: bool = key(True, "`tp`/`hybrid` with tp: the tied embedding and output layer split by "
                                     "vocabulary over the tp ranks (Megatron-LM's vocab-parallel embedding and "
                                     "cross entropy); false: every tp rank holds and computes them whole")
    reshard_after_forward: bool = key(True, "`fsdp`/`hybrid`: free gathered block weights after forward "
                                            "(false: keep them for backward)")


@dataclass
class LauncherConfig:
    """Where the ranks run (conf/launcher/*.yaml)."""
    name: LauncherKind = key(LauncherKind.local, "`local`, or `multinode` (torch elastic across machines)")
    nodes: int = key(1, "`multinode`: machines in the job (`devices` is per node)", ge=1)
    node_rank: Optional[int] = key(None, "`multinode`: this node's rank (static rendezvous); null: "
                                         "c10d numbers the nodes as they arrive", ge=0)
    rdzv_endpoint: Optional[str] = key(None, "`multinode`: HOST:PORT of the rendezvous, the same on every node")
    run_id: str = key("scalebench", "`multinode`: shared by the nodes; each point appends its config hash")
    # at least 1: torch elastic takes whole seconds (int()), so anything below 1 would be 0;
    # at most MAX_TIMEOUT_S, as timeout_s
    join_timeout_s: float = key(600.0, "`multinode`: seconds a node waits for the others to arrive", ge=1,
                                le=MAX_TIMEOUT_S)


@dataclass
class BenchConfig:
    """One benchmark point. `size`, `strategy` and `launcher` are config groups."""
    size: SizeConfig = key(MISSING, "model shape")
    strategy: StrategyConfig = key(MISSING, "parallel strategy")
    launcher: LauncherConfig = key(MISSING, "where the ranks run")
    devices: int = key(1, "processes (CPU) or GPUs per node; `single` needs 1", ge=1)
    batch_size: int = key(8, "sequences per data-parallel replica per micro-step", ge=1)
    grad_accum: int = key(1, "micro-steps per optimizer step", ge=1)
    global_batch_size: Optional[int] = key(None, "sequences per optimizer step, all replicas; when set, "
                                                 "`batch_size` is derived (must divide by dp x grad_accum)", ge=1)
    seq_len: Optional[int] = key(256, "tokens per sequence; null: the size's full context", ge=1)
    precision: Precision = key(Precision.auto, "`fp32`, `bf16` (autocast), `fp16` (CUDA only, gradient "
                                               "scaling), `auto` (bf16 on a CUDA GPU that has it, else fp32)")
    # every step's batch is made before the window (8 bytes a token): a million steps of mini's
    # 8 x 257 tokens is 16 GB already
    warmup_steps: int = key(2, "optimizer steps run before timing starts", ge=0, le=100_000)
    steps: int = key(8, "timed optimizer steps", ge=1, le=1_000_000)
    # a 32-bit seed, as most tools take one: the ranks seed their generators with
    # seed x 1_000_003 plus a 32-bit offset, which must stay inside torch's 64-bit seed range
    seed: int = key(0, "weights and data are a function of the seed alone", ge=0, le=2**32 - 1)
    lr: float = key(3e-4, "AdamW learning rate", gt=0)
    accelerator: Accelerator = key(Accelerator.auto, "`cpu`, `cuda`, or `auto` (cuda when a GPU is visible)")
    cpu_threads_per_device: int = key(1, "threads of each CPU rank, each rank pinned to its own cores; "
                                         "devices x threads may not exceed the usable cores", ge=1)
    activation_checkpointing: Checkpointing = key(Checkpointing.none, "`full`: recompute each block in "
                                                                      "backward, for every strategy")
    loss_head: LossHead = key(LossHead.auto, "output layer + cross entropy: `plain` (whole logits), `chunked` "
                                             "(chunk by chunk, never the whole logits; bench/loss.py), `auto`: "
                                             "chunked where a micro-batch's fp32 logits pass 64 MiB (faster there "
                                             "by measurement), else plain. chunked is refused in fp16 and on a "
                                             "pipeline under FSDP (auto takes plain there)")
    compile: bool = key(False, "torch.compile each block; compilation runs in the warm-up (needs "
                               "warmup_steps>=2), reported as compile_s, never timed")
    colocated: int = key(1, "run a 1-device point as N independent copies at once on this node, each its own "
                            "process and cores, none communicating: the rate a device keeps while its neighbours "
                            "compute (shared memory bandwidth, caches); bench.project calibrates on it", ge=1)
    malloc_mmap_threshold: Optional[int] = key(
        STEADY_MMAP_THRESHOLD, "CPU ranks: glibc's MALLOC_MMAP_THRESHOLD_, bytes (your environment may set only the same). "
              "33554432 (32 MiB, glibc's largest) with malloc_trim_threshold's default: the heap keeps what a step "
              "frees for the next, so steady steps fault no pages in for blocks up to 32 MiB whatever the process did "
              "before (a larger block is still its own mmap); null: "
              "glibc's own dynamic policy, whose trimming makes a step fault pages back in (how many depends on "
              "the process's history: it made the suite's step slower than a bare loop's, issue 18); 1048576 "
              "with malloc_trim_threshold=null keeps RSS close to the live tensors (memory studies) at a speed "
              "cost: every block above it is fresh pages each time (mini: +33% step time)",
        ge=0, le=STEADY_MMAP_THRESHOLD)
    malloc_trim_threshold: Optional[int] = key(
        STEADY_TRIM_THRESHOLD, "CPU ranks: glibc's MALLOC_TRIM_THRESHOLD_, bytes (your environment may set "
              "only the same): free space at the heap's top above it goes back to the system. 1099511627776 (1 TiB): never, "
              "freed memory is kept for the next step, as by the caching allocators (tcmalloc, jemalloc) that "
              "torch's CPU launcher torch.backends.xeon.run_cpu preloads; null: glibc's "
              "(128 KiB, or twice its dynamic mmap threshold). Setting it turns glibc's dynamic mmap threshold "
              "off, so it needs malloc_mmap_threshold set too", ge=0)
    malloc_mmap_max: Optional[int] = key(
        None, "CPU ranks: glibc's MALLOC_MMAP_MAX_, the most blocks served by their own mmap at once (your "
              "environment may set only the same). null: not set, a block above malloc_mmap_threshold is its own "
              "mmap, fresh pages each time it is made; 0: none, every block comes from the heap and is reused, "
              "also those above 32 MiB (size=small bf16, bare loop: 0.82x the step time over 3 ABBA pairs; an ad "
              "hoc loop: page faults 427k a step -> 0 from the third step, RSS 4,427 MiB against 3,463, the heap "
              "keeping its fragments, which the memory model does not count; fp32 faults nothing at steady state "
              "either way). Setting it turns glibc's dynamic mmap threshold off, so it needs malloc_mmap_threshold "
              "set too", ge=0)
    oversubscribe: bool = key(False, "allow more CPU ranks than cores: for correctness tests only, "
                                     "never for benchmarks; recorded in the result")
    timeout_s: float = key(1800.0, "seconds for the whole job; past it every rank is ended (`timeout`)", gt=0,
                           le=MAX_TIMEOUT_S)
    data: Data = key(Data.synthetic, "`synthetic` (seeded uniform tokens) or `text` (a UTF-8 file as byte tokens)")
    data_path: Optional[str] = key(None, "`text`: the file; null: Python's own standard-library docs")
    results_root: str = key("results", "where each point's folder and result.json go")
    report_dir: str = key("reports", "where the end-of-sweep report (PDF, CSV, Markdown) goes")
    hardware_label: Optional[str] = key(None, "overrides the label derived from the machine "
                                              "(e.g. `EPYC-9654-2c-24GB`, `8xH100-80GB-HBM3`)")
    force: bool = key(False, "run even when the memory model predicts an out-of-memory")
    repeats: int = key(1, "runs of each point, each its own process and result file; comparisons and "
                          "intervals treat a run as one sample and need 3+", ge=1)
    resume: bool = key(False, "skip points with `repeats` ok results for the same config hash and hardware "
                              "label under results_root; the rest run (the missing runs) again")


@dataclass
class AdviseConfig(BenchConfig):
    """`python -m bench.advise`: a point's keys (size, devices, global_batch_size, seq_len,
    precision, ...: what every candidate shares; `strategy` is what it chooses) and these."""
    budget_s: Optional[float] = key(None, "advise: seconds of measuring after which the advisor answers with what "
                                          "it has; null: until the leader is beyond noise or the repeats end",
                                    gt=0, le=MAX_TIMEOUT_S)
    first_steps: int = key(2, "advise: measured steps of the first halving rung (doubled each rung, up to `steps`)",
                           ge=1, le=1_000_000)
    finalists: int = key(2, "advise: halve until at most this many remain; they are measured `repeats` times "
                            "at `steps` (more, up to twice, while the leader is within noise)", ge=1)
    strategies: Optional[list[str]] = key(None, "advise: the strategies to try, e.g. [dp,fsdp,tp]; null: every "
                                                "one in the registry")
    try_checkpointing: bool = key(True, "advise: try each layout with and without activation checkpointing "
                                        "(false: only `activation_checkpointing`)")
    memory_limit_gib: Optional[float] = key(None, "advise: GiB the job may use (the capacity pruning uses, held "
                                                  "by a cgroup where one can be made); null: what is free", gt=0)
    verify_pruned: int = key(0, "advise: run this many memory-pruned layouts anyway (force=true) under the "
                                "limit, to show they do not fit", ge=0)
    exhaustive: bool = key(False, "advise: no halving: every survivor `repeats` times at `steps` (the "
                                  "comparison the halving saves)")



@dataclass
class ProbeConfig(BenchConfig):
    """`python -m bench.probe`: where the ranks run (devices, accelerator, launcher, threads,
    hardware_label, results_root, timeout_s: a point's keys) and the message sizes."""
    min_bytes: int = key(1024, "probe: smallest message, bytes (rounded up to a power of two)", ge=4)
    max_bytes: int = key(256 * 2**20, "probe: largest message, bytes (rounded down to a power of two)", ge=4,
                         le=2**34)

# Keys that change what is measured; everything else (paths, timeouts, labels) does not
# enter the config hash.
BENCH_KEYS = ("size", "strategy", "devices", "batch_size", "grad_accum", "global_batch_size",
              "seq_len", "precision", "warmup_steps", "steps", "seed", "lr", "accelerator",
              "cpu_threads_per_device", "activation_checkpointing", "oversubscribe", "data", "data_path")


LEGACY_MMAP_THRESHOLD = 1 << 20  # what CPU ranks ran with from issue 14 until the key existed


def _later_keys(cfg: dict) -> dict:
    """Keys that joined the benchmark after results existed: (value, default) each."""
    return {"nodes": ((cfg.get("launcher") or {}).get("nodes", 1), 1),
            "compile": (bool(cfg.get("compile")), False),
            "colocated": (cfg.get("colocated", 1), 1),
            "loss_head": (cfg.get("loss_head", "plain"), "plain"),  # earlier results: the plain head
            # results before the key ran their CPU ranks with a fixed 1 MiB threshold (issue 14): they
            # keep their hashes, and a run with glibc's own policy (the default now) gets a new one
            **({} if cfg.get("accelerator") == "cuda" else {  # CPU ranks' allocator: nothing on a GPU
                "malloc_mmap_threshold": (cfg.get("malloc_mmap_threshold", LEGACY_MMAP_THRESHOLD), LEGACY_MMAP_THRESHOLD),
                # before the key every CPU rank ran with glibc's own trim threshold
                "malloc_trim_threshold": (cfg.get("malloc_trim_threshold"), None),
                # and glibc's own mmap count
                "malloc_mmap_max": (cfg.get("malloc_mmap_max"), None)})}


def bench_hash(cfg: dict, exclude: tuple[str, ...] = (), vocab_parallel: bool = False) -> str:
    """Hash of the keys that define what is measured (less `exclude`), over the plain
    config dict (`to_dict`): the config hash, and without the repeat axes the key that
    matches a point across repeats and machines."""
    keys = {k: cfg.get(k) for k in BENCH_KEYS if k not in exclude}
    if isinstance(keys.get("strategy"), dict):
        # a later strategy key, hashed only where it is on and its strategy splits the output layer
        # (`vocab_parallel`: bench.parallel.vocab_parallel_on, the caller's): the results made before
        # it replicated the output layer, as `vocab_parallel=false` does, and keep their hashes
        keys["strategy"] = {k: v for k, v in keys["strategy"].items() if k != "vocab_parallel"}
        if vocab_parallel:
            keys["vocab_parallel"] = True
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


@dataclass(frozen=True)
class NumericKey:
    """An int or float key of the config (nested groups included), with its declared range."""
    name: str  # as typed on the command line: `seq_len`, `size.n_embd`
    kind: type  # int or float
    nullable: bool  # Optional: null is a valid value
    valid: Range | None  # None only for a key that lacks its range (a test asks for one)

    def value(self, cfg: Any) -> Any:
        for part in self.name.split("."):
            cfg = getattr(cfg, part)
        return cfg

    def text(self) -> str:
        """The valid values in words ('at least 1, or null')."""
        return self.valid.text(self.kind is float, self.nullable) if self.valid else ""

    def refusal(self, value: Any) -> str | None:
        """None when `value` is valid, else the one line that says so: `seq_len=0: need at least 1, or null`."""
        if self.valid is None or (value is None and self.nullable) or self.valid.admits(value):
            return None
        return f"{self.name}={show_number(value)}: need {self.text()}"


def _numeric(hint: Any) -> tuple[type | None, bool]:
    """(int or float, nullable) for a field's type, (None, _) when it is no number (bool neither)."""
    nullable = get_origin(hint) is Union and type(None) in get_args(hint)
    if nullable:
        hint = next(a for a in get_args(hint) if a is not type(None))
    return (hint if hint in (int, float) else None), nullable


@functools.cache
def numeric_keys(cls: type = BenchConfig, prefix: str = "") -> tuple[NumericKey, ...]:
    """Every int and float key of `cls` and of its groups (the dataclass-typed fields), in
    declaration order: what the range check walks and what the tests feed bad values."""
    hints = get_type_hints(cls)
    out: list[NumericKey] = []
    for f in fields(cls):
        hint = hints[f.name]
        if is_dataclass(hint):
            out += numeric_keys(hint, f"{prefix}{f.name}.")
            continue
        kind, nullable = _numeric(hint)
        if kind is not None:
            out.append(NumericKey(prefix + f.name, kind, nullable, f.metadata.get("valid")))
    return tuple(out)


def key_rows() -> list[tuple[str, str, str, str]]:
    """(key, default, valid values, meaning) for every key a user sets, from the fields above;
    a group's option that sets a key otherwise (conf/<group>/<option>.yaml) is named beside
    the default. Valid values are given for numbers (their declared range), else empty."""
    valid = {k.name: k.text() for k in numeric_keys()}
    rows = []
    for f in fields(BenchConfig):
        if f.name not in GROUPS:
            rows.append((f.name, _fmt(f.default), valid.get(f.name, ""), f.metadata["help"]))
            continue
        rows.append((f.name, _default_of(f.name), "", f"{f.metadata['help']}: {', '.join(options(f.name))}"))
        set_by = _set_by_options(f.name)
        for g in fields(GROUPS[f.name]):
            if g.name == "name":
                continue
            default = _fmt(g.default) if g.default is not MISSING else f"from {f.name}"
            if set_by.get(g.name):
                default += " (" + ", ".join(f"{o}: {_fmt(v)}" for o, v in set_by[g.name]) + ")"
            name = f"{f.name}.{g.name}"
            rows.append((name, default, valid.get(name, ""), g.metadata["help"]))
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
    lines = ["| key | default | valid | meaning |", "|---|---|---|---|"]
    for k, d, v, m in key_rows():
        cells = (f"`{k}`", f"`{d}`" if d else "", v, m)
        lines.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
    return "\n".join(lines)


def advise_markdown_table() -> str:
    """The README's table of the advisor's own keys (AdviseConfig less BenchConfig)."""
    base = {f.name for f in fields(BenchConfig)}
    valid = {k.name: k.text() for k in numeric_keys(AdviseConfig)}
    lines = ["| key | default | valid | meaning |", "|---|---|---|---|"]
    for f in fields(AdviseConfig):
        if f.name not in base:
            lines.append(f"| `{f.name}` | `{_fmt(f.default)}` | {valid.get(f.name, '')} | "
                         f"{f.metadata['help'].removeprefix('advise: ')} |")
    return "\n".join(lines)


def help_text() -> str:
    """`python -m bench.run --help`: the keys with their defaults, valid values and meanings."""
    rows = key_rows()
    width, dwidth = max(len(k) for k, _, _, _ in rows) + 2, max(len(d) for _, d, _, _ in rows) + 1
    vwidth = max(len(v) for _, _, v, _ in rows) + 1
    body = "\n".join(f"  {k:<{width}}{d:<{dwidth}} {v:<{vwidth}} {m.replace('`', '')}" for k, d, v, m in rows)
    return ("scalebench: one benchmark point per job; -m sweeps comma-separated values (a cartesian product).\n\n"
            "  python -m bench.run size=mini strategy=dp devices=2\n"
            "  python -m bench.run -m size=tiny,mini strategy=single,dp,mp devices=1,2\n\n"
            f"== Keys (key=value) ==\n  {'key':<{width}}{'default':<{dwidth}} {'valid':<{vwidth}} meaning\n{body}\n\n"
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
    cs.store(name="advise_config", node=AdviseConfig)
    cs.store(name="probe_config", node=ProbeConfig)
    cs.store(group="hydra/help", name="scalebench",
             node={"app_name": "bench.run", "header": "", "footer": "", "template": help_text()})
    # `${uniq:}` in the sweep folder's name: two sweeps started in the same second get two
    # folders. Cached like Hydra's `${now:}`, so every job of a sweep (also a job that
    # submitit runs in another process, which receives the sweep's resolver cache) agrees.
    OmegaConf.register_new_resolver("uniq", lambda: secrets.token_hex(2), use_cache=True, replace=True)


if __name__ == "__main__":  # the README's key tables
    print(markdown_table())
    print()
    print(advise_markdown_table())
