"""Memory, utilisation and power of one rank over the measured window.

A sampler thread (every `interval_s`, 20 ms by default) reads this process's RSS through
psutil and, on a GPU, NVML for the rank's own device: used memory (nvmlMemory_v2, which
counts what the driver reserves too), GPU utilisation and power. Energy comes from the
total-energy counter (mJ since driver load) read at both ends of the window, not from
integrating power. NVML ignores CUDA_VISIBLE_DEVICES, so the device is matched to CUDA's
by UUID. Where NVML cannot load (no driver), the GPU figures are None and `nvml` says why;
nothing fails.
"""
from __future__ import annotations

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


class Sampler:
    """Start at the window's opening, stop at its close; `summary()` gives the figures."""

    def __init__(self, device=None, interval_s: float = 0.02):
        self.interval_s = interval_s
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

    def _sample(self) -> None:
        self.rss.append(self.proc.memory_info().rss)
        if self._h is None:
            return
        nv, h = self._nv, self._h
        # each read on its own: a device may not support one (NOT_SUPPORTED), and the
        # sampler must outlive that
        mem = _try(lambda: nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2).used)
        if mem is None:
            mem = _try(lambda: nv.nvmlDeviceGetMemoryInfo(h).used)
        for out, v in ((self.gpu_mem, mem), (self.util, _try(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu)),
                       (self.power_w, _try(lambda: mw_to_w(nv.nvmlDeviceGetPowerUsage(h))))):
            if v is not None:
                out.append(v)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> Sampler:
        if self._h is not None:
            self._e0 = self._energy_mj()
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
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

