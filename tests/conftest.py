"""Shared helpers: compose real configs through Hydra, plan them, and run real (gloo) jobs.

Tests never depend on what else runs on the host: every test session gets its own folder of
core locks (SCALEBENCH_LOCK_DIR, inherited by the commands the tests start), so a real sweep
on the same machine neither blocks a test nor is blocked by one.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench import config, hardware
from bench.config import CONF_DIR, BenchConfig
from bench.plan import Host, make_spec
from bench.protocol import LOCK_DIR_ENV

config.register()
ROOT = os.path.dirname(CONF_DIR)
HOST = Host.from_fingerprint(hardware.fingerprint())  # this machine, as the planner sees it
# a GPU node the planner can plan for anywhere (nothing runs on it): 8 x 80 GB, bf16
GPU_HOST = Host(cores=96, gpus=8, gpu_bf16=True, gpu_memory_bytes=(80 * 2**30,) * 8,
                ram_bytes=2 * 2**40, ram_available_bytes=2 * 2**40)


@pytest.fixture(autouse=True, scope="session")
def own_core_locks(tmp_path_factory):
    os.environ[LOCK_DIR_ENV] = str(tmp_path_factory.mktemp("core-locks"))
    yield
    os.environ.pop(LOCK_DIR_ENV, None)


def compose_cfg(*overrides: str) -> BenchConfig:
    """The typed config a job would get for these overrides (Hydra initialised once per
    session: code that initialises its own, like bench.run's preflight, restores this one)."""
    from hydra.core.global_hydra import GlobalHydra
    if not GlobalHydra.instance().is_initialized():
        initialize_config_dir(config_dir=CONF_DIR, version_base="1.3")  # kept for the session (config.composing)
    return OmegaConf.to_object(compose("config", overrides=list(overrides)))


def plan(*overrides: str, host: Host = HOST):
    """The RunSpec of these overrides on `host` (this machine by default)."""
    return make_spec(compose_cfg(*overrides), host)


def launch_job(spec, out_dir):
    """A real job: the launcher with the worker's entry point."""
    from bench.launch import launch
    from bench.worker import run_rank
    return launch(spec, str(out_dir), run_rank)


def run_cli(*args: str, cwd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m bench.run ...` as a user types it, in a scratch folder."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def fake_set(folder, scale=1.0, sizes=("mini",), runs=1, spread=0.01, seed=0) -> str:
    """A result set without running anything: `runs` ok dp runs per size whose tokens/s are
    4096 / 0.2 s divided by `scale`, each run off by a lognormal factor of `spread` (between-run
    drift), labelled as machine `M<scale>`."""
    import numpy as np

    from bench.results import SCHEMA_VERSION, write_result
    rng = np.random.default_rng(seed)
    for size in sizes:
        for i in range(runs):
            step = 0.2 * scale * float(np.exp(spread * rng.standard_normal()))
            steps = list(step * (1 + 0.01 * rng.standard_normal(10)))
            write_result(str(folder / size), {
                "schema_version": SCHEMA_VERSION, "status": "ok", "error": None, "repeat": i, "repeats": runs,
                "config": {"size": {"name": size}, "strategy": {"name": "dp"}, "devices": 2, "batch_size": 8,
                           "seed": 0},
                "config_hash": "h", "hardware_label": f"M{scale}", "degrees": {"dp": 2, "tp": 1, "pp": 1},
                "metrics": {"tokens_per_s": 4096 / step, "tokens_per_step": 4096,
                            "step_times_s": steps, "step_time_s": float(np.median(steps))}})
    return str(folder)


@pytest.fixture
def cli(tmp_path):
    return lambda *args, **kw: run_cli(*args, cwd=str(tmp_path), **kw)
