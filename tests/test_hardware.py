"""bench.hardware without a GPU: CPU identity from /proc/cpuinfo text, labels that tell
machines apart (and are safe as file names, CSV cells and overrides), and the compute
capabilities the planner's bf16 decision rests on, through NVML and through torch."""
import re
import subprocess
import sys
import types

import pytest

from bench import hardware
from bench.plan import Host

SAFE = re.compile(r"^[A-Za-z0-9.+-]+$")

SPR_HIDDEN = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 8
flags\t\t: fpu vme amx_bf16

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 8
"""

GRACE = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd sve2
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd4f
CPU revision\t: 0
"""


def test_cpuinfo_fields_and_signature():
    f = hardware.parse_cpuinfo(SPR_HIDDEN)
    assert f["model name"] == "Intel(R) Xeon(R) Processor" and f["vendor_id"] == "GenuineIntel"
    assert hardware.cpu_signature(f) == "f6m143s8"
    assert hardware.cpu_model(f) == "Intel(R) Xeon(R) Processor"
    arm = hardware.parse_cpuinfo(GRACE)
    assert hardware.cpu_signature(arm) == "i41pd4fv0r0"
    assert hardware.cpu_signature({}) is None


def test_this_machines_fingerprint_keeps_its_keys_and_adds_the_signature():
    fp = hardware.fingerprint()
    assert {"hostname", "cpu_model", "cpu_cores", "cpu_threads", "cpu_usable", "ram_bytes",
            "ram_available_bytes", "os", "gpu", "cpu_signature", "cpu_vendor"} <= set(fp)
    assert SAFE.match(hardware.label(fp))


def _cpu(model, signature=None, cores=2, ram_gib=24):
    return {"gpu": {"count": 0}, "cpu_model": model, "cpu_signature": signature, "cpu_usable": cores,
            "ram_bytes": ram_gib * 2**30}


