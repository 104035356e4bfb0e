"""Validation: every rejected point says which number to change."""
import pytest

from bench.plan import (InvalidConfig, PredictedOOM, check_memory, config_hash, make_spec,
                        predict_memory, stage_layers, usable_cores)
from conftest import compose_cfg


def spec(*o):
    return make_spec(compose_cfg("accelerator=cpu", *o))


def test_defaults_resolve_on_cpu():
    s = spec()
    assert (s.accelerator, s.precision, s.dp, s.tp, s.pp) == ("cpu", "fp32", 1, 1, 1)
    assert s.tokens_per_step == s.batch_size * s.seq_len


def test_degrees_per_strategy():
    assert spec("strategy=dp", "devices=2").dp == 2
    s = spec("strategy=mp", "devices=2")
    assert (s.dp, s.pp, s.schedule, s.microbatches) == (1, 2, "naive", 1)
    assert spec("strategy=mp", "devices=2", "strategy.schedule=gpipe").microbatches == 4


def test_degrees_of_the_new_strategies():
    assert (spec("strategy=tp", "devices=2").tp, spec("strategy=fsdp", "devices=2").dp) == (2, 2)
    h = spec("strategy=hybrid", "devices=4", "strategy.tp=2", "strategy.pp=1", "oversubscribe=true")
    assert (h.dp, h.tp, h.pp, h.schedule) == (2, 2, 1, "")
    h = spec("strategy=hybrid", "devices=4", "strategy.pp=2", "oversubscribe=true")
    assert (h.dp, h.tp, h.pp, h.schedule, h.microbatches) == (2, 1, 2, "1f1b", 4)
    assert h.bubble_ideal == pytest.approx(1 / 5)
    i = spec("strategy=mp", "devices=2", "strategy.schedule=interleaved")
    assert (i.stages_per_rank, i.bubble_ideal) == (2, pytest.approx(1 / 9))
    assert spec("strategy=mp", "devices=2").bubble_ideal == 0.5  # naive: one stage busy at a time
    assert spec("strategy=dp", "devices=2").bubble_ideal is None


def test_global_batch_derives_per_replica_batch():
    s = spec("strategy=dp", "devices=2", "global_batch_size=16", "grad_accum=2")
    assert (s.batch_size, s.global_batch_size) == (4, 16)


@pytest.mark.parametrize("overrides,needle", [
    (["devices=0"], "devices=0: need at least 1"),
    (["strategy=dp", f"devices={usable_cores() + 1}"], f"use devices<={usable_cores()}"),
    (["strategy=single", "devices=2"], "use devices=1 or strategy=dp"),
    (["strategy=mp", "devices=2", "size=tiny", "size.n_layer=1"], "use at most 1 stages"),
    (["strategy=tp", "devices=2", "size.n_head=3", "size.n_embd=96"], "use a tp degree among 1, 3"),
    (["strategy=hybrid", "devices=2", "strategy.tp=2", "strategy.pp=2", "oversubscribe=true"],
     "exactly one of strategy.tp or strategy.pp"),
    (["strategy=hybrid", "devices=3", "strategy.tp=2", "strategy.pp=1", "oversubscribe=true"],
     "use devices that are a multiple of 2"),
    (["strategy=mp", "devices=2", "strategy.schedule=interleaved", "strategy.stages_per_rank=3"],
     "needs 6 layers"),
    (["strategy=mp", "devices=2", "strategy.schedule=interleaved", "strategy.microbatches=3",
      "batch_size=6"], "multiple of the 2 stages"),
    (["strategy=dp", "strategy.sequence_parallel=true"], "needs tensor parallelism"),
    (["strategy=dataparallel", "devices=2"], "use strategy=dp on CPU"),
    (["strategy=dp", "devices=2", "global_batch_size=9"], "use a multiple of 2"),
    (["strategy=mp", "devices=2", "strategy.schedule=gpipe", "batch_size=6"], "multiple of 4"),
    (["seq_len=4096"], "use seq_len<=256"),
    (["precision=fp16"], "use precision=bf16 or fp32"),
    (["batch_size=0"], "batch_size=0: must be at least 1"),
    (["data=text", "data_path=/nonexistent.txt"], "is not a file"),
])
def test_invalid_points_name_the_fix(overrides, needle):
    with pytest.raises(InvalidConfig, match=None) as e:
        spec(*overrides)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_cuda_requested_without_gpu_is_invalid():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InvalidConfig, match="use accelerator=cpu"):
        make_spec(compose_cfg("accelerator=cuda"))


def test_config_hash_covers_benchmark_keys_only():
    a = compose_cfg("size=tiny")
    assert config_hash(a) == config_hash(compose_cfg("size=tiny", "timeout_s=5", "results_root=/x"))
    assert config_hash(a) != config_hash(compose_cfg("size=tiny", "batch_size=4"))
    assert config_hash(a) != config_hash(compose_cfg("size=mini"))


def test_stage_layers_balanced_and_contiguous():
    assert [len(r) for r in stage_layers(12, 5)] == [3, 3, 2, 2, 2]
    assert [r.start for r in stage_layers(12, 5)] == [0, 3, 6, 8, 10]


def test_memory_check_rejects_what_does_not_fit():
    s = spec("size=large", "seq_len=1024", "batch_size=8")
    pred = predict_memory(s)
    assert pred.total_bytes > 12 * 774_000_000  # 16 bytes/param of state alone
    with pytest.raises(PredictedOOM, match="force=true"):
        check_memory(s, pred, available_bytes=8 * 2**30)
    check_memory(spec("size=tiny"), predict_memory(spec("size=tiny")), available_bytes=8 * 2**30)
