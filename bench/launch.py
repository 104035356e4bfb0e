"""Start one job's ranks and turn whatever happens into an outcome.

`launch(spec, out_dir, entry)` runs `entry(spec, out_dir)` in every rank (the launcher is
handed the rank entry point; it does not import the worker):

* one machine (`launcher=local`): torch elastic's process layer (`start_processes`, spawn)
  starts the ranks, which meet through a file store in a private temporary folder. Nothing
  listens on the network: no rendezvous store socket, and gloo's (NCCL's) own connections
  bound to the loopback interface.
* several machines (`launcher=multinode`): `elastic_launch`, the engine behind torchrun,
  with a c10d or static rendezvous at the configured endpoint. The node that hosts the
  rendezvous store keeps it until every other node has said goodbye, so no node finds the
  store gone while it shuts its rendezvous down.

A watchdog thread enforces the job's `timeout_s` by ending every process below this one.
Nothing here raises for a benchmark failure: the caller gets an Outcome with a status and a
one-line error. Ctrl-C and SIGTERM end the ranks and reach the caller as KeyboardInterrupt.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench import cores
from bench.cluster import is_local_host, nccl_transports
from bench.config import Accelerator
from bench.protocol import ALLOCATOR_ENV, INIT_ENV, NODE_TAG_ENV, holds_rank0, node_tag, read_rank_errors
from bench.spec import RunSpec

GOODBYE_TIMEOUT_S = 30.0  # how long the store's host waits for the other nodes to leave first


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


def launch(spec: RunSpec, out_dir: str, entry: Callable[[RunSpec, str], dict[str, Any] | None],
           watch: Callable[[], str | None] | None = None) -> Outcome:
    """Run `entry` in every rank of this node; the job's outcome (rank 0's metrics if ok).
    `watch`, polled every 0.2 s while the job runs, takes the place of the job's `timeout_s`
    (which then only bounds the wait for cores): a text it returns ends every rank and
    becomes the `timeout` outcome's error (a standing job's per-point timeout)."""
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    os.makedirs(out_dir, exist_ok=True)
    timed_out, done = threading.Event(), threading.Event()
    why: list[str] = []

    def watchdog() -> None:
        deadline = None if watch else time.monotonic() + spec.timeout_s
        while not done.wait(0.2 if watch else spec.timeout_s):
            reason = watch() if watch else None
            if reason or (deadline is not None and time.monotonic() >= deadline):
                why.append(reason or "")
                timed_out.set()
                _kill_tree()
                return

    env = {**rank_env(spec, os.environ), NODE_TAG_ENV: node_tag()}  # inherited by the ranks
    if spec.accelerator is Accelerator.cuda and "NCCL_DEBUG" not in os.environ:
        # NCCL's own account of its transports (NVLink/P2P, SHM, IB, sockets), read after the run
        os.makedirs(os.path.join(out_dir, ".nccl"), exist_ok=True)
        env.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET",
                   NCCL_DEBUG_FILE=os.path.join(out_dir, ".nccl", "%h.%p.log"))
    n_cores = spec.procs * spec.cpu_threads_per_device if spec.accelerator is Accelerator.cpu else 0
    hosting = False
    claim = None
    t0 = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(kept_signal_handlers())  # elastic installs its own and leaves them
            stack.enter_context(scoped_env(env))
            if n_cores:
                claim = stack.enter_context(cores.claimed(n_cores, patience_s=spec.timeout_s))
            t0 = time.perf_counter()  # launch_s: from launch to teardown, not the wait for cores
            threading.Thread(target=watchdog, daemon=True).start()
            if spec.rendezvous.backend == "local":
                results = _run_local(spec, out_dir, entry)
            else:
                hosting = stack.enter_context(store_leaves_last(spec))
                results = _run_elastic(spec, out_dir, entry, hosting)
            out = _ok_outcome(spec, results, out_dir)
    except BaseException as e:  # failed ranks, rendezvous errors, Ctrl-C, SIGTERM
        from torch.distributed.elastic.multiprocessing.api import SignalException
        if isinstance(e, (KeyboardInterrupt, SignalException)):
            # the user stops the sweep: end the ranks and let the caller record and stop
            _kill_tree()
            raise KeyboardInterrupt(f"interrupted ({e})") from e
        failures = getattr(e, "failures", None) or {}
        out = _failed_outcome(spec, e, failures, out_dir, timed_out.is_set())
        if why and why[0]:
            out.error = why[0]
        started = bool(failures or out.rank_errors)
        # across nodes the node of rank 0 records the job; when no worker ever started (the
        # rendezvous failed), node 0 or the node the endpoint names (or that hosted the store) does
        out.writes_result = spec.nodes == 1 or holds_rank0(out_dir) or not started and _store_node(spec, hosting)
    finally:
        done.set()
    out.launch_s = time.perf_counter() - t0
    if claim is not None:
        out.cores = claim.record()
    return out


class RanksFailed(Exception):
    """Some ranks of a one-machine job failed; `failures` as elastic reports them."""

    def __init__(self, failures: dict[int, Any]):
        super().__init__(f"{len(failures)} rank(s) failed")
        self.failures = failures


def _run_local(spec: RunSpec, out_dir: str, entry: Callable) -> dict[int, Any]:
    """The ranks of a one-machine job: spawned by elastic's process layer, meeting through a
    file store (no socket), gloo/NCCL bound to loopback. {rank: return value}."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, start_processes
    n = spec.procs
    store_dir = tempfile.mkdtemp(prefix="scalebench-store-")
    run_id = f"scalebench-{uuid.uuid4().hex[:12]}"
    base = {"WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n), "GROUP_RANK": "0",
            INIT_ENV: f"file://{os.path.join(store_dir, 'store')}",
            "TORCHELASTIC_RUN_ID": run_id, "TORCHELASTIC_RESTART_COUNT": "0", **loopback_env(spec)}
    envs = {r: {**base, "RANK": str(r), "LOCAL_RANK": str(r)} for r in range(n)}
    pc = start_processes(name="scalebench", entrypoint=entry, args={r: (spec, out_dir) for r in range(n)},
                         envs=envs, logs_specs=DefaultLogsSpecs(log_dir=os.path.join(out_dir, ".elastic", node_tag())),
                         start_method="spawn")
    try:
        result = pc.wait(period=0.1)
        if result.is_failed():
            raise RanksFailed(result.failures)
        return result.return_values
    finally:
        pc.close()  # the rest of the ranks, when one failed
        shutil.rmtree(store_dir, ignore_errors=True)


