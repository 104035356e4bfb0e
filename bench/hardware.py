"""What machine and software a result came from: the fingerprint stored in every result."""
from __future__ import annotations

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


def gpus() -> dict[str, Any]:
    """GPU names and memory as torch sees them; driver from NVML when it loads."""
    import torch
    info: dict[str, Any] = {"count": 0, "names": [], "memory_bytes": [], "cuda": torch.version.cuda,
                            "driver": None, "nvml": None}
    if torch.cuda.is_available():
        info["count"] = torch.cuda.device_count()
        for i in range(info["count"]):
            p = torch.cuda.get_device_properties(i)
            info["names"].append(p.name)
            info["memory_bytes"].append(p.total_memory)
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            d = pynvml.nvmlSystemGetDriverVersion()
            info["driver"] = d.decode() if isinstance(d, bytes) else d
            info["nvml"] = "ok"
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # no driver, no library: degrade and say so
        info["nvml"] = f"unavailable: {type(e).__name__}: {e}"
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
        name = re.sub(r"^NVIDIA\s+", "", g["names"][0]).replace(" ", "-")
        return f"{g['count']}x{name}-{round(g['memory_bytes'][0] / 1e9)}GB"
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
    import hydra
    import torch

    import bench
    return {"python": sys.version.split()[0], "torch": torch.__version__, "hydra": hydra.__version__,
            "scalebench": bench.__version__, "git": git_revision(),
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None}
