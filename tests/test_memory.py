"""The memory model against the real thing: predicted vs measured peak RSS on CPU.

Measured = the most loaded rank's peak RSS (getrusage) minus its RSS right after the
process group existed (torch, gloo: ~260 MiB here, which the model does not try to
predict). Tolerance: 20% of the measured figure, and never less than 40 MiB. Why: the
runtime term (allocator caches, kernel workspaces, modelled as 128 MiB) was measured here
between about 100 and 150 MiB depending on the code paths a strategy takes, which at
tiny/mini sizes (model tensors of a few MiB) is most of the figure; at small size, where
the derived terms (16 bytes per parameter, Korthikanti activations, three logits-sized
tensors at the loss) dominate, the model lands within about 7% for every strategy (see
the issue note).
"""
import pytest

from bench.plan import predict_memory
from conftest import launch_job, plan

pytestmark = pytest.mark.slow
TOL, FLOOR = 0.20, 40 * 2**20
BASE = ("accelerator=cpu", "precision=fp32", "warmup_steps=1", "steps=1", "oversubscribe=true")


@pytest.mark.parametrize("overrides", [
    ("size=tiny", "strategy=single", "seq_len=256"),
    ("size=mini", "strategy=single", "seq_len=256"),
    ("size=mini", "strategy=dp", "devices=2"),
    ("size=mini", "strategy=mp", "devices=2"),
    ("size=mini", "strategy=mp", "devices=2", "strategy.schedule=gpipe"),
    ("size=mini", "strategy=tp", "devices=2"),
    ("size=mini", "strategy=fsdp", "devices=2"),
    ("size=mini", "strategy=single", "activation_checkpointing=full"),
    ("size=small", "strategy=single", "seq_len=64", "batch_size=2"),
])
def test_predicted_peak_within_tolerance(tmp_path, overrides):
    spec = plan(*BASE, *overrides)
    res = launch_job(spec, tmp_path)
    assert res.status == "ok", res.error
    net = max(r["rss_peak_bytes"] - r["rss_baseline_bytes"] for r in res.metrics["memory_per_rank"])
    predicted = predict_memory(spec).total_bytes
    assert abs(predicted - net) <= max(TOL * net, FLOOR), f"predicted {predicted / 2**20:.0f} MiB, measured {net / 2**20:.0f} MiB"
