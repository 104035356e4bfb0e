"""Install scalebench into the current Python environment, choosing the right torch build.

    python -m bench.install           # torch + the package
    python -m bench.install --test    # ... plus the test extra (pytest, pypdf, pyarrow)

Why a script and not only `pip install -e .`: an unpinned `torch` from PyPI is a multi-GB
CUDA build. On a machine without an NVIDIA driver we install the CPU build first; on a GPU
machine, or wherever torch is already importable, the torch that is there is kept. Standard
library only: it runs before anything else is installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys

CPU_TORCH = "torch==2.13.0+cpu"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pip(*args: str) -> int:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or os.path.exists("/proc/driver/nvidia/version")


def ensure_torch() -> None:
    if importlib.util.find_spec("torch") is not None:
        print("torch is already installed: keeping it", flush=True)
        return
    if has_nvidia_gpu():
        print("NVIDIA driver found: installing the default (CUDA) torch build", flush=True)
        if _pip("torch") != 0:
            sys.exit("error: pip could not install torch; install a CUDA build by hand, then rerun")
        return
    print("no NVIDIA driver: installing the CPU build of torch", flush=True)
    # First from the configured indexes/wheel folders (a local CPU wheel, if the machine has
    # one), then from PyTorch's CPU index.
    if _pip(CPU_TORCH) == 0 or _pip(CPU_TORCH, "--extra-index-url", CPU_INDEX) == 0:
        return
    sys.exit(f"error: could not install {CPU_TORCH}; install a CPU torch by hand, then rerun")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.install", description=__doc__.splitlines()[0])
    ap.add_argument("--test", action="store_true", help="also install the test extra")
    args = ap.parse_args(argv)
    ensure_torch()
    target = ROOT + ("[test]" if args.test else "")
    if _pip("-e", target) != 0:
        sys.exit("error: pip could not install scalebench; see pip's message above")


if __name__ == "__main__":
    main()
