"""Start one job's ranks with torch elastic and turn whatever happens into an outcome.

`elastic_launch` is the engine behind torchrun: a c10d rendezvous on a free local port (so
two jobs, or two sweeps, never share one), `devices` worker processes started with spawn,
and when one worker fails the agent stops the others. A watchdog thread enforces the job's
`timeout_s` by ending every process below this one. Nothing here raises for a benchmark
failure: the caller gets an Outcome with a status and a one-line error.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.plan import RunSpec

CORES_ENV = "SCALEBENCH_CORES"  # the cores the ranks of this job share out, in order


@dataclass
class Outcome:
    status: str  # ok | failed | timeout | oom | diverged
    metrics: dict[str, Any] | None = None
    error: str | None = None
    error_detail: str | None = None
    launch_s: float = 0.0  # wall time from launch to teardown
    rank_errors: list[dict[str, Any]] = field(default_factory=list)
    cores: dict[str, Any] | None = None  # CPU: the cores claimed, the wait for them
    writes_result: bool = True  # multinode: False on the nodes that do not hold rank 0


RANK0_MARK = ".holds_rank0"  # global rank 0 writes RANK0_MARK.<node tag> into the job folder at start
NODE_TAG_ENV = "SCALEBENCH_NODE_TAG"  # this launcher's tag (host-pid): nodes may share the folder


def node_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _writes_result(spec: RunSpec, out_dir: str, started: bool) -> bool:
    """After a failure, whether this node records it: always on one node; across nodes the
    node of rank 0, or, when no worker ever started (the rendezvous failed), node 0 or the
    node the rendezvous endpoint names."""
    if spec.nodes == 1 or os.path.exists(os.path.join(out_dir, f"{RANK0_MARK}.{node_tag()}")):
        return True
    if started:
        return False
    from bench.cluster import is_local_host
    return spec.node_rank == 0 or (spec.node_rank is None and is_local_host(spec.rdzv_endpoint.rpartition(":")[0]))


def interconnect(spec: RunSpec, metrics: dict[str, Any], out_dir: str) -> str:
    """How the ranks talked: NCCL's transports from its log, or gloo over loopback / TCP."""
    hosts = metrics.get("hosts") or []
    if spec.procs * spec.nodes == 1:
        return "none (one process)"
    if spec.accelerator == "cuda":
        lines: list[str] = []
        for path in glob.glob(os.path.join(out_dir, ".nccl", "*.log")):
            with open(path, errors="replace") as f:
                lines += f.readlines()
        from bench.cluster import nccl_transports
        return nccl_transports(lines) or "nccl (transport not logged; NCCL_DEBUG was set by the user)"
    if len(set(hosts)) <= 1:
        return "loopback/gloo (one host)"
    iface = os.environ.get("GLOO_SOCKET_IFNAME")
    return f"tcp/gloo across {len(set(hosts))} hosts" + (f" ({iface})" if iface else "")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_tree(timeout: float = 5.0) -> None:
    """End every process below this one (the ranks and their agent's helpers), except
    multiprocessing's resource tracker, which serves this process and stays."""
    kids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                kids.append(p)
        except psutil.Error:
            pass
    for p in kids:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(kids, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _rank_errors(out_dir: str) -> list[dict[str, Any]]:
    errs = []
    for path in sorted(glob.glob(os.path.join(out_dir, "rank*.error.json"))):
        try:
            with open(path) as f:
                errs.append(json.load(f))
        except (OSError, ValueError):
            pass
    return errs


def _killed_ranks(exc: BaseException, reported: set[int]) -> str | None:
    """Ranks ended by a signal that left no error file of their own, described in one line."""
    failures = getattr(exc, "failures", None) or {}
    dead = {r: f for r, f in failures.items() if f.exitcode is not None and f.exitcode < 0 and r not in reported}
    return _describe_failures(exc, only=dead) if dead else None


def _describe_failures(exc: BaseException, only: dict | None = None) -> str:
    """A one-line account of which rank died and how, from elastic's ChildFailedError."""
    failures = only if only is not None else getattr(exc, "failures", None)
    if not failures:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    parts = []
    for rank, f in sorted(failures.items()):
        if f.exitcode is not None and f.exitcode < 0:
            sig = signal.Signals(-f.exitcode).name
            why = f"killed by signal {-f.exitcode} ({sig})"
            if -f.exitcode == signal.SIGKILL:
                why += " (out of memory, or killed from outside)"
            parts.append(f"rank {rank} {why}")
        else:
            parts.append(f"rank {rank} exited with code {f.exitcode}")
    return "; ".join(parts)


class CoreClaim:
    """Advisory locks, one file per CPU core, shared by every scalebench job of this user on
    this host: two sweeps at once take turns on the cores instead of timing each other.
    A job claims all the cores it needs or none (no deadlock), waits while another job holds
    them, and after `patience_s` runs on what it was given, marked as sharing."""

    def __init__(self, cores: list[int], n: int, patience_s: float) -> None:
        import tempfile
        self.dir = os.path.join(tempfile.gettempdir(), f"scalebench-cores-{os.getuid()}")
        os.makedirs(self.dir, exist_ok=True)
        self.files: list[Any] = []
        self.cores: list[int] = []
        self.waited_s, self.shared = 0.0, False
        t0 = time.perf_counter()
        told = False
        while not self._try(cores, n):
            self.waited_s = time.perf_counter() - t0
            if self.waited_s > patience_s:
                self.cores, self.shared = cores[:n], True
                return
            if not told:
                print(f"  [launch] waiting: another scalebench job holds the cores this one needs ({n})",
                      flush=True)
                told = True
            time.sleep(0.5)
        self.waited_s = time.perf_counter() - t0

    def _try(self, cores: list[int], n: int) -> bool:
        import fcntl
        self.cores = []
        for c in cores:
            f = open(os.path.join(self.dir, f"core{c}.lock"), "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.write(str(os.getpid()))
            f.flush()
            self.files.append(f)
            self.cores.append(c)
            if len(self.cores) == n:
                return True
        self.release()
        return False

    def release(self) -> None:
        for f in self.files:
            f.close()  # closing drops the flock
        self.files = []


def _place_ranks(spec: RunSpec) -> tuple[set[int] | None, CoreClaim | None]:
    """On CPU, claim devices x threads cores, hand them to the ranks (through CORES_ENV) and
    move this process (the elastic agent, which polls its workers) onto cores no rank uses,
    so that it never takes time from a rank. Returns the affinity to restore afterwards and
    the claim to release."""
    if spec.accelerator != "cpu" or not hasattr(os, "sched_getaffinity"):
        return None, None
    mine = os.sched_getaffinity(0)
    cores = sorted(mine)
    n = spec.procs * spec.cpu_threads_per_device
    claim = None
    if n <= len(cores):
        claim = CoreClaim(cores, n, patience_s=spec.timeout_s)
        use = claim.cores
    else:  # oversubscribed (tests only): ranks share cores round-robin
        use = [cores[i % len(cores)] for i in range(n)]
    os.environ[CORES_ENV] = ",".join(str(c) for c in use)
    spare = [c for c in cores if c not in use]
    if spare:
        os.sched_setaffinity(0, spare)
        return mine, claim
    return None, claim


def launch(spec: RunSpec, out_dir: str) -> Outcome:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from bench.worker import run_rank

    # the agent logs every rendezvous step at INFO, and a failed rank as a multi-line ERROR
    # that the Outcome already says in one line (with the traceback in error_detail)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.launcher").setLevel(logging.WARNING)
    os.environ["OMP_NUM_THREADS"] = str(spec.cpu_threads_per_device)  # inherited by the ranks
    # elastic installs its own handlers and leaves them; put ours back after (SIGHUP too: a
    # sweep under nohup must keep ignoring hangups)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    nccl_env = {k: os.environ.get(k) for k in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE")}
    if spec.rdzv_backend == "local":  # a private rendezvous: nobody else can join this job
        rdzv = dict(rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}",
                    run_id=f"scalebench-{uuid.uuid4().hex[:12]}", rdzv_configs={"join_timeout": 120})
    elif spec.rdzv_backend == "c10d":  # elastic: the nodes are numbered as they arrive
        rdzv = dict(rdzv_backend="c10d", rdzv_endpoint=spec.rdzv_endpoint, run_id=spec.run_id,
                    rdzv_configs={"join_timeout": int(spec.join_timeout_s)})
    else:  # static: each node was given its rank (torchrun --node-rank)
        rdzv = dict(rdzv_backend="static", rdzv_endpoint=spec.rdzv_endpoint, run_id=spec.run_id,
                    rdzv_configs={"rank": spec.node_rank, "timeout": int(spec.join_timeout_s)})
    if spec.accelerator == "cuda" and "NCCL_DEBUG" not in os.environ:
        # NCCL's own account of its transports (NVLink/P2P, SHM, IB, sockets), read after the run
        os.makedirs(os.path.join(out_dir, ".nccl"), exist_ok=True)
        os.environ.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET",
                          NCCL_DEBUG_FILE=os.path.join(out_dir, ".nccl", "%h.%p.log"))
    os.environ[NODE_TAG_ENV] = node_tag()
    config = LaunchConfig(
        min_nodes=spec.nodes, max_nodes=spec.nodes, nproc_per_node=spec.procs, **rdzv,
        max_restarts=0, monitor_interval=0.5, signals_to_handle="SIGTERM,SIGINT,SIGHUP",
        start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=os.path.join(out_dir, ".elastic", node_tag())),
    )
    timed_out = threading.Event()
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(spec.timeout_s):
            timed_out.set()
            _kill_tree()

    restore, claim = _place_ranks(spec)  # last before the try whose finally undoes it
    threading.Thread(target=watchdog, daemon=True).start()
    t0 = time.perf_counter()
    try:
        results = elastic_launch(config, run_rank)(spec.to_dict(), out_dir)
        out = Outcome("ok", metrics=results.get(0))
        if 0 not in results:  # another node holds rank 0 and writes the result
            out.writes_result = False
        else:
            out.metrics["interconnect"] = interconnect(spec, out.metrics, out_dir)
        bad = [i for i, v in enumerate((out.metrics or {}).get("loss", [])) if not math.isfinite(v)]
        if bad:  # recorded, not averaged into the throughput as if nothing happened
            out.status = "diverged"
            out.error = f"loss became {out.metrics['loss'][bad[0]]} at step {bad[0]} (warm-up included)"
    except BaseException as e:  # ChildFailedError, rendezvous errors, Ctrl-C, SIGTERM
        if isinstance(e, (KeyboardInterrupt, SignalException)):
            # the user stops the sweep: end the ranks and let the caller record and stop
            _kill_tree()
            raise KeyboardInterrupt(f"interrupted ({e})") from e
        errs = _rank_errors(out_dir)
        killed = _killed_ranks(e, {r["rank"] for r in errs})
        if timed_out.is_set():
            out = Outcome("timeout", error=f"no result after timeout_s={spec.timeout_s:g}; all ranks ended")
        elif killed:  # a rank that died by a signal is the cause; the others' errors follow from it
            out = Outcome("failed", error=killed)
        elif errs:
            first = min(errs, key=lambda r: r.get("time", 0))  # the earliest exception is the cause
            out = Outcome(first["status"], error=first["error"], error_detail=first["traceback"])
        else:
            out = Outcome("failed", error=_describe_failures(e))
        out.rank_errors = errs
        out.writes_result = _writes_result(spec, out_dir, started=bool(getattr(e, "failures", None) or errs))
    finally:
        done.set()
        for k, v in nccl_env.items():  # this job's NCCL log settings end with it
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for sig, h in handlers.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(sig, h)
        if restore:
            os.sched_setaffinity(0, restore)
        if claim:
            claim.release()
    out.launch_s = time.perf_counter() - t0
    if claim:
        out.cores = {"cores": claim.cores,
                     "waited_for_cores_s": round(claim.waited_s, 3), "shared_with_other_jobs": claim.shared}
    return out
