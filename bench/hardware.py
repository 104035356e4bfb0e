"""What machine and software a result came from: the fingerprint stored in every result.

No torch at import or in `fingerprint()`: the planner needs the GPUs (count, names, memory,
native bf16) before anything is launched, and reads them from NVML and from the installed
torch's own `version.py` (is it a CUDA build?) without importing torch. Only the measured
matmul peak, run inside a rank, uses torch.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
import sys
from typing import Any

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_build() -> dict[str, str | None]:
    """The installed torch's version and CUDA version, read from its `version.py` (the file
    torch itself reads) without importing torch; both None when torch is not installed."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return {"version": None, "cuda": None}
    found: dict[str, Any] = {}
    try:
        with open(os.path.join(spec.submodule_search_locations[0], "version.py")) as f:
            exec(compile(f.read(), "torch/version.py", "exec"), found)  # assignments of literals only
    except OSError:
        return {"version": None, "cuda": None}
    return {"version": found.get("__version__"), "cuda": found.get("cuda")}


def cuda_visible(value: str | None, uuids: list[str]) -> list[int] | None:
    """The NVML indices CUDA will use under CUDA_VISIBLE_DEVICES=`value`, in CUDA's order:
    all when unset; indices or GPU-UUID prefixes, up to the first entry that names no device
    (CUDA stops there). None for what this does not model (MIG instances): ask torch."""
    if value is None:
        return list(range(len(uuids)))
    out: list[int] = []
    for token in (t.strip() for t in value.split(",")):
        if token.startswith("MIG-"):
            return None
        if token.isdigit() and int(token) < len(uuids):
            i = int(token)
        elif token.startswith("GPU-") and sum(u.startswith(token) for u in uuids) == 1:
            i = next(n for n, u in enumerate(uuids) if u.startswith(token))
        else:
            break
        if i in out:
            break
        out.append(i)
    return out


