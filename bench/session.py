"""A standing job: ranks that stay up and measure point after point, driven from this process.

A point's fixed cost here is spawning its ranks, importing torch in each and joining the
process group: about 4-6 s on this 2-core VM, against tens of milliseconds a step for the
CPU sizes. The advisor (bench/advise.py) measures dozens of layouts a few steps each, so it
pays that cost once per job instead of once per point: `Job` launches the ranks once
(bench.launch, with bench.worker.serve_rank), then hands them orders, each a list of points;
every point still builds its own model, mesh, optimizer and data, runs its own warm-up and
measured window, and becomes an ordinary result.json.

A process is the unit of replication: points measured in one job share its process drift, so
the advisor pairs the candidates measured in one job and starts a new job for each repeat.

The driver and the ranks agree through files in the job's folder (one writer each):
    order.<k>.pkl     the driver: the k-th order, a list of `Item` (None: stop)
    current.json      each node's local rank 0: the point it is on (order, index, start time)
    item.<k>.<i>.json each node's local rank 0: that point's metrics, once measured

A point that hangs past its own `timeout_s` ends the job (the driver's watch); a point that
fails ends it too. `Job.measure` then returns what was measured, the failed point's status
and error, and None for the points not reached, which the caller orders again in a new job.
No torch here.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.spec import RunSpec

POLL_S = 0.05  # the driver shares the cores with the ranks: it looks rarely


@dataclass(frozen=True)
class Item:
    """One point of an order."""
    spec: RunSpec
    out_dir: str  # the point's folder: its result.json goes there (the driver writes it)
    name: str  # the point's overrides as bench.run takes them (planted faults match on them)
    timeout_s: float  # this point's own limit, build and warm-up included


@dataclass
class ItemOutcome:
    """What became of one point: `ok` with metrics, or the job's failure (status, error)."""
    status: str
    metrics: dict[str, Any] | None = None
    error: str | None = None
    error_detail: str | None = None
    rank_errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    duration_s: float = 0.0  # from the point's start in the ranks to its metrics (or the job's end)
    launch_s: float = 0.0  # the job's start-up, charged to the first point it measured
    cores: dict[str, Any] | None = None


def _atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_order(job_dir: str, k: int, items: list[Item] | None) -> None:
    _atomic(os.path.join(job_dir, f"order.{k}.pkl"), pickle.dumps(items))


def read_order(job_dir: str, k: int) -> list[Item] | None:
    """The k-th order, waiting for it (rank 0)."""
    path = os.path.join(job_dir, f"order.{k}.pkl")
    while not os.path.exists(path):
        time.sleep(POLL_S)
    with open(path, "rb") as f:
        return pickle.load(f)


def mark_current(job_dir: str, k: int, i: int, timeout_s: float) -> None:
    _atomic(os.path.join(job_dir, "current.json"),
            json.dumps({"order": k, "index": i, "started": time.time(), "timeout_s": timeout_s}).encode())


