"""Memory, utilisation and power of one rank over the measured window.

A sampler thread (every `interval_s`, 20 ms by default; None: no thread, a read at each end of
the window only) reads this process's RSS through psutil and, on a GPU, NVML for the rank's own
device: used memory (nvmlMemory_v2, which
counts what the driver reserves too), GPU utilisation and power. Energy comes from the
total-energy counter (mJ since driver load) read at both ends of the window, not from
integrating power. NVML ignores CUDA_VISIBLE_DEVICES, so the device is matched to CUDA's
by UUID. Where NVML cannot load (no driver), the GPU figures are None and `nvml` says why;
nothing fails.

Peaks are per phase (`PeakMeter`): the build, the warm-up and the measured window each get
their own high-water mark, read and reset at the phase's end, so a figure never carries
another phase's memory (a sharded strategy's build, compile's workspaces) or the launcher's.
"""
from __future__ import annotations

import resource
import statistics
import threading
from typing import Any

import psutil


def nvml_uuid(torch_uuid: str) -> str:
    """torch prints a device UUID bare ('58a1...'); NVML names it 'GPU-58a1...'."""
    u = str(torch_uuid)
    return u if u.startswith(("GPU-", "MIG-")) else "GPU-" + u


def mw_to_w(mw: float) -> float:
    return mw / 1000.0


def mj_to_j(mj: float) -> float:
    return mj / 1000.0


def _try(read):
    try:
        return read()
    except Exception:
        return None


def os_counters() -> tuple[int, int]:
    """This process's (minor page faults, involuntary context switches) so far, all its threads
    (getrusage(2)). Over a window they say what a step time alone cannot: pages the allocator
    gave back and must fault in again (each a kernel entry and a zeroed 4 KiB page, about 1.5 us
    here), and how often one of its threads was preempted (the step's, or another of the process's)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_minflt, ru.ru_nivcsw


# what `per_step` names the two counters, in `os_counters`' order: the names a result records
COUNTERS = ("minor_page_faults_per_step", "involuntary_context_switches_per_step")


def per_step(before: tuple[int, int], after: tuple[int, int], steps: int) -> dict[str, float]:
    """`os_counters` over a window of `steps` steps, per step, under COUNTERS' names."""
    return {name: (a - b) / steps for name, a, b in zip(COUNTERS, after, before)}