# glibc malloc serves a block above its mmap threshold from its own mmap, returned to the system
# when freed; its own policy raises that threshold (up to 32 MiB) as such blocks are freed, and
# gives the heap's top back above a trim threshold it sets from the same history, so a step may
# fault pages in again by an amount that depends on what the process did before (the suite's rank
# ~2,000 a step at mini against 300-1,000 for a bare loop, issue 18). The default fixes both:
# 32 MiB and no trimming, so blocks up to 32 MiB are reused step after step (`malloc_mmap_max=0`
# reuses the larger ones too, at a price in RSS: its key says the measured figures). A fixed low threshold
# (1 MiB, what issue 14 set for every CPU rank) makes every larger tensor fresh pages each time,
# page faults and zeroing included: mini's step went from 155 to 207 ms (+33%, 4 alternations of
# the bare loop). The price of keeping memory is in the memory figure: under FSDP at `small` (seq
# 128, batch 2) a rank's RSS is 41-93% above the memory model under the default or glibc's own
# policy, where `malloc_mmap_threshold=1048576 malloc_trim_threshold=null` brings it within 15%
# (tests/test_memory.py runs so). The user's own environment wins, variable by variable.
def rank_env(spec: RunSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """What a rank's process runs under beyond `environ`: its threads (OMP_NUM_THREADS) and its
    allocator (malloc_env). bench.perf gives its bare loop and reference trainers the same."""
    return {"OMP_NUM_THREADS": str(spec.cpu_threads_per_device), **malloc_env(spec, environ)}


def malloc_env(spec: RunSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a CPU rank's glibc malloc reads: MALLOC_MMAP_THRESHOLD_,
    MALLOC_TRIM_THRESHOLD_ and MALLOC_MMAP_MAX_ from their config keys (bench.protocol.ALLOCATOR_ENV),
    each where the key is set and the user's environment does not set that variable already;
    nothing on a GPU."""
    if spec.accelerator is not Accelerator.cpu:
        return {}
    keys = ((var, getattr(spec, key)) for key, var in ALLOCATOR_ENV.items())
    return {var: str(value) for var, value in keys if value is not None and var not in environ}


def loopback_env(spec: RunSpec) -> dict[str, str]:
    """Bind the collectives' own sockets to the loopback interface (unless the user chose one):
    a one-machine job is not reachable from the network."""
    lo = next((name for name, addrs in psutil.net_if_addrs().items()
               if any(a.address == "127.0.0.1" for a in addrs)), None)
    if lo is None:
        return {}
    env = {} if "GLOO_SOCKET_IFNAME" in os.environ else {"GLOO_SOCKET_IFNAME": lo}
    if spec.accelerator is Accelerator.cuda and "NCCL_SOCKET_IFNAME" not in os.environ:
        env["NCCL_SOCKET_IFNAME"] = lo
    return env


def _run_elastic(spec: RunSpec, out_dir: str, entry: Callable, hosting: bool) -> dict[int, Any]:
    """This node's ranks of a multi-node job through torch elastic. {global rank: return value}."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    r = spec.rendezvous
    if r.backend == "c10d":  # elastic: the nodes are numbered as they arrive
        rdzv = dict(rdzv_backend="c10d", rdzv_endpoint=r.endpoint, run_id=r.run_id,
                    rdzv_configs={"join_timeout": int(r.join_timeout_s), "is_host": hosting})
    else:  # static: each node was given its rank (torchrun --node-rank)
        rdzv = dict(rdzv_backend="static", rdzv_endpoint=r.endpoint, run_id=r.run_id,
                    rdzv_configs={"rank": r.node_rank, "timeout": int(r.join_timeout_s)})
    config = LaunchConfig(
        min_nodes=r.nodes, max_nodes=r.nodes, nproc_per_node=spec.procs, **rdzv, max_restarts=0,
        monitor_interval=0.1, signals_to_handle="SIGTERM,SIGINT,SIGHUP", start_method="spawn",
        logs_specs=DefaultLogsSpecs(log_dir=os.path.join(out_dir, ".elastic", node_tag())))
    return elastic_launch(config, entry)(spec, out_dir)


def _store_node(spec: RunSpec, hosting: bool) -> bool:
    """Whether this node is the rendezvous store's: it hosted it, or is node 0, or the endpoint names it."""
    r = spec.rendezvous
    return hosting or r.node_rank == 0 or (r.node_rank is None and is_local_host(_endpoint(spec)[0]))


def _endpoint(spec: RunSpec) -> tuple[str, int]:
    host, _, port = spec.rendezvous.endpoint.rpartition(":")
    return host, int(port)


@contextlib.contextmanager
def store_leaves_last(spec: RunSpec) -> Iterator[bool]:
    """Multi-node: host the rendezvous store here when this node is its host (static: node 0;
    c10d: the endpoint names this machine and the port is free), and keep it until the other
    nodes have left: each says goodbye after its own rendezvous shut down. Torch elastic's
    store in this process shares the server (multi-tenant), so it lives as long as we hold it.
    Yields whether this node hosts the store."""
    from datetime import timedelta

    import torch.distributed as dist
    host, port = _endpoint(spec)
    r = spec.rendezvous
    key = f"scalebench/left/{r.run_id}"
    server = None
    if (r.node_rank == 0) if r.backend == "static" else is_local_host(host):
        try:
            server = dist.TCPStore(host, port, is_master=True, multi_tenant=True, wait_for_workers=False,
                                   timeout=timedelta(seconds=r.join_timeout_s))
        except (RuntimeError, ValueError):  # another launcher on this machine hosts it
            server = None
    try:
        yield server is not None
    finally:
        if server is not None:
            deadline = time.monotonic() + GOODBYE_TIMEOUT_S
            while server.add(key, 0) < r.nodes - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            del server
        else:
            with contextlib.suppress(Exception):  # the host may be gone already: nothing to tell
                dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=10)).add(key, 1)