def gpus(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The GPUs this process's torch will see: count, names, memory and compute capability
    (NVML, filtered by CUDA_VISIBLE_DEVICES), the driver; none when torch has no CUDA or the
    driver is older than the build's CUDA major version. Memory is what CUDA can use: NVML's
    total less what the driver reserves (nvmlMemory_v2), as torch's `total_memory` reports it.
    Where NVML cannot tell CUDA's device order (different GPUs on one node under CUDA's
    default fastest-first order, MIG instances) or cannot load with a driver present, torch
    is asked instead (slow: it imports torch). Without a driver the GPU figures are empty
    and `nvml` says why."""
    env = os.environ if env is None else env
    build = torch_build()
    info: dict[str, Any] = {"count": 0, "names": [], "memory_bytes": [], "compute_capability": [],
                            "cuda": build["cuda"], "driver": None, "nvml": None}
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception as e:  # no driver, no library: degrade and say so
        info["nvml"] = f"unavailable: {type(e).__name__}: {e}"
        if build["cuda"] is not None and os.path.exists("/proc/driver/nvidia/version"):
            return _gpus_from_torch(info)  # a driver NVML cannot read: ask torch (slow, rare)
        return info
    try:
        info["driver"] = _text(pynvml.nvmlSystemGetDriverVersion())
        info["nvml"] = "ok"
        if build["cuda"] is None:
            return info  # a CPU build of torch sees no GPU, whatever the machine has
        if pynvml.nvmlSystemGetCudaDriverVersion() // 1000 < int(build["cuda"].split(".")[0]):
            info["nvml"] = f"ok; driver {info['driver']} is older than this torch's CUDA {build['cuda']}"
            return info  # torch cannot use the GPUs
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
        order = cuda_visible(env.get("CUDA_VISIBLE_DEVICES"), uuids)
        if order is None:
            return _gpus_from_torch(info)
        for i in order:
            h = handles[i]
            info["names"].append(_text(pynvml.nvmlDeviceGetName(h)))
            info["memory_bytes"].append(_usable_memory(pynvml, h))
            info["compute_capability"].append(list(pynvml.nvmlDeviceGetCudaComputeCapability(h)))
        kinds = set(zip(info["names"], info["memory_bytes"], map(tuple, info["compute_capability"])))
        if len(kinds) > 1 and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
            info.update(names=[], memory_bytes=[], compute_capability=[])
            return _gpus_from_torch(info)  # NVML's order is the PCI bus's, CUDA's is fastest first
        info["count"] = len(order)
    finally:
        pynvml.nvmlShutdown()
    return info


def _usable_memory(pynvml: Any, handle: Any) -> int:
    try:
        m = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
        return int(m.total - m.reserved)
    except Exception:  # an older driver: no v2 structure
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _gpus_from_torch(info: dict[str, Any]) -> dict[str, Any]:
    import torch
    if torch.cuda.is_available():
        info["count"] = torch.cuda.device_count()
        for i in range(info["count"]):
            p = torch.cuda.get_device_properties(i)
            info["names"].append(p.name)
            info["memory_bytes"].append(p.total_memory)
            info["compute_capability"].append([p.major, p.minor])
    return info


def fingerprint() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=False) or os.cpu_count(),
        "cpu_threads": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_bytes": vm.total,
        "ram_available_bytes": vm.available,
        "os": platform.platform(),
        "gpu": gpus(),
    }


def label(fp: dict[str, Any]) -> str:
    """Short hardware label, e.g. `8xH100-SXM-80GB` or `Xeon-2c-24GB`."""
    g = fp["gpu"]
    if g["count"]:
        name = re.sub(r"^(NVIDIA|AMD)\s+", "", g["names"][0]).replace(" ", "-")
        if re.search(r"\d+GB", name):  # e.g. 'H100 80GB HBM3' names its memory already
            return f"{g['count']}x{name}"
        return f"{g['count']}x{name}-{round(g['memory_bytes'][0] / 2**30)}GB"
    model = fp["cpu_model"]
    fam = next((w for w in ("EPYC", "Xeon", "Ryzen", "Core", "Neoverse", "Apple") if w in model),
               model.split()[0] if model else "CPU")
    return f"{fam}-{fp['cpu_usable']}c-{round(fp['ram_bytes'] / 2**30)}GB"


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def software() -> dict[str, Any]:
    """Versions of what produced a result, read without importing torch: torch's from its
    version file, NCCL's from the wheel torch's CUDA build depends on (a rank that ran
    replaces it with the version it loaded)."""
    import bench
    nccl = None
    if torch_build()["cuda"]:
        for dist in ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11"):
            try:
                nccl = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return {"python": sys.version.split()[0], "torch": torch_build()["version"],
            "hydra": importlib.metadata.version("hydra-core"), "scalebench": bench.__version__,
            "git": git_revision(), "nccl": nccl}


# Dense peak FLOP/s by device and dtype, from the vendors' datasheets (no sparsity), as in
# shared/REFERENCE.md. Keys are matched against the CUDA device name in order, so the more
# specific names come first ("H100 NVL" before "H100", "A100" before "A10"). fp32 is the
# non-tensor-core rate: torch does not use TF32 for fp32 matmuls unless told to.
TFLOPS = 1e12
PEAK_FLOPS: list[tuple[str, dict[str, float], str]] = [
    # (name pattern, {dtype: FLOP/s}, source)
    ("H100 NVL", {"bf16": 835 * TFLOPS, "fp16": 835 * TFLOPS, "tf32": 418 * TFLOPS, "fp32": 60 * TFLOPS},
     "NVIDIA H100 datasheet (NVL column)"),
    ("H100 PCIe", {"bf16": 756 * TFLOPS, "fp16": 756 * TFLOPS, "tf32": 378 * TFLOPS, "fp32": 51 * TFLOPS},
     "NVIDIA H100 datasheet (PCIe column)"),
    ("H100", {"bf16": 989 * TFLOPS, "fp16": 989 * TFLOPS, "tf32": 495 * TFLOPS, "fp32": 67 * TFLOPS},
     "NVIDIA H100 datasheet (SXM column; 'H100 80GB HBM3' is the SXM part)"),
    ("H200", {"bf16": 989 * TFLOPS, "fp16": 989 * TFLOPS, "tf32": 495 * TFLOPS, "fp32": 67 * TFLOPS},
     "NVIDIA H200 datasheet (SXM column)"),
    ("B200", {"bf16": 2250 * TFLOPS, "fp16": 2250 * TFLOPS, "tf32": 1100 * TFLOPS, "fp32": 75 * TFLOPS},
     "NVIDIA DGX B200 / HGX B200 datasheet, per GPU, dense"),
    ("A100", {"bf16": 312 * TFLOPS, "fp16": 312 * TFLOPS, "tf32": 156 * TFLOPS, "fp32": 19.5 * TFLOPS},
     "NVIDIA A100 datasheet (SXM and PCIe share the dense peaks)"),
    ("L40S", {"bf16": 362 * TFLOPS, "fp16": 362 * TFLOPS, "tf32": 183 * TFLOPS, "fp32": 91.6 * TFLOPS},
     "NVIDIA L40S datasheet"),
    ("L40", {}, "the L40 (not L40S): no table entry, measured instead"),
    ("L4", {"bf16": 121 * TFLOPS, "fp16": 121 * TFLOPS, "tf32": 60 * TFLOPS, "fp32": 30.3 * TFLOPS},
     "NVIDIA L4 datasheet"),
    ("A10G", {}, "AWS A10G differs from the A10: no table entry, measured instead"),
    ("A10", {"bf16": 125 * TFLOPS, "fp16": 125 * TFLOPS, "tf32": 62.5 * TFLOPS, "fp32": 31.2 * TFLOPS},
     "NVIDIA A10 datasheet"),
    ("V100", {"fp16": 125 * TFLOPS, "fp32": 15.7 * TFLOPS}, "NVIDIA V100 datasheet (SXM2)"),
    ("T4", {"fp16": 65 * TFLOPS, "fp32": 8.1 * TFLOPS}, "NVIDIA T4 datasheet"),
    ("MI300X", {"bf16": 1307 * TFLOPS, "fp16": 1307 * TFLOPS, "tf32": 654 * TFLOPS, "fp32": 163 * TFLOPS},
     "AMD Instinct MI300X datasheet"),
]


def table_peak(device_name: str, dtype: str) -> tuple[float | None, str]:
    """(peak FLOP/s, source) for a device name from the table; (None, why) when the device
    or the dtype is not in it. Never another device's number."""
    for pattern, peaks, source in PEAK_FLOPS:
        if pattern in device_name:
            if dtype in peaks:
                return peaks[dtype], source
            return None, f"{device_name}: no {dtype} entry ({source})"
    return None, f"{device_name}: not in the peak table"


CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "scalebench", "peaks.json")


def measure_matmul_peak(device, dtype: str, seconds: float = 1.0) -> float:
    """Achievable dense matmul FLOP/s on `device` in `dtype` (fp32 | bf16 | fp16) with the
    threads this process has: square matmuls large enough to be compute-bound (2048 on a
    CPU, 8192 on a GPU), best of a few timed batches after a warm-up."""
    import time

    import torch
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.matmul(a, b)
    sync()
    t0 = time.perf_counter()
    torch.matmul(a, b)
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    reps = max(1, int(seconds / 4 / one))
    best = 0.0
    for _ in range(4):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        sync()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def _cache_key(device, dtype: str) -> str:
    import torch
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return f"{platform.node()}|{name}|{device.type}|{dtype}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def matmul_peak(device, dtype: str, refresh: bool = False, seconds: float = 1.0) -> tuple[float, str]:
    """Measured achievable peak, cached per machine, device, dtype, threads and torch. The
    cache keeps the best measurement ever made: one taken while something else loaded the
    machine reads low, and `refresh` (python -m bench.perf does) replaces it by a better one."""
    import json
    key = _cache_key(device, dtype)
    try:
        with open(CACHE) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if refresh or key not in cache:
        cache[key] = max(cache.get(key, 0.0), measure_matmul_peak(device, dtype, seconds))
        try:
            os.makedirs(os.path.dirname(CACHE), exist_ok=True)
            tmp = f"{CACHE}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(cache, f, indent=1)
            os.replace(tmp, CACHE)
        except OSError:
            pass  # an unwritable cache only costs a re-measurement next time
        return cache[key], f"measured matmul peak ({key.split('|', 1)[1]})"
    return cache[key], f"measured matmul peak, cached ({key.split('|', 1)[1]})"