CPU_LABELS = [
    (_cpu("Intel(R) Xeon(R) Platinum 8480C", "f6m143s8"), "Xeon-8480C-2c-24GB"),
    (_cpu("Intel(R) Xeon(R) Platinum 8480+", "f6m143s8"), "Xeon-8480+-2c-24GB"),
    (_cpu("Intel(R) Xeon(R) Platinum 8592+", "f6m207s2"), "Xeon-8592+-2c-24GB"),
    (_cpu("AMD EPYC 9654 96-Core Processor", "f25m17s1"), "EPYC-9654-2c-24GB"),
    (_cpu("AMD EPYC 7B13", "f25m1s0"), "EPYC-7B13-2c-24GB"),
    (_cpu("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "f6m79s1"), "Xeon-E5-2686-v4-2c-24GB"),
    (_cpu("Intel(R) Xeon(R) CPU E5-2686 v3 @ 2.00GHz", "f6m63s2"), "Xeon-E5-2686-v3-2c-24GB"),
    (_cpu("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", "f6m85s7"), "Xeon-6248R-2c-24GB"),
    # hypervisors that hide the model: the processor's family/model/stepping tells them apart
    (_cpu("Intel(R) Xeon(R) Processor", "f6m143s8"), "Xeon-f6m143s8-2c-24GB"),
    (_cpu("Intel(R) Xeon(R) Processor", "f6m207s2"), "Xeon-f6m207s2-2c-24GB"),
    (_cpu("AMD EPYC Processor (with IBPB)", "f25m17s1"), "EPYC-f25m17s1-2c-24GB"),
    (_cpu("AMD EPYC Processor", "f25m160s2"), "EPYC-f25m160s2-2c-24GB"),
    (_cpu("QEMU Virtual CPU version 2.5+", "f6m6s3"), "QEMU-f6m6s3-2c-24GB"),
    (_cpu("aarch64", "i41pd4fv0r0", 72, 480), "aarch64-i41pd4fv0r0-72c-480GB"),  # Grace
    (_cpu("aarch64", "i41pd0cv3r1", 72, 480), "aarch64-i41pd0cv3r1-72c-480GB"),  # Neoverse N1
    (_cpu("13th Gen Intel(R) Core(TM) i7-1365U", "f6m186s3"), "Core-i7-1365U-2c-24GB"),
    (_cpu("AMD Ryzen Threadripper PRO 5995WX 64-Cores"), "Threadripper-5995WX-2c-24GB"),
    (_cpu("Apple M2 Pro"), "Apple-M2-Pro-2c-24GB"),
    (_cpu("Apple M2 Max"), "Apple-M2-Max-2c-24GB"),
]


@pytest.mark.parametrize("fp, expected", CPU_LABELS)
def test_cpu_labels_carry_the_model(fp, expected):
    assert hardware.label(fp) == expected
    assert SAFE.match(expected)


def test_cpu_labels_never_collide():
    labels = [hardware.label(fp) for fp, _ in CPU_LABELS]
    assert len(set(labels)) == len(labels)


def test_an_old_fingerprint_without_a_signature_still_labels():
    assert hardware.label(_cpu("Intel(R) Xeon(R) Platinum 8480C")) == "Xeon-8480C-2c-24GB"
    assert hardware.label(_cpu("Intel(R) Xeon(R) Processor")) == "Xeon-2c-24GB"


def _gpu(names, gib, cc=(9, 0)):
    return {"gpu": {"count": len(names), "names": list(names), "memory_bytes": [g * 2**30 for g in gib],
                    "compute_capability": [list(cc)] * len(names)}}


GPU_LABELS = [
    (_gpu(["NVIDIA H100 80GB HBM3"] * 8, [79.1] * 8), "8xH100-80GB-HBM3"),
    (_gpu(["NVIDIA H100 PCIe"], [79.6]), "1xH100-PCIe-80GB"),
    (_gpu(["NVIDIA H100 NVL"] * 2, [93.1] * 2), "2xH100-NVL-93GB"),
    (_gpu(["NVIDIA H200"] * 8, [139.8] * 8), "8xH200-140GB"),
    (_gpu(["NVIDIA H200 NVL"] * 8, [139.8] * 8), "8xH200-NVL-140GB"),
    (_gpu(["NVIDIA A100-SXM4-40GB"], [39.4]), "1xA100-SXM4-40GB"),
    (_gpu(["NVIDIA A100-SXM4-80GB"], [79.2]), "1xA100-SXM4-80GB"),
    (_gpu(["NVIDIA A100-PCIE-40GB"], [39.4]), "1xA100-PCIE-40GB"),
    (_gpu(["NVIDIA A100 80GB PCIe"], [79.2]), "1xA100-80GB-PCIe"),
    (_gpu(["NVIDIA GH200 480GB"], [95.0]), "1xGH200-480GB"),
    (_gpu(["Tesla V100-SXM2-16GB"] * 4, [15.8] * 4, (7, 0)), "4xV100-SXM2-16GB"),
    (_gpu(["Tesla T4"], [14.6], (7, 5)), "1xT4-15GB"),
    (_gpu(["AMD Instinct MI250X/MI250"] * 8, [64.0] * 8), "8xMI250X-MI250-64GB"),
    (_gpu(["NVIDIA A100-SXM4-40GB MIG 1g.5gb"], [4.8]), "1xA100-SXM4-40GB-MIG-1g.5gb"),
    (_gpu(["NVIDIA A100-PCIE-40GB", "Tesla T4"], [39.4, 14.6]), "1xA100-PCIE-40GB+1xT4-15GB"),
]


@pytest.mark.parametrize("fp, expected", GPU_LABELS)
def test_gpu_labels_carry_variant_and_memory(fp, expected):
    assert hardware.label(fp) == expected
    assert SAFE.match(expected)


def test_gpu_labels_never_collide():
    labels = [hardware.label(fp) for fp, _ in GPU_LABELS]
    assert len(set(labels)) == len(labels)


def test_a_count_without_per_gpu_detail_still_labels():
    fp = {"gpu": {"count": 8, "names": ["NVIDIA H100 80GB HBM3"], "memory_bytes": [85e9]}}
    assert hardware.label(fp) == "8xH100-80GB-HBM3"


def test_label_needs_no_torch():
    code = ("import sys; from bench import hardware; "
            "print(hardware.label(hardware.fingerprint()), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=hardware.ROOT,
                         timeout=120).stdout.split()
    assert len(out) == 2 and SAFE.match(out[0]) and out[1] == "False", out


# -- compute capability: the planner's `auto` precision picks bf16 only where every GPU
# has native bf16 (capability 8.0 and up); V100 (7.0) and T4 (7.5) only emulate it.

def _fake_nvml(devices, cc_error=False):
    """A pynvml stand-in: devices = [(name, total bytes, (major, minor))]."""
    m = types.ModuleType("pynvml")
    m.NVMLError = type("NVMLError", (Exception,), {})
    m.nvmlMemory_v2 = 2
    m.nvmlInit = m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    m.nvmlSystemGetCudaDriverVersion = lambda: 12040
    m.nvmlDeviceGetCount = lambda: len(devices)
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetUUID = lambda h: f"GPU-{h:08d}"
    m.nvmlDeviceGetName = lambda h: devices[h][0]
    m.nvmlDeviceGetMemoryInfo = lambda h, version=None: types.SimpleNamespace(total=devices[h][1], reserved=0)

    def cc(h):
        if cc_error:
            raise m.NVMLError("Not Supported")
        return devices[h][2]
    m.nvmlDeviceGetCudaComputeCapability = cc
    return m


def _host(g):
    return Host.from_fingerprint({"cpu_usable": 2, "ram_bytes": 2**34, "ram_available_bytes": 2**33, "gpu": g})


@pytest.fixture
def cuda_build(monkeypatch):
    monkeypatch.setattr(hardware, "torch_build", lambda: {"version": "2.5.0", "cuda": "12.4"})


def test_compute_capability_through_nvml(monkeypatch, cuda_build):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([("Tesla V100-SXM2-16GB", 16 * 2**30, (7, 0))] * 2))
    g = hardware.gpus(env={})
    assert g["count"] == 2 and g["compute_capability"] == [[7, 0], [7, 0]]
    assert not _host(g).gpu_bf16  # emulated bf16 is not bf16
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([("NVIDIA A100-SXM4-40GB", 40 * 2**30, (8, 0))] * 8))
    g = hardware.gpus(env={})
    assert g["count"] == 8 and g["compute_capability"] == [[8, 0]] * 8 and _host(g).gpu_bf16


def _fake_torch_cuda(monkeypatch, name, major, minor):
    import torch
    props = types.SimpleNamespace(name=name, total_memory=15 * 2**30, major=major, minor=minor)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)


def test_compute_capability_through_torch(monkeypatch):
    _fake_torch_cuda(monkeypatch, "Tesla T4", 7, 5)
    g = hardware._gpus_from_torch({"count": 0, "names": [], "memory_bytes": [], "compute_capability": []})
    assert g["count"] == 1 and g["names"] == ["Tesla T4"] and g["compute_capability"] == [[7, 5]]
    assert not _host(g).gpu_bf16


def test_an_nvml_query_that_fails_falls_back_to_torch(monkeypatch, cuda_build):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([("Tesla T4", 15 * 2**30, (7, 5))], cc_error=True))
    _fake_torch_cuda(monkeypatch, "Tesla T4", 7, 5)
    g = hardware.gpus(env={})
    assert g["compute_capability"] == [[7, 5]] and "failed" in g["nvml"] and not _host(g).gpu_bf16