def write_item(job_dir: str, k: int, i: int, metrics: dict[str, Any] | None, started: float) -> None:
    _atomic(os.path.join(job_dir, f"item.{k}.{i}.json"),
            json.dumps({"metrics": metrics, "started": started, "finished": time.time()}, default=str).encode())


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Job:
    """One standing job: its ranks launched in a thread, driven from here.

    `Job(lead, job_dir, entry)`: `lead` is what every point of the job shares (processes,
    threads, accelerator, rendezvous); `entry` is bench.worker.serve_rank (the launcher is
    handed the rank entry point). `measure(items)` orders points and waits for them; `close()`
    orders the stop and waits for the ranks to leave."""

    def __init__(self, lead: RunSpec, job_dir: str, entry: Callable, launch: Callable | None = None):
        if launch is None:
            from bench.launch import launch
        self.job_dir = job_dir
        os.makedirs(job_dir, exist_ok=True)
        self.k = 0
        self.sizes: dict[int, int] = {}  # order -> its number of points
        self.done = 0  # points this job measured
        self.outcome = None  # bench.launch.Outcome, once the job has ended
        self.t_start = time.time()
        self._first = True
        # the job runs as long as it is ordered to: the watch holds each point to its own timeout
        # (the lead's timeout_s only bounds the wait for cores)
        self._thread = threading.Thread(target=self._run, args=(launch, lead, entry), daemon=True)
        self._thread.start()

    def _run(self, launch: Callable, lead: RunSpec, entry: Callable) -> None:
        try:
            self.outcome = launch(lead, self.job_dir, entry, watch=self._watch)
        except BaseException as e:  # an interrupt reaches the driver through `ended`
            from bench.launch import Outcome
            self.outcome = Outcome("interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                                   error=f"{type(e).__name__}: {e}".splitlines()[0])

    def _watch(self) -> str | None:
        """The point in progress past its own timeout, or (a point done, more ordered) no next
        point started within that time: the text that ends the job."""
        cur = _read_json(os.path.join(self.job_dir, "current.json"))
        if not cur:
            return None
        k, i = cur["order"], cur["index"]
        done = _read_json(os.path.join(self.job_dir, f"item.{k}.{i}.json"))
        if done is None:
            if time.time() - cur["started"] > cur["timeout_s"]:
                return f"no result after timeout_s={cur['timeout_s']:g} (this point); the job's ranks were ended"
            return None
        more = i + 1 < self.sizes.get(k, 0) or (k + 1) in self.sizes  # work the ranks have not started
        if more and time.time() - done["finished"] > cur["timeout_s"]:
            return (f"no next point started within timeout_s={cur['timeout_s']:g} after the last one ended; "
                    "the job's ranks were ended")
        return None

    @property
    def ended(self) -> bool:
        return not self._thread.is_alive()

    def measure(self, items: list[Item], on_item: Callable[[int, ItemOutcome], None] | None = None
                ) -> list[ItemOutcome | None]:
        """Measure `items` in order: an outcome each, None for those the job did not reach
        (it ended at an earlier one's failure or timeout). `on_item(i, outcome)` is called as
        each outcome arrives (progress, recording: nothing measured waits for the rest)."""
        if self.ended:
            return [None] * len(items)
        k, self.k = self.k, self.k + 1
        self.sizes[k] = len(items)
        write_order(self.job_dir, k, items)
        out: list[ItemOutcome | None] = []
        t_prev = time.time()
        for i, _ in enumerate(items):
            path = os.path.join(self.job_dir, f"item.{k}.{i}.json")
            while not os.path.exists(path) and not self.ended:
                time.sleep(POLL_S)
            done = _read_json(path) if os.path.exists(path) else None
            cur = _read_json(os.path.join(self.job_dir, "current.json")) or {}
            started = cur.get("started", t_prev) if (cur.get("order"), cur.get("index")) == (k, i) else t_prev
            if done is None:  # the job ended at this point (or before it started)
                reached = (cur.get("order"), cur.get("index")) == (k, i)
                if not reached:
                    out += [None] * (len(items) - i)
                    return out
                o = self.outcome
                out.append(ItemOutcome(o.status if o.status != "ok" else "failed",
                                       error=o.error or "the job ended without this point's result",
                                       error_detail=o.error_detail, rank_errors=o.rank_errors,
                                       duration_s=time.time() - started, cores=o.cores))
                if on_item:
                    on_item(i, out[-1])
                out += [None] * (len(items) - i - 1)
                return out
            started = done.get("started", started)  # the ranks' own start of the point
            o = ItemOutcome("ok", metrics=done["metrics"], duration_s=done["finished"] - started)
            if self._first:  # what launching the ranks cost is the first point's
                o.launch_s, self._first = started - self.t_start, False
            self.done += 1
            out.append(o)
            if on_item:
                on_item(i, o)
            t_prev = done["finished"]
        return out

    def close(self, timeout_s: float = 60.0) -> None:
        """Order the stop and wait for the ranks to leave (ended by force past `timeout_s`)."""
        if not self.ended:
            write_order(self.job_dir, self.k, None)
            self._thread.join(timeout_s)
        if not self.ended:
            from bench.launch import _kill_tree
            _kill_tree()
            self._thread.join(10)
