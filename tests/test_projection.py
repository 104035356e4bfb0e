"""The interconnect probe's arithmetic, the communication volumes, the projection model, the
cost arithmetic and the published table reproduced on paper (pure functions, hand-checked)."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest

from bench import comm, probe, project, published
from bench.comm import Shape
from bench.links import Cluster, Link, hops, monotone
from bench.project import Terms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- busbw (nccl-tests)

def test_bus_factors_follow_nccl_tests():
    assert probe.bus_factor("all_reduce", 4) == pytest.approx(1.5)  # 2(n-1)/n
    assert probe.bus_factor("all_gather", 4) == pytest.approx(0.75)  # (n-1)/n
    assert probe.bus_factor("reduce_scatter", 8) == pytest.approx(7 / 8)
    assert probe.bus_factor("sendrecv", 2) == 1.0
    # 1 GB all-reduced over 4 ranks in 0.5 s: algbw 2 GB/s, busbw 3 GB/s
    assert probe.algbw(1e9, 0.5) == pytest.approx(2e9)
    assert probe.busbw("all_reduce", 1e9, 0.5, 4) == pytest.approx(3e9)
    with pytest.raises(ValueError, match="unknown collective"):
        probe.bus_factor("alltoall", 2)


def test_message_sizes_and_iterations():
    sizes = probe.message_sizes(1024, 256 * 2**20)
    assert sizes[0] == 1024 and sizes[-1] == 2**28 and len(sizes) == 19
    assert probe.message_sizes(1000, 5000) == [1024, 2048, 4096]  # min rounded up, max down
    assert probe.iters_for(1024) == probe.MAX_ITERS and probe.iters_for(2**28) == probe.MIN_ITERS
    assert probe.iters_for(2**22) == 16  # 64 MiB of timed traffic


def test_alpha_beta_fit_recovers_known_values():
    alpha, beta = 50e-6, 2e9
    x = [2.0 ** k for k in range(10, 29)]
    f = probe.fit_alpha_beta(x, [alpha + s / beta for s in x])
    assert f.alpha_s == pytest.approx(alpha, rel=1e-6) and f.beta_bytes_per_s == pytest.approx(beta, rel=1e-6)
    assert f.rel_rms < 1e-9 and f.points == 19
    rng = random.Random(0)  # 5% multiplicative noise: still within a few standard errors
    noisy = probe.fit_alpha_beta(x, [(alpha + s / beta) * (1 + rng.uniform(-0.05, 0.05)) for s in x])
    assert abs(noisy.alpha_s - alpha) < 4 * noisy.alpha_se_s + 1e-6
    assert abs(noisy.beta_bytes_per_s / beta - 1) < 0.05
    assert 0.01 < noisy.rel_rms < 0.05
    with pytest.raises(ValueError, match="two distinct"):
        probe.fit_alpha_beta([1024], [1e-3])
    # a table without a trend (a few small sizes, noise) keeps its rows and says why there is no fit
    flat = [{"scope": "world", "op": "sendrecv", "ranks": 2, "size_bytes": 1024 * k, "time_s": 1e-3 / k,
             "bus_factor": 1.0} for k in (1, 2, 4)]
    assert "no bandwidth" in probe.fit_rows(flat)["world/sendrecv"]["error"]
    assert "no fit" in "\n".join(probe.table_lines([{**r, "algbw_bytes_per_s": 1, "busbw_bytes_per_s": 1} for r in flat],
                                                   probe.fit_rows(flat)))


# ---------------------------------------------------------------- communication volumes

S = Shape(L=2, H=8, V=16, T_max=4, seq=4, micro_batch=2)
BLOCK = 12 * 8 * 8 + 13 * 8  # 872
ROOT_P = 16 * 8 + 4 * 8 + 2 * 8  # 176


def _one(comms, op, group):
    (c,) = [c for c in comms if c.op == op and c.group == group]
    return c


def test_ddp_all_reduces_fp32_gradients_once():
    c = _one(comm.step_comms(S, dp=2, tp=1, pp=1, data_parallel="ddp"), "all_reduce", "data")
    assert c.size_bytes * c.count == 4 * (2 * BLOCK + ROOT_P) and c.count == 1 and c.overlappable


def test_ddp_buckets_of_25_mib():
    big = Shape(L=2, H=1024, V=50304, T_max=1024, seq=8, micro_batch=1)
    c = _one(comm.step_comms(big, dp=2, tp=1, pp=1, data_parallel="ddp"), "all_reduce", "data")
    total = 4 * (2 * (12 * 1024**2 + 13 * 1024) + 50304 * 1024 + 1024 * 1024 + 2 * 1024)
    assert c.count == math.ceil(total / (25 * 2**20)) and c.size_bytes * c.count == pytest.approx(total)


def test_tensor_parallel_all_reduces_activations_twice_each_way():
    act = 2 * 4 * 8 * 4  # micro_batch x seq x H x fp32
    c = _one(comm.step_comms(S, dp=1, tp=2, pp=1, data_parallel=None), "all_reduce", "tensor")
    # per block: 2 forward; backward one per column-parallel input, Q, K, V and fc: 4 (2 layers)
    assert (c.size_bytes, c.count, c.overlappable) == (act, 2 * 2 + 4 * 2, False)
    ck = _one(comm.step_comms(S, 1, 2, 1, None, checkpointing=True), "all_reduce", "tensor")
    assert ck.count == 2 * 2 * 2 + 4 * 2  # the recomputed forward repeats its two
    fused = [c for c in comm.step_comms(S, 1, 2, 1, None, megatron=True) if "block activations" in c.what]
    assert [c.count for c in fused] == [2 * 2 + 2 * 2]  # Megatron's fused QKV: two backward
    sp = comm.step_comms(S, 1, 2, 1, None, sequence_parallel=True, compute_bytes=2)
    assert {(c.op, c.size_bytes, c.count) for c in sp} == {("all_gather", act // 2, 8), ("reduce_scatter", act // 2, 8)}


def test_vocab_parallel_adds_the_embedding_and_head_all_reduces_and_the_loss_statistics():
    act = 2 * 4 * 8  # micro_batch x seq x H elements; 8 tokens per micro-batch
    plain = comm.step_comms(S, 1, 2, 1, None, compute_bytes=2)
    vp = comm.step_comms(S, 1, 2, 1, None, compute_bytes=2, vocab_parallel=True)
    new = [c for c in vp if c not in plain]
    ends = [c for c in new if "statistics" not in c.what]
    stats = [c for c in new if "statistics" in c.what]
    # the embedding's rows summed (forward) and the output layer's input gradient's parts: fp32 (never
    # cast), once each per micro-batch
    assert [(c.op, c.size_bytes, c.count, c.blocking) for c in ends] == [("all_reduce", act * 4, 1, True)] * 2
    # under FSDP's mixed precision the embedding is 2-byte; the gradient bench/loss.py sums stays fp32
    hyb = [c for c in comm.step_comms(S, 2, 2, 1, "fsdp", compute_bytes=2, vocab_parallel=True) if "vocab" in c.what]
    assert [c.size_bytes for c in hyb] == [act * 2, act * 4, 1.5 * 8 * 4]
    # and FSDP gathers the root with the tied matrix's vocabulary slice only (16 x 8 -> 8 x 8 rows x H)
    root = lambda v: _one([c for c in comm.step_comms(S, 2, 2, 1, "fsdp", vocab_parallel=v) if "root" in c.what],  # noqa: E731
                          "all_gather", "data")
    assert root(False).size_bytes - root(True).size_bytes == 8 * 8 * 4
    # one chunk of 8 tokens: the maxima (8 fp32) and exp-sums with target logits (16 fp32): 1.5 x 32 bytes avg
    assert [(c.size_bytes, c.count) for c in stats] == [(1.5 * 8 * 4, 2)]
    chunked = [c for c in comm.step_comms(S, 1, 2, 1, None, vocab_parallel=True, loss_chunks=2) if "statistics" in c.what]
    assert [(c.size_bytes, c.count) for c in chunked] == [(1.5 * 4 * 4, 4)]  # 2 chunks of 4 tokens
    # DDP's gradient shrinks by the vocabulary split of the tied matrix (16 x 8 -> 8 x 8 per rank)
    ddp = lambda v: _one(comm.step_comms(S, 2, 2, 1, "ddp", vocab_parallel=v), "all_reduce", "data")  # noqa: E731
    assert ddp(False).bytes_per_step - ddp(True).bytes_per_step == 4 * 8 * 8
    # Megatron's: compute-dtype activations, three statistics over all 8 tokens
    meg = [c for c in comm.step_comms(S, 1, 2, 1, None, compute_bytes=2, megatron=True) if c not in plain]
    assert sorted((c.size_bytes, c.count) for c in meg if "block" not in c.what) == [(8 * 4, 3), (act * 2, 1), (act * 2, 1)]


def test_pipeline_sends_per_micro_batch_and_the_tied_gradient():
    s = Shape(L=2, H=8, V=16, T_max=4, seq=4, micro_batch=2, microbatches=3)
    comms = comm.step_comms(s, dp=1, tp=1, pp=2, data_parallel=None, stage=1)
    send = _one(comms, "sendrecv", "pipeline")
    assert (send.size_bytes, send.count) == (2 * 4 * 8 * 4, 2 * 3)
    assert _one(comms, "all_reduce", "tie").size_bytes == 16 * 8 * 4
    sharded = comm.step_comms(s, dp=2, tp=1, pp=2, data_parallel="fsdp", stage=0)
    assert _one(sharded, "all_reduce", "tie").size_bytes == 16 * 8 * 4 / 2  # its FSDP shard
    v2 = comm.step_comms(Shape(2, 8, 16, 4, 4, 2, microbatches=3, chunks=2), 1, 1, 2, None, stage=1)
    assert _one(v2, "sendrecv", "pipeline").count == 2 * 3 * 2  # each chunk crossing


def test_fsdp_gathers_and_reduce_scatters():
    comms = comm.step_comms(S, dp=2, tp=1, pp=1, data_parallel="fsdp", reshard_after_forward=True)
    gathers = sorted((c.size_bytes, c.count) for c in comms if c.op == "all_gather")
    assert gathers == [(ROOT_P * 4, 1), (BLOCK * 4, 2 * 2)]  # blocks forward and backward, root once
    scatters = sorted((c.size_bytes, c.count) for c in comms if c.op == "reduce_scatter")
    assert scatters == [(ROOT_P * 4, 1), (BLOCK * 4, 2)]
    kept = comm.step_comms(S, 2, 1, 1, "fsdp", reshard_after_forward=False, compute_bytes=2)
    assert sorted((c.size_bytes, c.count) for c in kept if c.op == "all_gather") == [(ROOT_P * 2, 1), (BLOCK * 2, 2)]


# ---------------------------------------------------------------- links

def test_monotone_takes_the_lower_envelope():
    assert monotone([5, 1, 2, 9, 3, 4]) == [1, 1, 2, 3, 3, 4]
    assert hops("all_reduce", 4) == 6 and hops("all_gather", 4) == 3 and hops("sendrecv", 8) == 1


def test_profile_link_is_alpha_beta_in_bus_terms():
    link = Link("l", "test", alpha_s=0.0, beta_bytes_per_s=1e9)
    assert link.time_s("all_reduce", 1e9, 2) == pytest.approx(1.0)  # bus bytes 2(n-1)/n x S = S
    assert link.time_s("all_reduce", 1e9, 4) == pytest.approx(1.5)
    assert link.time_s("all_gather", 1e9, 1) == 0.0


def _probe_record(alpha=1e-4, beta=1e9, n=2):
    rows = [{"scope": "world", "op": op, "ranks": n, "size_bytes": 2 ** k,
             "time_s": alpha + 2 ** k * probe.bus_factor(op, n) / beta, "bus_factor": probe.bus_factor(op, n)}
            for op in probe.OPS for k in range(10, 25)]
    return {"metrics": {"probe": {"rows": rows}}, "hardware_label": "test", "path": "x"}


def test_probe_link_reads_its_curve_and_scales_to_more_ranks():
    link = Link.from_probe(_probe_record())
    assert link.time_s("all_reduce", 2**20, 2) == pytest.approx(1e-4 + 2**20 / 1e9, rel=1e-6)
    between = link.time_s("sendrecv", 3 * 2**19, 2)  # log-log interpolation between measured sizes
    assert 1e-4 + 2**20 / 1e9 < between < 1e-4 + 2**21 / 1e9
    # 4 ranks: the same bus bytes cost the same, plus four more hops at the fitted alpha per hop
    four = link.time_s("all_reduce", 2**20, 4)
    assert four == pytest.approx(1e-4 + 2**20 * 1.5 / 1e9 + 4 * 1e-4 / 2, rel=1e-2)  # log-log between sizes
    beyond = link.time_s("all_reduce", 2**26, 2)  # past the largest size: linear at the top bandwidth
    assert beyond == pytest.approx(1e-4 + 2**26 / 1e9, rel=1e-3)


def test_a_group_crosses_nodes_when_it_does_not_fit_in_one():
    a, b = Link("intra", "t", beta_bytes_per_s=1e11), Link("inter", "t", beta_bytes_per_s=1e10)
    c = Cluster(8, a, b, "t")
    assert c.link_for(stride=1, ranks=8) == (a, 1) and c.link_for(2, 4) == (a, 1)
    assert c.link_for(stride=8, ranks=4) == (b, 1)  # one member per node: one NIC each
    assert c.link_for(stride=1, ranks=32) == (b, 8)  # eight members per node drive eight NICs


# ---------------------------------------------------------------- the step-time model

def test_flop_shares_and_pipeline_path():
    assert sum(project.flop_shares(4, 128, 512, 256, 1, 1)) == pytest.approx(1.0)
    per_layer, head = 72 * 128**2 + 12 * 128 * 256, 6 * 512 * 128
    two = project.flop_shares(4, 128, 512, 256, 1, 2)
    assert two[0] == pytest.approx(2 * per_layer / (4 * per_layer + head)) and sum(two) == pytest.approx(1.0)
    tp = project.flop_shares(4, 128, 512, 256, 2, 1)[0]
    assert tp == pytest.approx((2 * per_layer + head) / (4 * per_layer + head))  # output layer replicated
    assert project.pipeline_time([1.0, 1.0], 4) == pytest.approx(5.0)  # (m + p - 1) tau
    assert project.pipeline_time([1.0, 2.0], 1) == pytest.approx(3.0)  # naive: one pass through both
    assert project.pipeline_time([1.0, 1.0], 4, chunks=2) == pytest.approx(1.0 + 3.5)


def test_step_time_and_fit_recover_known_terms():
    truth = Terms(overlap=0.5, slowest=0.1, sync_s=2e-3)
    items = []
    for k in range(8):
        c = {"compute": 0.1 + 0.02 * k, "critical_comm": 0.01 * (k % 3), "optimizer": 0.005,
             "dp_comm": 0.03 * (k % 2), "syncs": float(4 * (k % 4))}
        items.append((c, 2 + 2 * (k % 2), project.step_time(c, 2 + 2 * (k % 2), truth)))
    c = items[0][0]
    assert project.step_time(c, 1, truth) == pytest.approx(0.1 + 0.005 + 0.5 * 0.0)
    terms, sd, n = project.fit_terms(items)
    assert (terms.overlap, terms.slowest, terms.sync_s) == pytest.approx((0.5, 0.1, 2e-3)) and sd < 1e-9 and n == 8


def test_interval_widens_with_sigma_and_is_unknown_without_it():
    lo, hi = project.interval(1000.0, 0.1, 10)
    assert lo < 1000 < hi and hi / 1000 == pytest.approx(1000 / lo)
    assert all(math.isnan(v) for v in project.interval(1000.0, float("nan"), 3))


# ---------------------------------------------------------------- time and cost

def test_cost_arithmetic_by_hand():
    out = project.cost(1000.0, 800.0, 1250.0, devices=4, tokens=3.6e6, price=(2.0, "test"))
    assert out["hours_to_train"] == pytest.approx(1.0)  # 3.6e6 tokens / 1000 tokens/s = 3600 s
    assert out["hours_to_train_hi"] == pytest.approx(1.25) and out["hours_to_train_lo"] == pytest.approx(0.8)
    assert out["usd_per_million_tokens"] == pytest.approx(2.0 * 4 * 1e6 / (1000 * 3600))
    assert out["usd_to_train"] == pytest.approx(8.0) and out["usd_to_train_hi"] == pytest.approx(10.0)
    assert project.cost(1000.0, 900.0, 1100.0, 4, None, None) == {}


def test_counts_and_prices_parse(tmp_path):
    assert project.parse_count("300B", "--tokens") == 3e11 and project.parse_count("4.5e6", "--tokens") == 4.5e6
    with pytest.raises(ValueError, match="--tokens"):
        project.parse_count("lots", "--tokens")
    f = tmp_path / "p.yaml"
    f.write_text("'*': {usd_per_device_hour: 1.5}\n")
    with pytest.raises(ValueError, match="source and date"):
        project.load_prices(str(f), None)
    f.write_text("'*': {usd_per_device_hour: 1.5, source: quote, date: 2026-11-30}\n")
    assert project.load_prices(str(f), None)({"hardware_label": "x"}) == (1.5, "quote (2026-11-30)")


# ---------------------------------------------------------------- the published table on paper

def test_narayanan_table_is_self_consistent():
    rows = published.table()
    assert len(rows) == 10 and rows[-1]["gpus"] == 3072 and rows[-1]["aggregate_pflops"] == 502.0
    for r in rows:
        assert r["tp"] * r["pp"] * (r["gpus"] // (r["tp"] * r["pp"])) == r["gpus"]
        assert round(100 * r["tflops_per_gpu"] / 312) == r["percent_peak"]  # % of the A100's 312 TFLOP/s
        # the aggregate was computed from unrounded per-GPU figures: within half a TFLOP/s per GPU
        assert abs(r["aggregate_pflops"] * 1e3 / r["gpus"] - r["tflops_per_gpu"]) < 0.6
        params = published.paper_params(int(r["layers"]), int(r["hidden"]), published.VOCAB, published.SEQ)
        assert params / 1e9 == pytest.approx(r["params_billion"], abs=0.06)  # eq. (2), rounded to 0.1B


def test_narayanan_weak_scaling_reproduced_with_its_error_per_row(capsys):
    from bench.links import load_cluster
    rate, rows = published.reproduce(load_cluster("dgx-a100", None))
    print("\n".join(published.report(rows, rate)))
    assert rows[0].error == pytest.approx(0.0, abs=1e-9)  # the calibration row
    assert 0.3 < rate / published.PEAK_FLOPS < 0.6
    errs = [r.error for r in rows[1:]]
    assert all(-0.35 < e < 0.05 for e in errs), errs  # under-predicted: one rate for every shape
    assert sum(abs(e) for e in errs) / len(errs) < 0.2


# ---------------------------------------------------------------- results and the command

def test_probe_results_stay_out_of_benchmark_rows(tmp_path):
    from bench.results import load, load_probes, write_result
    rec = {"schema_version": 2, "status": "ok", "kind": "probe", "config": {}, "metrics": {"probe": {"rows": []}},
           "hardware_label": "h", "started_at": "2026-11-30T00:00:00+00:00"}
    write_result(str(tmp_path / "p"), rec)
    assert load(str(tmp_path)).empty
    assert [r["kind"] for r in load_probes(str(tmp_path))] == ["probe"]


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_probe_bad_input_is_one_line_before_anything_starts(tmp_path):
    r = _cli("bench.probe", "devices=1", f"results_root={tmp_path}")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "devices=2" in r.stderr
    r = _cli("bench.probe", "min_bytes=4096", "max_bytes=1024", f"results_root={tmp_path}")
    assert r.returncode == 2 and "swap" in r.stderr
    r = _cli("bench.probe", "strategy=tp", f"results_root={tmp_path}")
    assert r.returncode == 2 and "no model" in r.stderr
    assert not list(tmp_path.iterdir())


def test_project_bad_input(tmp_path):
    r = _cli("bench.project", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = _cli("bench.project", str(tmp_path), "--devices", "4,x")
    assert r.returncode == 2 and "--devices" in r.stderr


@pytest.mark.slow
def test_probe_runs_for_real_and_records_a_result(tmp_path):
    r = _cli("bench.probe", "devices=2", "max_bytes=65536", f"results_root={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    from bench.results import load_probes
    (rec,) = load_probes(str(tmp_path))
    p = rec["metrics"]["probe"]
    assert {x["op"] for x in p["rows"]} == set(probe.OPS) and len(p["rows"]) == 4 * 7  # 1 KiB .. 64 KiB
    assert all(x["time_s"] > 0 and x["busbw_bytes_per_s"] > 0 for x in p["rows"])
    assert set(p["fits"]) == {f"world/{op}" for op in probe.OPS} and p["backend"] == "gloo"
    assert rec["hardware_label"] and rec["config_hash"].startswith("probe-")
    assert "busbw" in r.stdout and "alpha-beta" in r.stdout
    assert os.path.exists(os.path.join(os.path.dirname(rec["path"]), "probe.csv"))


# ---------------------------------------------------------------- co-located calibration

def test_colocated_copies_are_planned_as_processes_of_a_one_device_point():
    from bench.plan import Host, InvalidConfig
    from tests.conftest import plan
    host = Host(cores=4, gpus=0, gpu_bf16=False, gpu_memory_bytes=(), ram_bytes=2**35, ram_available_bytes=2**35)
    spec = plan("size=mini", "strategy=single", "colocated=2", host=host)
    assert (spec.devices, spec.procs, spec.colocated) == (1, 2, 2)
    with pytest.raises(InvalidConfig, match="colocated=2 runs copies of a 1-device point"):
        plan("size=mini", "strategy=dp", "devices=2", "colocated=2", host=host)
    with pytest.raises(InvalidConfig, match="use colocated<=4"):
        plan("size=mini", "strategy=single", "colocated=5", host=host)
    with pytest.raises(InvalidConfig, match="builds a device mesh on one device"):
        plan("size=mini", "strategy=dp", "colocated=2", host=host)


def _ref_row(strategy, step, opt, colocated=1, batch=8):
    return {"devices": 1, "grad_accum": 1, "degree_dp": 1, "degree_tp": 1, "degree_pp": 1, "batch_size": batch,
            "strategy": strategy, "strategy_options": "{}", "tokens_per_step": 1000, "tokens_per_s": 1000 / step,
            "optimizer_time_s": opt, "colocated": colocated, **{k: "same" for k in project.REF_KEYS}}


def test_reference_takes_its_own_strategy_and_the_co_location_factor():
    import pandas as pd
    rows = [_ref_row("single", 0.20, 0.01), _ref_row("single", 0.20, 0.01), _ref_row("dp", 0.21, 0.01),
            _ref_row("single", 0.26, 0.012, colocated=2)]
    refs = project.references(pd.DataFrame(rows))
    dp_row = {**_ref_row("dp", 1, 0), "devices": 2}
    alone = project.reference_for(dp_row, 8, refs, ranks_per_node=1)
    assert (alone.fb_s, alone.opt_s) == pytest.approx((0.20, 0.01))  # dp's own 1-device run
    shared = project.reference_for(dp_row, 8, refs, ranks_per_node=2)
    factor = (0.26 - 0.012) / (0.20 - 0.01)  # single's forward-backward slowed by one busy neighbour
    assert (shared.fb_s, shared.opt_s) == pytest.approx((0.20, 0.01))
    assert (shared.contention, shared.opt_contention) == pytest.approx((factor, 1.2)) and "co-located" in shared.source
    assert project.concurrency(1, 1) == 1.0 and project.concurrency(1, 2) == 0.0  # naive: never together
    assert project.concurrency(4, 2) == pytest.approx(3 / 5)  # GPipe, 2 stages: 3 of 5 slots overlap
    assert project.concurrency(8, 4) == pytest.approx(9 / 11)  # all slots but the first and the last
    assert project.concurrency(1, 4, others=2) == 1.0  # data- or tensor-parallel peers always compute with it
    faster = project.references(pd.DataFrame(rows[:3] + [_ref_row("single", 0.15, 0.005, colocated=2)]))
    clamped = project.reference_for(dp_row, 8, faster, ranks_per_node=2)
    assert (clamped.contention, clamped.opt_contention) == (1.0, 1.0)  # busy neighbours never speed a rank up
    tp_row = {**_ref_row("tp", 1, 0), "devices": 2}  # no tp on 1 device: the fastest strategy's
    assert project.reference_for(tp_row, 8, refs, 1).fb_s == pytest.approx(0.19)
    assert project.reference_for(tp_row, 2, refs, 1) is None  # no run at that micro-batch


@pytest.mark.slow
def test_probe_sweep_and_projection_end_to_end(tmp_path):
    """The README's recipe, shrunk: a probe, 1-device calibration (alone and co-located) and
    2-device points, then bench.project --validate with time and cost."""
    R = str(tmp_path / "r")
    assert _cli("bench.probe", "devices=2", "max_bytes=4194304", f"results_root={R}").returncode == 0
    common = ["size=tiny", "steps=2", "warmup_steps=1", f"results_root={R}", f"report_dir={tmp_path / 'rep'}"]
    for args in (["strategy=single,dp,tp", "devices=1,2"], ["strategy=mp", "devices=2"],
                 ["strategy=single", "colocated=2"]):
        r = _cli("bench.run", "-m", *common, *args)
        assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "proj"
    r = _cli("bench.project", R, "--validate", "--devices", "4,8", "--tokens", "1M", "--usd-per-device-hour", "2",
             "-o", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    import pandas as pd
    val = pd.read_csv(out / "validation.csv")
    assert set(val["series"].str.split().str[1]) == {"dp", "tp", "mp/naive"}
    assert {"series", "devices", "measured", "predicted", "lo", "hi", "error"} <= set(val.columns)
    proj = pd.read_csv(out / "projection.csv")
    assert {"series", "devices", "tokens_per_s", "lo", "hi", "mfu", "mem_bytes", "measured", "hours_to_train",
            "usd_per_million_tokens", "usd_to_train"} <= set(proj.columns)
    dp8 = proj[(proj["devices"] == 8) & proj["series"].str.contains(" dp ")].iloc[0]
    assert dp8["hours_to_train"] == pytest.approx(1e6 / dp8["tokens_per_s"] / 3600)
    assert dp8["usd_to_train"] == pytest.approx(2 * 8 * dp8["hours_to_train"])
    assert (out / "projection.pdf").exists() and "held-out validation" in r.stdout
    assert set(proj["energy_source"].dropna()) == {"unavailable"}  # a CPU measures no energy


@pytest.mark.slow
def test_probe_across_two_nodes_on_one_machine(tmp_path):
    """launcher=multinode: two "nodes" (one rank each) meet through a static rendezvous; the
    node holding rank 0 records the probe, the other says so and records nothing."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": ROOT}
    nodes = [subprocess.Popen([sys.executable, "-m", "bench.probe", "devices=1", "launcher=multinode",
                               f"launcher.rdzv_endpoint=127.0.0.1:{port}", f"launcher.node_rank={n}",
                               "max_bytes=16384", f"results_root={tmp_path / f'n{n}'}"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in nodes]
    finally:  # a node left waiting must not hold its cores for the tests after this one
        for p in nodes:
            p.kill()
    assert [p.returncode for p in nodes] == [0, 0], outs
    from bench.results import load_probes
    (rec,) = load_probes(str(tmp_path))
    assert rec["degrees"]["nodes"] == 2 and rec["metrics"]["probe"]["rows"][0]["ranks"] == 2
    assert "written by the node that held rank 0" in outs[1]
