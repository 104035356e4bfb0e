"""Telemetry logic that runs without a GPU; the NVML path itself is tested where one exists."""
import time

import pytest
import torch

from bench import hardware
from bench.telemetry import Sampler, mj_to_j, mw_to_w, nvml_uuid


def test_uuid_mapping_and_units():
    assert nvml_uuid("58a1c2d0-1111-2222-3333-444455556666") == "GPU-58a1c2d0-1111-2222-3333-444455556666"
    assert nvml_uuid("GPU-58a1") == "GPU-58a1" and nvml_uuid("MIG-1a2b") == "MIG-1a2b"
    assert mw_to_w(350_000) == 350.0 and mj_to_j(1_500) == 1.5


def test_cpu_sampler_sees_memory_grow():
    s = Sampler(torch.device("cpu"), interval_s=0.005).start()
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    time.sleep(0.05)
    s.stop()
    out = s.summary()
    del big
    assert out["samples"] >= 3 and out["nvml"] == "not a GPU run"
    assert out["rss_window_peak_bytes"] >= s.rss[0] + 60 * 2**20
    assert out["energy_j"] is None and out["nvml_used_peak_bytes"] is None


def test_peak_table_never_borrows_another_devices_number():
    assert hardware.table_peak("NVIDIA H100 80GB HBM3", "bf16")[0] == 989e12
    assert hardware.table_peak("NVIDIA H100 PCIe", "bf16")[0] == 756e12
    assert hardware.table_peak("NVIDIA H100 NVL", "fp32")[0] == 60e12
    assert hardware.table_peak("NVIDIA H200", "bf16")[0] == 989e12
    assert hardware.table_peak("NVIDIA A100-SXM4-80GB", "fp32")[0] == 19.5e12
    for unknown in ("NVIDIA A10G", "NVIDIA GeForce RTX 4090", "AMD EPYC 7B13"):
        peak, why = hardware.table_peak(unknown, "bf16")
        assert peak is None and why
    assert hardware.table_peak("Tesla T4", "bf16")[0] is None  # no bf16 on a T4
    assert hardware.table_peak("NVIDIA L40S", "bf16")[0] == 362e12
    assert hardware.table_peak("NVIDIA L40", "bf16")[0] == pytest.approx(181.05e12)


def test_measured_matmul_peak_is_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "CACHE", str(tmp_path / "peaks.json"))
    calls, measured = [], [1e11, 0.5e11, 2e11]  # what three measurements would read
    monkeypatch.setattr(hardware, "measure_matmul_peak", lambda d, t, s=1.0: calls.append(t) or measured.pop(0))
    assert hardware.matmul_peak(torch.device("cpu"), "fp32")[0] == 1e11
    peak, src = hardware.matmul_peak(torch.device("cpu"), "fp32")
    assert peak == 1e11 and "cached" in src and calls == ["fp32"]
    # a refresh on a busy machine reads low: the cache keeps the best measurement
    assert hardware.matmul_peak(torch.device("cpu"), "fp32", refresh=True)[0] == 1e11
    assert hardware.matmul_peak(torch.device("cpu"), "fp32", refresh=True)[0] == 2e11


def test_real_matmul_peak_is_plausible():
    flops = hardware.measure_matmul_peak(torch.device("cpu"), "fp32", seconds=0.2)
    assert 1e9 < flops < 1e14


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvml_sampler_on_a_gpu():
    dev = torch.device("cuda", 0)
    s = Sampler(dev, interval_s=0.01).start()
    a = torch.randn(8192, 8192, device=dev)
    for _ in range(20):
        a = a @ a.T / 8192
    torch.cuda.synchronize()
    s.stop()
    out = s.summary()
    assert out["nvml"] == "ok" and out["nvml_used_peak_bytes"] > 8192 * 8192 * 4
    assert 0 <= out["gpu_util_mean"] <= 1 and out["power_mean_w"] > 0


def test_hardware_labels():
    gpu = {"count": 8, "names": ["NVIDIA H100 80GB HBM3"], "memory_bytes": [85e9]}
    assert hardware.label({"gpu": gpu}) == "8xH100-80GB-HBM3"
    assert hardware.label({"gpu": {"count": 1, "names": ["NVIDIA H200"], "memory_bytes": [150e9]}}) == "1xH200-140GB"
    cpu = {"gpu": {"count": 0}, "cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "cpu_usable": 2, "ram_bytes": 24 * 2**30}
    assert hardware.label(cpu) == "Xeon-8480+-2c-24GB"


def test_cuda_visible_devices_as_cuda_reads_them():
    uuids = ["GPU-aaa111", "GPU-bbb222", "GPU-ccc333"]
    assert hardware.cuda_visible(None, uuids) == [0, 1, 2]
    assert hardware.cuda_visible("", uuids) == []
    assert hardware.cuda_visible("2,0", uuids) == [2, 0]
    assert hardware.cuda_visible("1,7,0", uuids) == [1]  # CUDA stops at the first entry that names no device
    assert hardware.cuda_visible("-1", uuids) == []
    assert hardware.cuda_visible("GPU-bbb,0", uuids) == [1, 0]  # a unique UUID prefix
    assert hardware.cuda_visible("1,1", uuids) == [1]
    assert hardware.cuda_visible("MIG-1234", uuids) is None  # not modelled: torch is asked


def test_gpus_are_read_without_importing_torch():
    import subprocess
    import sys
    code = ("import sys; from bench import hardware; g = hardware.gpus(); "
            "print(g['count'], g['cuda'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=hardware.ROOT).stdout.split()
    import torch
    assert out == [str(torch.cuda.device_count() if torch.cuda.is_available() else 0), str(torch.version.cuda),
                   "False"]


def test_torch_build_is_the_installed_one():
    import torch
    assert hardware.torch_build() == {"version": torch.__version__, "cuda": torch.version.cuda}


def test_peak_meter_gives_each_phase_its_own_peak():
    from bench.telemetry import PeakMeter
    meter = PeakMeter(torch.device("cpu"))
    if meter.scope != "phase":
        pytest.skip("this kernel does not allow resetting VmHWM (/proc/self/clear_refs)")
    big = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched
    del big
    build = meter.end("build")
    small = torch.ones(16 * 2**20 // 4)
    window = meter.end("window")
    del small
    assert build["rss_peak_bytes"] >= window["rss_peak_bytes"] + 200 * 2**20  # the build's peak stayed behind
    assert set(meter.phases) == {"build", "window"}


def test_a_spawned_process_reports_its_own_peak_not_its_parents(tmp_path):
    """A rank started by a launcher that once held far more memory reports its own high-water mark
    (getrusage's ru_maxrss would report the parent's: Linux copies it into the child at fork)."""
    import subprocess
    import sys
    code = ("import os, subprocess, sys\n"
            "big = bytearray(600 * 2**20); big[::4096] = b'x' * len(big[::4096]); del big\n"
            "child = 'from bench.telemetry import peak_rss_bytes; print(peak_rss_bytes())'\n"
            "out = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True, check=True)\n"
            "print(out.stdout.strip())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(tmp_path), env={**__import__("os").environ, "PYTHONPATH": hardware.ROOT})
    child_peak = int(out.stdout.strip())
    assert child_peak < 300 * 2**20, f"the child reported {child_peak / 2**20:.0f} MiB"
