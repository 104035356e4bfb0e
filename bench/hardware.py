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

from bench import peaks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's `key: value` fields of /proc/cpuinfo (Linux); {} elsewhere."""
    try:
        with open(path) as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return {}


def parse_cpuinfo(text: str) -> dict[str, str]:
    """`key: value` fields of the first block (the first processor) of /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the next processor's block: one model for all of them
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(fields: dict[str, str] | None = None) -> str:
    """The CPU's marketing name, e.g. 'Intel(R) Xeon(R) Platinum 8480C'. A hypervisor may
    hide it ('Intel(R) Xeon(R) Processor'); ARM Linux prints none (then the machine, e.g.
    'aarch64'): `cpu_signature` tells those apart."""
    fields = cpuinfo() if fields is None else fields
    if fields.get("model name"):
        return fields["model name"]
    if sys.platform == "darwin":  # no /proc there: the name ('Apple M2 Pro') is a sysctl
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=5).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def cpu_signature(fields: dict[str, str] | None = None) -> str | None:
    """The CPU's identity as the processor itself reports it, which a hypervisor that hides
    the name passes through: x86 'f{cpu family}m{model}s{stepping}' in /proc/cpuinfo's
    decimal (e.g. 'f6m143s8', a Sapphire Rapids Xeon), ARM 'i{implementer}p{part}v{variant}
    r{revision}' in hex (e.g. 'i41pd4fv0r0', a Neoverse V2); None where /proc/cpuinfo has
    neither (macOS, Windows)."""
    fields = cpuinfo() if fields is None else fields
    if all(k in fields for k in ("cpu family", "model", "stepping")):
        return f"f{fields['cpu family']}m{fields['model']}s{fields['stepping']}"
    if fields.get("CPU implementer") and fields.get("CPU part"):
        hexes = [(fields.get(f"CPU {k}") or "0").lower().removeprefix("0x")
                 for k in ("implementer", "part", "variant", "revision")]
        return "i{}p{}v{}r{}".format(*hexes)
    return None


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
        try:
            for i in order:
                h = handles[i]
                info["names"].append(_text(pynvml.nvmlDeviceGetName(h)))
                info["memory_bytes"].append(_usable_memory(pynvml, h))
                info["compute_capability"].append(list(pynvml.nvmlDeviceGetCudaComputeCapability(h)))
        except pynvml.NVMLError as e:  # a query this driver lacks: the planner's bf16 needs every capability
            info.update(names=[], memory_bytes=[], compute_capability=[], nvml=f"ok; per-GPU query failed ({e})")
            return _gpus_from_torch(info)
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
    fields = cpuinfo()
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(fields),
        "cpu_signature": cpu_signature(fields),  # tells apart CPUs whose name a hypervisor hides
        "cpu_vendor": fields.get("vendor_id") or fields.get("CPU implementer"),
        "cpu_cores": psutil.cpu_count(logical=False) or os.cpu_count(),
        "cpu_threads": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_bytes": vm.total,
        "ram_available_bytes": vm.available,
        "os": platform.platform(),
        "gpu": gpus(),
    }


# Label characters: safe in a file name, a CSV cell and a Hydra override value.
_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")
# CPU product families, in the order a name is searched for them ('AMD Ryzen Threadripper
# PRO 5995WX' is a Threadripper).
CPU_FAMILIES = ("EPYC", "Xeon", "Threadripper", "Ryzen", "Opteron", "Core", "Celeron", "Pentium", "Atom",
                "Apple", "Neoverse", "Graviton")
# words of a CPU name that never tell two models apart (the tier is implied by the number)
_CPU_NOISE = {"intel", "amd", "genuine", "cpu", "processor", "platinum", "gold", "silver", "bronze"}


def _safe(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-")


def cpu_label(model: str, signature: str | None) -> str:
    """The CPU part of a label: family and model number, e.g. 'Intel(R) Xeon(R) Platinum
    8480C' -> 'Xeon-8480C', 'AMD EPYC 9654 96-Core Processor' -> 'EPYC-9654'. Where the
    name has no model number (a hypervisor's 'Intel(R) Xeon(R) Processor', ARM Linux's
    'aarch64'), the signature stands in for it: 'Xeon-f6m143s8'."""
    s = re.sub(r"\([^)]*\)", " ", model)  # (R), (TM), '(with IBPB)'
    s = re.sub(r"@.*$", " ", s)  # the clock, '@ 2.30GHz'
    s = re.sub(r"\b\d+(st|nd|rd|th) Gen\b|\b\d+-Cores?\b|\bversion\s+\S+|\bwith\b.*$", " ", s, flags=re.I)
    words = [w for w in (_safe(w) for w in s.split()) if w and w.lower() not in _CPU_NOISE]
    fam = next((f for f in CPU_FAMILIES for w in words if w.lower() == f.lower()), None)
    fam = fam or (words[0] if words else "CPU")
    rest = [w for w in words if w.lower() != fam.lower()]
    # the model: the words with a digit ('8480C', 'E5-2686', 'v4'); Apple's tier is a word
    model_words = rest if fam == "Apple" else [w for w in rest if re.search(r"\d", w)]
    if not model_words and signature:
        model_words = [_safe(signature)]
    return "-".join([fam, *model_words])


def gpu_name_label(name: str, memory_bytes: float) -> str:
    """One GPU kind's part of a label: its name without the vendor word, with its memory
    (GiB CUDA can use) unless the name gives it: 'NVIDIA H200 NVL' -> 'H200-NVL-140GB',
    'NVIDIA H100 80GB HBM3' -> 'H100-80GB-HBM3', 'NVIDIA A100-SXM4-40GB' -> 'A100-SXM4-40GB'."""
    name = re.sub(r"^((NVIDIA|AMD|Tesla|Instinct)\s+)+", "", name.strip())
    if re.search(r"\d+ ?GB|\d+G\b", name):
        return _safe(name)
    return f"{_safe(name)}-{round(memory_bytes / 2**30)}GB"


def label(fp: dict[str, Any]) -> str:
    """Short hardware label that tells machines apart, safe in a file name, a CSV cell and
    a Hydra override: GPUs by count, name with its variant, and memory (`8xH100-80GB-HBM3`,
    `8xH200-NVL-140GB`, `1xA100-SXM4-40GB`; mixed GPUs joined by '+'); CPUs by family and
    model number, cores usable and GiB of RAM (`Xeon-8480C-2c-24GB`), with the processor's
    family/model/stepping where a hypervisor hides the model (`Xeon-f6m143s8-2c-24GB`)."""
    g = fp["gpu"]
    if g["count"]:
        names, mem = g["names"], g["memory_bytes"]
        if len(names) != g["count"] or len(mem) != g["count"]:  # a count without per-GPU detail
            names, mem = names[:1] * g["count"], mem[:1] * g["count"]
        kinds: dict[str, int] = {}  # in CUDA's device order
        for name, m in zip(names, mem):
            part = gpu_name_label(name, m)
            kinds[part] = kinds.get(part, 0) + 1
        return "+".join(f"{n}x{part}" for part, n in kinds.items())
    cpu = cpu_label(fp["cpu_model"], fp.get("cpu_signature"))
    return f"{cpu}-{fp['cpu_usable']}c-{round(fp['ram_bytes'] / 2**30)}GB"


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


# The datasheet peaks live in bench.peaks (torch-free, matched on the full device name);
# re-exported here for the callers that ask hardware (bench.worker, bench.perf).
PEAK_FLOPS = peaks.TABLE
TFLOPS = peaks.TFLOPS
table_peak = peaks.table_peak


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
