"""Shared helpers: compose real configs through Hydra, and run real (gloo) jobs."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench import config
from bench.run import CONF_DIR

config.register()
ROOT = os.path.dirname(CONF_DIR)


def compose_cfg(*overrides: str) -> dict:
    """The config a job would get for these overrides, as a plain dict."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def run_cli(*args: str, cwd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m bench.run ...` as a user types it, in a scratch folder."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def fake_set(folder, scale=1.0, sizes=("mini",)) -> str:
    """A result set without running anything: ok dp results with seeded step times that are
    `scale` times 0.2 s, labelled as machine `M<scale>`."""
    import numpy as np

    from bench.results import SCHEMA_VERSION, write_result
    rng = np.random.default_rng(0)
    for size in sizes:
        steps = list(0.2 * scale * (1 + 0.01 * rng.standard_normal(10)))
        write_result(str(folder / size), {
            "schema_version": SCHEMA_VERSION, "status": "ok", "error": None,
            "config": {"size": {"name": size}, "strategy": {"name": "dp"}, "devices": 2, "batch_size": 8, "seed": 0},
            "config_hash": "h", "hardware_label": f"M{scale}", "degrees": {"dp": 2, "tp": 1, "pp": 1},
            "metrics": {"tokens_per_s": 4096 / float(np.median(steps)), "tokens_per_step": 4096,
                        "step_times_s": steps, "step_time_s": float(np.median(steps))}})
    return str(folder)


@pytest.fixture
def cli(tmp_path):
    return lambda *args, **kw: run_cli(*args, cwd=str(tmp_path), **kw)
