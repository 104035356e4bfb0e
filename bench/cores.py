"""CPU cores: which ones a job's ranks run on, and the claims that keep two jobs apart.

A CPU "device" is a process pinned to `cpu_threads_per_device` cores of its own. The
launcher claims devices x threads cores for the job (`claimed`), hands them to the ranks in
order through CORES_ENV, and moves itself onto a core no rank uses; each rank then pins
itself to its share (`pin`). One rule for every process that pins: `share`. No torch here.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from bench.protocol import CORES_ENV, LOCK_DIR_ENV


def usable() -> list[int]:
    """The cores this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def share(cores: list[int], index: int, threads: int) -> list[int]:
    """Process `index`'s `threads` cores out of `cores`, in order; round-robin past the end
    (oversubscribed tests: ranks then share cores)."""
    return [cores[(index * threads + i) % len(cores)] for i in range(threads)]


def pin(index: int, threads: int) -> list[int]:
    """Pin this process to its share of the job's cores (CORES_ENV, set by the launcher;
    else this process's own). Returns the cores; the caller sets torch's thread count."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    listed = os.environ.get(CORES_ENV)
    mine = share([int(c) for c in listed.split(",")] if listed else usable(), index, threads)
    os.sched_setaffinity(0, mine)
    return mine


def spare() -> list[int]:
    """The cores this process may run on that no rank of its job computes on (CORES_ENV lists
    the job's): where the launcher waits. [] without a launcher's list. Call before `pin`."""
    listed = os.environ.get(CORES_ENV)
    if not listed:
        return []
    job = {int(c) for c in listed.split(",")}
    return [c for c in usable() if c not in job]


def threads() -> set[int]:
    """This process's thread ids (Linux: /proc/self/task; elsewhere empty)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def move_threads(tids: set[int], to: list[int]) -> int:
    """Put the threads `tids` of this process on the cores `to`. Returns how many moved (0 where
    `to` is empty; a thread that has ended meanwhile is skipped). By id, not by name: a new
    thread names itself only once it first runs, which on a pinned rank's busy core may be late."""
    if not to or not hasattr(os, "sched_setaffinity"):
        return 0
    moved = 0
    for tid in tids:
        try:
            os.sched_setaffinity(tid, to)
            moved += 1
        except OSError:
            pass
    return moved


def lock_dir() -> str:
    """The folder of the per-core locks: shared by every scalebench job of this user on this
    host (LOCK_DIR_ENV overrides it: tests use their own, so they never wait for a real sweep)."""
    d = os.environ.get(LOCK_DIR_ENV) or os.path.join(tempfile.gettempdir(), f"scalebench-cores-{os.getuid()}")
    os.makedirs(d, exist_ok=True)
    return d


class CoreClaim:
    """Advisory locks, one file per CPU core: two sweeps at once take turns on the cores
    instead of timing each other. A job claims all the cores it needs or none (no deadlock),
    waits while another job holds them, and after `patience_s` runs on what it was given,
    marked as sharing."""

    def __init__(self, cores: list[int], n: int, patience_s: float) -> None:
        self.dir = lock_dir()
        self.files: list[Any] = []
        self.cores: list[int] = []
        self.waited_s, self.shared = 0.0, False
        t0 = time.perf_counter()
        told = False
        while not self._try(cores, n):
            self.waited_s = time.perf_counter() - t0
            if self.waited_s > patience_s:
                self.cores, self.shared = cores[:n], True
                print(f"  [launch] waited {self.waited_s:.0f} s; running on shared cores (marked in the result)",
                      flush=True)
                return
            if not told:
                print(f"  [launch] waiting: another scalebench job holds the {n} core(s) this one needs "
                      f"(at most {patience_s:.0f} s, the point's timeout_s)", flush=True)
                told = True
            time.sleep(0.5)
        self.waited_s = time.perf_counter() - t0
        if told:
            print(f"  [launch] waited {self.waited_s:.0f} s for the cores; the point runs now", flush=True)

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

    def record(self) -> dict[str, Any]:
        return {"cores": self.cores, "waited_for_cores_s": round(self.waited_s, 3),
                "shared_with_other_jobs": self.shared}


@contextlib.contextmanager
def claimed(n: int, patience_s: float) -> Iterator[CoreClaim | None]:
    """Claim `n` cores for a job's ranks and hand them over (CORES_ENV); meanwhile this process
    (the launcher, which polls its ranks) moves onto a core no rank uses, so it never takes
    time from one. Afterwards: its own affinity back, the claim released, CORES_ENV restored.
    Yields the claim (None when oversubscribed: more ranks than cores, tests only)."""
    mine = usable()
    claim = CoreClaim(mine, n, patience_s) if n <= len(mine) else None
    use = claim.cores if claim else share(mine, 0, n)
    before = os.environ.get(CORES_ENV)
    os.environ[CORES_ENV] = ",".join(str(c) for c in use)
    spare = [c for c in mine if c not in use]
    try:
        if spare and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, spare)
        yield claim
    finally:
        if spare and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, mine)
        if before is None:
            os.environ.pop(CORES_ENV, None)
        else:
            os.environ[CORES_ENV] = before
        if claim:
            claim.release()