def release_heap() -> bool:
    """Give the heap's free memory back to the system (glibc's malloc_trim(0)): between the points
    of a standing job, whose ranks keep freed memory for the next step (malloc_trim_threshold),
    so that a point does not start on what an earlier one left. False where there is no glibc."""
    import ctypes
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: glibc's, where it is the C library
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def peak_rss_bytes() -> int:
    """This process's own RSS high-water mark (bytes). Linux: VmHWM, which counts this
    process's memory since its exec or the last reset; not getrusage's ru_maxrss, which a
    spawned process inherits from its parent's high-water mark (so a rank would report its
    launcher's peak when that was higher). Elsewhere ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import sys
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: `echo 5 > /proc/self/clear_refs`,
    proc(5)). False where the kernel does not allow it: the peak then stays the lifetime one."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMeter:
    """High-water marks of one rank, phase by phase. `end(phase)` reads the peaks since the
    previous `end` (or the meter's creation) and resets them:

      rss_peak_bytes      the process's RSS peak (VmHWM; CPU and GPU runs);
      torch_max_allocated_bytes / torch_max_reserved_bytes
                          on a GPU, the caching allocator's peaks (tensors / segments held).

    `end(phase, empty_cache=True)` also empties a GPU allocator's cache, so that blocks the
    phase freed (the build's) are not counted in the next one's reserved figure; not at the
    window's opening, where it would make the first measured step call cudaMalloc. `scope` says whether the RSS peak
    could be reset ("phase") or is the process's lifetime peak ("lifetime": no clear_refs)."""

    def __init__(self, device=None):
        self.device = device if device is not None and getattr(device, "type", None) == "cuda" else None
        self.scope = "phase"
        self.phases: dict[str, dict[str, Any]] = {}
        self._reset(empty_cache=False)

    def _reset(self, empty_cache: bool) -> None:
        if not reset_peak_rss():
            self.scope = "lifetime"
        if self.device is not None:
            import torch
            torch.cuda.synchronize(self.device)
            if empty_cache:
                torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def end(self, phase: str, empty_cache: bool = False) -> dict[str, Any]:
        """The peaks of `phase` (which just ended), recorded under `phases[phase]`; resets."""
        out: dict[str, Any] = {"rss_peak_bytes": peak_rss_bytes(), "rss_peak_scope": self.scope}
        if self.device is not None:
            import torch
            torch.cuda.synchronize(self.device)
            out.update(torch_max_allocated_bytes=torch.cuda.max_memory_allocated(self.device),
                       torch_max_reserved_bytes=torch.cuda.max_memory_reserved(self.device))
        self.phases[phase] = out
        self._reset(empty_cache)
        return out


class Sampler:
    """Start at the window's opening, stop at its close; `summary()` gives the figures."""

    def __init__(self, device=None, interval_s: float | None = 0.02, meter: PeakMeter | None = None):
        self.interval_s = interval_s
        self.meter = meter  # its phases "warmup" and "window" end at start() and stop()
        self.proc = psutil.Process()
        self.rss: list[int] = []
        self.gpu_mem: list[int] = []
        self.util: list[int] = []
        self.power_w: list[float] = []
        self.energy_j: float | None = None
        self.nvml = "not a GPU run"
        self._h = None
        self._e0: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if device is not None and getattr(device, "type", None) == "cuda":
            self._open_nvml(device)

    def _open_nvml(self, device) -> None:
        try:
            import pynvml
            import torch
            pynvml.nvmlInit()
            self._nv = pynvml
            self._h = pynvml.nvmlDeviceGetHandleByUUID(nvml_uuid(torch.cuda.get_device_properties(device).uuid))
            self.nvml = "ok"
        except Exception as e:  # no driver, no library, MIG without access...
            self._h = None
            self.nvml = f"unavailable: {type(e).__name__}: {e}"

    def _energy_mj(self) -> float | None:
        try:
            return float(self._nv.nvmlDeviceGetTotalEnergyConsumption(self._h))
        except Exception:  # older GPUs have no energy counter
            return None

    def used_bytes(self) -> int | None:
        """The device's memory in use now as NVML counts it (None on a CPU or without NVML)."""
        if self._h is None:
            return None
        nv, h = self._nv, self._h
        used = _try(lambda: nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2).used)
        return used if used is not None else _try(lambda: nv.nvmlDeviceGetMemoryInfo(h).used)

    def _sample(self) -> None:
        self.rss.append(self.proc.memory_info().rss)
        if self._h is None:
            return
        nv, h = self._nv, self._h
        # each read on its own: a device may not support one (NOT_SUPPORTED), and the
        # sampler must outlive that
        mem = self.used_bytes()
        for out, v in ((self.gpu_mem, mem), (self.util, _try(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu)),
                       (self.power_w, _try(lambda: mw_to_w(nv.nvmlDeviceGetPowerUsage(h))))):
            if v is not None:
                out.append(v)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> Sampler:
        if self.meter is not None:
            self.meter.end("warmup")
        if self._h is not None:
            self._e0 = self._energy_mj()
        self._sample()
        if self.interval_s is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()
        if self.meter is not None:
            self.meter.end("window")
        if self._h is not None:
            e1 = self._energy_mj()
            if self._e0 is not None and e1 is not None:
                self.energy_j = mj_to_j(e1 - self._e0)

    def summary(self) -> dict[str, Any]:
        return {
            "rss_window_peak_bytes": max(self.rss) if self.rss else None,
            "samples": len(self.rss),
            "nvml": self.nvml,
            "nvml_used_peak_bytes": max(self.gpu_mem) if self.gpu_mem else None,
            "gpu_util_mean": statistics.fmean(self.util) / 100 if self.util else None,
            "power_mean_w": statistics.fmean(self.power_w) if self.power_w else None,
            "energy_j": self.energy_j,
        }

