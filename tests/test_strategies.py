"""Each strategy against the single-device reference, as real gloo jobs (2 ranks).

Byte-level text (the loss falls, so a wrong gradient shows), same seed, same tokens: dp ranks split the reference batch, pipeline stages split its
layers. fp32 throughout; the tolerance (2e-5 absolute on a loss near 6.2) covers only the
different summation order of all-reduce and of micro-batched gradients.
"""
import pytest
import torch

from bench.launch import launch
from bench.plan import make_spec
from conftest import compose_cfg

pytestmark = pytest.mark.slow
BASE = ("size=mini", "data=text", "accelerator=cpu", "precision=fp32", "seq_len=64", "warmup_steps=0", "steps=3", "lr=1e-3")
TOL = 2e-5


def run(tmp_path, name, *overrides):
    spec = make_spec(compose_cfg(*BASE, *overrides))
    out = tmp_path / name
    out.mkdir()
    res = launch(spec, str(out))
    assert res.status == "ok", res.error
    return res.metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run(tmp_path_factory.mktemp("ref"), "single", "strategy=single", "batch_size=8")


def test_reference_trains(reference):
    assert len(reference["loss"]) == 3 and reference["tokens_per_s"] > 0
    assert reference["loss"][-1] < reference["loss"][0]  # byte text at lr=1e-3: it learns at once
    assert reference["mem_source"].startswith("rss") and reference["mem_peak_bytes"] > 0


@pytest.mark.parametrize("name,overrides", [
    ("dp", ("strategy=dp", "devices=2", "batch_size=4")),
    ("dp_global", ("strategy=dp", "devices=2", "global_batch_size=8")),
    ("mp_naive", ("strategy=mp", "devices=2", "batch_size=8")),
    ("mp_gpipe", ("strategy=mp", "devices=2", "batch_size=8", "strategy.schedule=gpipe")),
    ("single_accum", ("strategy=single", "batch_size=4", "grad_accum=2")),
])
def test_losses_match_single(tmp_path, reference, name, overrides):
    m = run(tmp_path, name, *overrides)
    torch.testing.assert_close(torch.tensor(m["loss"]), torch.tensor(reference["loss"]), atol=TOL, rtol=0)
    assert m["tokens_per_step"] == reference["tokens_per_step"]
    assert len(m["memory_per_rank"]) == (2 if "devices=2" in overrides else 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_dp_runs_on_nccl(tmp_path):
    n = min(2, torch.cuda.device_count())
    spec = make_spec(compose_cfg("size=mini", "accelerator=cuda", "precision=bf16", "strategy=dp",
                                 f"devices={n}", "steps=3"))
    res = launch(spec, str(tmp_path))
    assert res.status == "ok", res.error
    assert res.metrics["mem_source"].startswith("torch") and res.metrics["tokens_per_s"] > 0
