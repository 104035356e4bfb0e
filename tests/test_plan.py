"""Planning: every rejected point says which number to change; layouts, hashes, memory verdicts."""
import dataclasses

import pytest

from bench.config import Accelerator, Precision, Schedule
from bench.memory import predict_memory
from bench.plan import (CONFIG_CHECKS, LAYOUT_CHECKS, PLACEMENT_CHECKS, InvalidConfig, PredictedOOM, available_bytes,
                        check_memory, config_hash)
from bench.spec import DataParallel
from conftest import GPU_HOST, HOST, compose_cfg, plan

CPU = ("accelerator=cpu",)


def spec(*o):
    return plan(*CPU, *o)


def test_defaults_resolve_on_cpu():
    s = spec()
    assert (s.accelerator, s.precision) == (Accelerator.cpu, Precision.fp32)
    assert (s.layout.dp, s.layout.tp, s.layout.pp, s.layout.mesh) == (1, 1, 1, None)
    assert s.tokens_per_step == s.batch_size * s.seq_len


def test_auto_resolves_to_the_gpu_and_its_native_bf16():
    s = plan("strategy=fsdp", "devices=8", "size=small", host=GPU_HOST)
    assert (s.accelerator, s.precision, s.procs) == (Accelerator.cuda, Precision.bf16, 8)
    old = dataclasses.replace(GPU_HOST, gpu_bf16=False)  # e.g. V100: bf16 only emulated
    assert plan("strategy=dp", "devices=2", host=old).precision is Precision.fp32


def test_degrees_per_strategy():
    assert spec("strategy=dp", "devices=2").layout.dp == 2
    s = spec("strategy=mp", "devices=2")
    assert (s.layout.dp, s.layout.pp, s.layout.pipeline.schedule, s.layout.pipeline.microbatches) == \
        (1, 2, Schedule.naive, 1)
    assert spec("strategy=mp", "devices=2", "strategy.schedule=gpipe").layout.pipeline.microbatches == 4


def test_layouts_of_every_strategy():
    t = spec("strategy=tp", "devices=2").layout
    assert (t.tp, t.tensor_parallel, t.mesh) == (2, True, (("tp", 2),))
    f = spec("strategy=fsdp", "devices=2").layout
    assert (f.dp, f.data_parallel, f.state_shards, f.mesh) == (2, DataParallel.fsdp, 2, (("dp", 2),))
    assert spec("strategy=dp", "devices=2").layout.state_shards == 1
    h = spec("strategy=hybrid", "devices=4", "strategy.tp=2", "strategy.pp=1", "oversubscribe=true").layout
    assert (h.dp, h.tp, h.pp, h.pipeline, h.mesh) == (2, 2, 1, None, (("dp", 2), ("tp", 2)))
    h = spec("strategy=hybrid", "devices=4", "strategy.pp=2", "oversubscribe=true").layout
    assert (h.dp, h.tp, h.pp, h.pipeline.schedule, h.pipeline.microbatches) == (2, 1, 2, Schedule["1f1b"], 4)
    assert h.mesh == (("dp", 2), ("pp", 2)) and h.bubble_ideal == pytest.approx(1 / 5)
    i = spec("strategy=mp", "devices=2", "strategy.schedule=interleaved").layout
    assert (i.pipeline.stages_per_rank, i.bubble_ideal) == (2, pytest.approx(1 / 9))
    assert spec("strategy=mp", "devices=2").layout.bubble_ideal == 0.5  # naive: one stage busy at a time
    assert spec("strategy=dp", "devices=2").layout.bubble_ideal is None
    d = plan("strategy=dataparallel", "devices=4", host=GPU_HOST)
    assert (d.procs, d.layout.devices_per_process, d.layout.mesh) == (1, 4, None)


def test_global_batch_derives_per_replica_batch():
    s = spec("strategy=dp", "devices=2", "global_batch_size=16", "grad_accum=2")
    assert (s.batch_size, s.global_batch_size) == (4, 16)