@contextlib.contextmanager
def kept_signal_handlers() -> Iterator[None]:
    """Put this process's signal handlers back afterwards: torch elastic installs its own for
    SIGINT/SIGTERM/SIGHUP/SIGQUIT and leaves them (a sweep under nohup must keep ignoring
    hangups, and ours turn SIGTERM into Ctrl-C)."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    handlers = {s: signal.getsignal(s) for s in sigs}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, h in handlers.items():
                signal.signal(s, h)


@contextlib.contextmanager
def scoped_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the job (its ranks inherit them) and restore them after."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ok_outcome(spec: RunSpec, results: dict[int, Any], out_dir: str) -> Outcome:
    if 0 not in results:  # another node holds rank 0 and writes the result
        return Outcome("ok", writes_result=False)
    metrics = results[0]
    if metrics is None:  # a standing job (bench/session.py) hands its points' metrics over as files
        return Outcome("ok")
    metrics["interconnect"] = interconnect(spec, metrics, out_dir)
    return diverged(Outcome("ok", metrics=metrics))


def diverged(out: Outcome) -> Outcome:
    """A non-finite loss makes the run `diverged`: recorded, never averaged into the
    throughput as if nothing happened."""
    bad = [i for i, v in enumerate((out.metrics or {}).get("loss", [])) if not math.isfinite(v)]
    if bad:
        out.status = "diverged"
        out.error = f"loss became {out.metrics['loss'][bad[0]]} at step {bad[0]} (warm-up included)"
    return out


def _failed_outcome(spec: RunSpec, exc: BaseException, failures: dict[int, Any], out_dir: str,
                    timed_out: bool) -> Outcome:
    errs = read_rank_errors(out_dir)
    reported = {r["rank"] for r in errs}
    killed = {r: f for r, f in failures.items() if f.exitcode is not None and f.exitcode < 0 and r not in reported}
    if timed_out:
        out = Outcome("timeout", error=f"no result after timeout_s={spec.timeout_s:g}; all ranks ended")
    elif killed:  # a rank that died by a signal is the cause; the others' errors follow from it
        out = Outcome("failed", error=describe_failures(killed))
    elif errs:
        first = min(errs, key=lambda r: r.get("time", 0))  # the earliest exception is the cause
        out = Outcome(first["status"], error=first["error"], error_detail=first["traceback"])
    elif failures:
        out = Outcome("failed", error=describe_failures(failures))
    else:
        out = Outcome("failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    out.rank_errors = errs
    return out


def describe_failures(failures: dict[int, Any]) -> str:
    """A one-line account of which rank died and how, from elastic's ProcessFailure records."""
    parts = []
    for rank, f in sorted(failures.items()):
        if f.exitcode is not None and f.exitcode < 0:
            why = f"killed by signal {-f.exitcode} ({signal.Signals(-f.exitcode).name})"
            if -f.exitcode == signal.SIGKILL:
                why += " (out of memory, or killed from outside)"
            parts.append(f"rank {rank} {why}")
        else:
            parts.append(f"rank {rank} exited with code {f.exitcode}")
    return "; ".join(parts)


def interconnect(spec: RunSpec, metrics: dict[str, Any], out_dir: str) -> str:
    """How the ranks talked: NCCL's transports from its log, or gloo over loopback / TCP."""
    hosts = metrics.get("hosts") or []
    if spec.procs * spec.nodes == 1:
        return "none (one process)"
    if getattr(spec, "colocated", 1) > 1:
        return f"none ({spec.colocated} independent co-located copies)"
    if spec.accelerator is Accelerator.cuda:
        lines: list[str] = []
        for path in glob.glob(os.path.join(out_dir, ".nccl", "*.log")):
            with open(path, errors="replace") as f:
                lines += f.readlines()
        return nccl_transports(lines) or "nccl (transport not logged; NCCL_DEBUG was set by the user)"
    if len(set(hosts)) <= 1:
        return "loopback/gloo (one host)"
    iface = os.environ.get("GLOO_SOCKET_IFNAME")
    return f"tcp/gloo across {len(set(hosts))} hosts" + (f" ({iface})" if iface else "")


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
