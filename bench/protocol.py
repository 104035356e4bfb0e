"""What the driver (bench/launch.py) and the ranks (bench/worker.py) agree on, in one place:
the environment variables between them, the mark rank 0 leaves, and the rank error file.

Neither side imports the other: the launcher is handed the rank entry point
(`launch(spec, out_dir, entry)`), and both import this module. No torch here.
"""
from __future__ import annotations

import glob
import json
import os
import socket
import time
import traceback
from typing import Any

# driver -> ranks
CORES_ENV = "SCALEBENCH_CORES"  # the cores the ranks of this job share out, in order ("0,1")
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc malloc's mmap threshold (bench.launch.malloc_env)
TRIM_THRESHOLD_ENV = "MALLOC_TRIM_THRESHOLD_"  # glibc malloc's trim threshold (bench.launch.malloc_env)
MMAP_MAX_ENV = "MALLOC_MMAP_MAX_"  # the most blocks glibc malloc serves by mmap at once (bench.launch.malloc_env)
# the config key of each (CPU ranks; glibc reads them once, when the process starts)
ALLOCATOR_ENV = {"malloc_mmap_threshold": MMAP_THRESHOLD_ENV, "malloc_trim_threshold": TRIM_THRESHOLD_ENV,
                 "malloc_mmap_max": MMAP_MAX_ENV}
INIT_ENV = "SCALEBENCH_INIT_METHOD"  # the process group's init method (file:// on one machine); unset: env://
NODE_TAG_ENV = "SCALEBENCH_NODE_TAG"  # the launcher's tag (host-pid): nodes may share the job folder
# user / tests -> everything
QUIET_ENV = "SCALEBENCH_QUIET"  # set: no progress lines (bench.perf runs many points and prints its own)
FAULT_ENV = "SCALEBENCH_FAULT"  # tests only: "kill|hang|nan:RANK:STEP", "slow:RANK:FRACTION", [@k=v,...]
CGROUP_ENV = "SCALEBENCH_CGROUP"  # bench.advise: a cgroup folder each rank joins first (bench/cgroup.py)
DUMP_ENV = "SCALEBENCH_DUMP_PARAMS"  # tests only: set, each rank saves its parameters in the point's folder
LOCK_DIR_ENV = "SCALEBENCH_LOCK_DIR"  # the core locks' folder (default: in the temp folder, per user)
# the sweep process -> its jobs
TOTAL_ENV = "SCALEBENCH_SWEEP_TOTAL"  # points in this sweep, for "[point i/n]"

RANK0_MARK = ".holds_rank0"  # global rank 0 writes RANK0_MARK.<node tag> into the job folder at start


def node_tag() -> str:
    """This launcher's tag: nodes (and two launchers on one host) may share a folder."""
    return f"{socket.gethostname()}-{os.getpid()}"


def mark_rank0(out_dir: str) -> None:
    """Rank 0 tells its node's launcher that this node writes the job's result."""
    open(os.path.join(out_dir, f"{RANK0_MARK}.{os.environ.get(NODE_TAG_ENV, '')}"), "w").close()


def holds_rank0(out_dir: str) -> bool:
    """Whether a rank of this launcher marked itself rank 0."""
    return os.path.exists(os.path.join(out_dir, f"{RANK0_MARK}.{node_tag()}"))


def write_rank_error(out_dir: str, rank: int, exc: BaseException, status: str) -> None:
    """A rank's exception, for the launcher (elastic only sees an exit code): written
    atomically to `rank<r>.error.json` with its status (`oom` | `failed`) and traceback."""
    err = {"rank": rank, "status": status, "time": time.time(),
           "error": f"rank {rank}: {type(exc).__name__}: {exc}".strip(), "traceback": traceback.format_exc()}
    tmp = os.path.join(out_dir, f".rank{rank}.error.json.tmp")
    with open(tmp, "w") as f:
        json.dump(err, f)
    os.replace(tmp, os.path.join(out_dir, f"rank{rank}.error.json"))


def read_rank_errors(out_dir: str) -> list[dict[str, Any]]:
    """Every rank error file of a job (unreadable ones passed over)."""
    errs = []
    for path in sorted(glob.glob(os.path.join(out_dir, "rank*.error.json"))):
        try:
            with open(path) as f:
                errs.append(json.load(f))
        except (OSError, ValueError):
            pass
    return errs


def parse_fault(text: str) -> tuple[str, int, float] | None:
    """FAULT_ENV, for tests and demonstrations only (never set in a benchmark): kill rank r
    at step s (SIGKILL), hang it there (sleep past any timeout), make the loss NaN at step s,
    or slow rank r down: `slow:r:0.2` sleeps 20% of each step's time inside the step (a
    planted slowdown that a comparison must find)."""
    text = (text or "").split(";")[0].partition("@")[0]  # the points it is planted in: fault_for
    if not text:
        return None
    kind, rank, arg = text.split(":")
    if kind not in ("kill", "hang", "nan", "slow"):
        raise ValueError(f"{FAULT_ENV}={text}: kind must be kill, hang, nan or slow")
    return kind, int(rank), float(arg) if kind == "slow" else int(arg)


def fault_for(text: str, point: str) -> str:
    """FAULT_ENV's fault for one point of a standing job (bench/session.py): a fault may name
    the points it is planted in, `hang:1:2@strategy=tp,grad_accum=2`: every `k=v` after the
    `@` must be one of the point's overrides (`point`, space-separated); several faults are
    separated by `;`, the first that names the point applies. '' where none does."""
    for part in (text or "").split(";"):
        fault, _, where = part.partition("@")
        if fault and (not where or set(where.split(",")) <= set(point.split())):
            return fault
    return ""