@pytest.mark.parametrize("overrides,needle", [
    (["devices=0"], "devices=0: need at least 1"),
    (["strategy=dp", f"devices={HOST.cores + 1}"], f"use devices<={HOST.cores}"),
    (["strategy=single", "devices=2"], "use devices=1 or strategy=dp"),
    (["strategy=mp", "devices=2", "size=tiny", "size.n_layer=1"], "use at most 1 stage"),
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
    (["batch_size=0"], "batch_size=0: need at least 1"),
    (["data=text", "data_path=/nonexistent.txt"], "is not a file"),
    (["size.n_embd=130"], "size.n_embd=130 does not divide by size.n_head=4"),
    (["data=text", "size=mini", "size.vocab_size=128"], "use size.vocab_size>=256"),
    (["strategy=mp", "devices=2", "strategy.schedule=1f1b", "strategy.microbatches=1"],
     "use strategy.microbatches>=2"),
    (["data=text", "seq_len=null", "size.block_size=200000"], "the default text (data_path=null) has about"),
])
def test_invalid_points_name_the_fix(overrides, needle):
    with pytest.raises(InvalidConfig) as e:
        spec(*overrides)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("overrides,needle", [
    (["strategy=dp", "devices=16"], "devices=16 but this node has 8 GPU(s); use devices<=8"),
    (["strategy=single", "devices=2"], "use devices=1 or strategy=dp"),  # its own check comes first
    (["strategy=tp", "devices=2", "precision=fp16"], "fp16 is not supported with tensor parallelism"),
    (["strategy=mp", "devices=2", "precision=fp16"], "fp16 is not supported with pipeline parallelism"),
    (["strategy=dataparallel", "launcher=multinode", "launcher.rdzv_endpoint=h:1"],
     "runs in one process on one node"),
    (["precision=fp16", "loss_head=chunked"],
     "loss_head=chunked does not run in fp16 (unscaled gradients underflow); use precision=bf16 or loss_head=plain"),
])
def test_invalid_gpu_points_name_the_fix(overrides, needle):
    with pytest.raises(InvalidConfig, match=None) as e:
        plan(*overrides, host=GPU_HOST)
    assert needle in str(e.value)


def test_cuda_requested_without_gpu_is_invalid():
    cpu_only = dataclasses.replace(HOST, gpus=0, gpu_memory_bytes=())
    with pytest.raises(InvalidConfig, match="use accelerator=cpu"):
        plan("accelerator=cuda", host=cpu_only)


def test_every_numeric_key_is_refused_out_of_range():
    """The range check walks every int and float key of the typed config, groups included
    (found from the dataclasses: a key added later is covered as it comes)."""
    from bench.config import numeric_keys
    from bench.plan import numbers_in_range
    cfg = compose_cfg(*CPU)
    assert numbers_in_range(cfg) is None
    for k in numeric_keys():
        bad = k.valid.ge - 1 if k.valid.ge is not None else k.valid.gt
        *groups, name = k.name.split(".")
        if groups:  # size.n_embd: a copy of the group with the bad value
            group = dataclasses.replace(getattr(cfg, groups[0]), **{name: bad})
            broken = dataclasses.replace(cfg, **{groups[0]: group})
        else:
            broken = dataclasses.replace(cfg, **{name: bad})
        assert numbers_in_range(broken) == k.refusal(bad) and k.refusal(bad).startswith(f"{k.name}="), k.name


