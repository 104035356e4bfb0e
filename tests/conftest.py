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


@pytest.fixture
def cli(tmp_path):
    return lambda *args, **kw: run_cli(*args, cwd=str(tmp_path), **kw)
