"""A memory limit for a job's ranks: a child cgroup of this process's own, with the limit set.

The advisor (bench/advise.py) prunes layouts whose memory cannot fit a capacity; with
`memory_limit_gib` the capacity is made real for every rank it launches: the ranks join a
cgroup whose memory limit is that capacity (each rank joins at its start, bench.worker, from
CGROUP_ENV), so a layout that needs more is ended by the kernel's OOM killer, as it would be
on a machine of that size. cgroup v2 (`memory.max`) and v1 (`memory.limit_in_bytes`) are both handled. A rank joins after
torch is imported (torch elastic's process wrapper imports it first): where the kernel still
moves a joining process's pages (v1 `memory.move_charge_at_immigrate`, gone from recent
kernels) they move with it, otherwise they stay charged outside and the limit is looser by
them (about 0.2-0.3 GiB a rank); where no
cgroup can be made (no permission, no memory controller) `limited` yields None and says why.
No torch here.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from bench.protocol import CGROUP_ENV

ROOT = "/sys/fs/cgroup"


def _own_memory_cgroup() -> tuple[str, int] | None:
    """(folder of this process's memory cgroup, version) or None."""
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):  # v1
            return os.path.join(ROOT, "memory", path.lstrip("/")), 1
    for line in lines:
        if line.startswith("0::"):  # v2: one unified hierarchy
            return os.path.join(ROOT, line[3:].lstrip("/")), 2
    return None


@contextlib.contextmanager
def limited(limit_bytes: int) -> Iterator[tuple[str | None, str]]:
    """A child cgroup limited to `limit_bytes` for the block: (its folder, how) or (None, why not).
    Removed afterwards (its processes have ended by then)."""
    own = _own_memory_cgroup()
    if own is None:
        yield None, "no memory cgroup found (/proc/self/cgroup)"
        return
    parent, version = own
    path = os.path.join(parent, f"scalebench-{secrets.token_hex(4)}")
    moves = False
    try:
        os.mkdir(path)
        if version == 1:
            try:  # a rank's pages (torch, imported before it joins) move with it; removed in recent kernels
                with open(os.path.join(path, "memory.move_charge_at_immigrate"), "w") as f:
                    f.write("1")
                moves = True
            except OSError:
                pass
            with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
                f.write(str(limit_bytes))
            with contextlib.suppress(OSError):  # no swap either, where swap accounting exists
                with open(os.path.join(path, "memory.memsw.limit_in_bytes"), "w") as f:
                    f.write(str(limit_bytes))
        else:
            with open(os.path.join(path, "memory.max"), "w") as f:
                f.write(str(limit_bytes))
            with contextlib.suppress(OSError):
                with open(os.path.join(path, "memory.swap.max"), "w") as f:
                    f.write("0")
    except OSError as e:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        yield None, f"cannot make a cgroup under {parent} ({e.strerror})"
        return
    try:
        yield path, (f"cgroup v{version} {path}, limit {limit_bytes / 2**30:.2f} GiB; "
                     + ("a rank's pages move with it" if moves else
                        "what a rank allocated before joining (importing torch) stays outside the limit"))
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def oom_kills(path: str) -> int | None:
    """How many processes the kernel's OOM killer ended in the cgroup at `path` (v2:
    memory.events `oom_kill`; v1: memory.oom_control `oom_kill`, kernels 4.13+); None unknown."""
    for name in ("memory.events", "memory.oom_control"):
        try:
            for line in open(os.path.join(path, name)):
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
        except (OSError, ValueError):
            continue
    return None


def join_from_env() -> None:
    """A rank's first step: join the cgroup CGROUP_ENV names (if any)."""
    path = os.environ.get(CGROUP_ENV)
    if path:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