def test_text_rules_come_before_a_rank_reads_the_text(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("x" * 100)
    with pytest.raises(InvalidConfig, match="has 100 bytes, but seq_len=99 needs more than 100 bytes"):
        spec("data=text", f"data_path={short}", "seq_len=99")
    assert spec("data=text", f"data_path={short}", "seq_len=98").seq_len == 98  # 100 bytes > 98 + 1
    assert spec("data=text", "size=tiny").data.value == "text"  # vocab_size=256: every byte a token


def test_the_default_text_is_longer_than_the_planner_assumes():
    from bench.data import stdlib_text
    from bench.plan import DEFAULT_TEXT_MIN_BYTES
    assert len(stdlib_text()) > DEFAULT_TEXT_MIN_BYTES


def test_a_pipeline_with_ddp_is_refused_before_the_ranks():
    from bench.plan import pipeline_with_fsdp_only
    from bench.spec import Layout, Pipeline
    cfg = compose_cfg(*CPU, "strategy=mp", "devices=2")
    lay = Layout(dp=2, tp=1, pp=2, data_parallel=DataParallel.ddp, pipeline=Pipeline(Schedule.naive))
    assert "a pipeline composes with FSDP only, not ddp" in pipeline_with_fsdp_only(cfg, None, lay, 8)
    assert pipeline_with_fsdp_only(cfg, None, dataclasses.replace(lay, data_parallel=DataParallel.fsdp), 8) is None


def test_every_check_is_a_named_function():
    for check in CONFIG_CHECKS + PLACEMENT_CHECKS + LAYOUT_CHECKS:
        assert check.__name__ != "<lambda>"
    assert len({c.__name__ for c in CONFIG_CHECKS + PLACEMENT_CHECKS + LAYOUT_CHECKS}) == \
        len(CONFIG_CHECKS + PLACEMENT_CHECKS + LAYOUT_CHECKS)


def test_config_hash_covers_benchmark_keys_only():
    a = compose_cfg("size=tiny")
    assert config_hash(a) == config_hash(compose_cfg("size=tiny", "timeout_s=5", "results_root=/x"))
    assert config_hash(a) != config_hash(compose_cfg("size=tiny", "batch_size=4"))
    assert config_hash(a) != config_hash(compose_cfg("size=tiny", "launcher=multinode", "launcher.rdzv_endpoint=h:1"))
    assert config_hash(a) != config_hash(compose_cfg("size=mini"))


def test_multinode_gets_a_rendezvous_per_point():
    s = spec("strategy=dp", "launcher=multinode", "launcher.rdzv_endpoint=127.0.0.1:29500")
    t = spec("strategy=dp", "launcher=multinode", "launcher.rdzv_endpoint=127.0.0.1:29500", "seed=1")
    assert (s.devices, s.devices_per_node, s.procs, s.nodes, s.layout.dp) == (2, 1, 1, 2, 2)
    assert s.rendezvous.backend == "c10d" and s.rendezvous.run_id.startswith("scalebench-")
    assert s.rendezvous.run_id != t.rendezvous.run_id
    assert spec("strategy=dp").rendezvous.backend == "local"


def test_memory_check_rejects_what_does_not_fit():
    s = spec("size=large", "seq_len=1024", "batch_size=8")
    pred = predict_memory(s)
    assert pred.total_bytes > 12 * 774_000_000  # 16 bytes/param of state alone
    with pytest.raises(PredictedOOM, match="force=true"):
        check_memory(s, pred, available=8 * 2**30)
    check_memory(spec("size=tiny"), predict_memory(spec("size=tiny")), available=8 * 2**30)


def test_memory_prediction_follows_the_layout():
    one = predict_memory(spec("size=small", "strategy=dp", "devices=1", "seq_len=64"))
    sharded = predict_memory(spec("size=small", "strategy=fsdp", "devices=2", "seq_len=64"))
    assert sharded.params_bytes == one.params_bytes // 2  # FSDP: state over dp
    staged = predict_memory(spec("size=small", "strategy=mp", "devices=2", "seq_len=64"))
    assert staged.params_bytes < one.params_bytes  # the larger stage holds about half the blocks
    dpar = predict_memory(plan("size=small", "strategy=dataparallel", "devices=4", "precision=fp32", host=GPU_HOST))
    single = predict_memory(plan("size=small", "strategy=single", "precision=fp32", host=GPU_HOST))
    assert dpar.activations_bytes == 4 * single.activations_bytes  # one process, four replicas' batches


def test_available_memory_is_the_smallest_gpu_or_the_free_ram():
    gpus = dataclasses.replace(GPU_HOST, gpu_memory_bytes=(80, 40) + (80,) * 6)
    assert available_bytes(plan("strategy=dp", "devices=2", host=gpus), gpus) == 40
    assert available_bytes(spec("strategy=dp"), HOST) == HOST.ram_available_bytes
    multi = spec("strategy=dp", "launcher=multinode", "launcher.rdzv_endpoint=h:1")
    assert available_bytes(multi, HOST) == HOST.ram_bytes  # every node judges alike
