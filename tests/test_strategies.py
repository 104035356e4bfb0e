"""Every strategy against the single-device reference, as real gloo jobs.

Byte-level text (the loss falls, so a wrong gradient shows), same seed, same tokens: dp
ranks split the reference batch, pipeline stages split its layers, tp ranks split its
heads. fp32 throughout. Checked, after two optimizer steps: the loss of each step, the
gradient of every parameter in the last step, and every parameter (all gathered whole from
the ranks); before training, every initial weight, bit for bit (sharded strategies build on
the meta device and draw only their shards). Gradients are what catch a wrong scale (a sum for a mean): AdamW's update is
invariant to it. Tolerances, room only for a different summation order (all-reduce,
reduce-scatter, micro-batches): losses 2e-5 absolute (values near 5.5); gradients 1e-5
absolute + 1e-4 relative (typical gradients are 1e-3..1e-1; tensor parallel splits the
matmuls' inner sums, which moves cancelling sums by a few 1e-6); parameters 1e-4 absolute, a
tenth of the learning rate, because AdamW moves an element whose gradient is ~0 by up to lr whatever the gradient's last bits.
The 4-rank hybrids oversubscribe the 2 cores (allowed in tests only).
"""
import glob

import pytest
import torch

from bench.protocol import DUMP_ENV
from conftest import launch_job, plan

pytestmark = pytest.mark.slow
BASE = ("size=mini", "data=text", "accelerator=cpu", "precision=fp32", "seq_len=64", "warmup_steps=0",
        "steps=2", "lr=1e-3", "oversubscribe=true")
LOSS_TOL = 2e-5


def run(tmp_path, name, *overrides, monkeypatch=None):
    """One case as a point of its own (bench.run's path): its metrics and its ranks' dumps."""
    spec = plan(*BASE, *overrides)
    out = tmp_path / name
    out.mkdir()
    monkeypatch.setenv(DUMP_ENV, "1")
    res = launch_job(spec, out)
    assert res.status == "ok", res.error
    return (res.metrics, *dumps(out))


def dumps(out):
    """(params, grads of the last step, initial params) merged over the ranks' files in `out`."""
    params, grads, init = {}, {}, {}
    for f in sorted(glob.glob(str(out / "rank*.pt"))):
        d = torch.load(f)
        params.update(d["params"])
        grads.update(d["grads"])
    for f in sorted(glob.glob(str(out / "init.rank*.pt"))):
        init.update(torch.load(f)["params"])
    return params, grads, init


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        return run(tmp_path_factory.mktemp("ref"), "single", "strategy=single", "batch_size=8", monkeypatch=mp)
    finally:
        mp.undo()


def test_reference_trains(reference):
    m, params, grads, init = reference
    assert len(m["loss"]) == 2 and m["tokens_per_s"] > 0
    assert m["loss"][-1] < m["loss"][0]  # byte text at lr=1e-3: it learns at once
    assert m["mem_source"].startswith("rss") and m["mem_peak_bytes"] > 0
    assert len(params) == 4 * 16 + 4  # 16 tensors per block; wte, wpe, ln_f (2)
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


CASES = {
    "dp": ("strategy=dp", "devices=2", "batch_size=4"),
    "dp_global_batch": ("strategy=dp", "devices=2", "global_batch_size=8"),
    "single_grad_accum": ("strategy=single", "batch_size=4", "grad_accum=2"),
    "single_checkpointing": ("strategy=single", "batch_size=8", "activation_checkpointing=full"),
    "mp_naive": ("strategy=mp", "devices=2", "batch_size=8"),
    "mp_gpipe": ("strategy=mp", "devices=2", "batch_size=8", "strategy.schedule=gpipe"),
    "mp_1f1b": ("strategy=mp", "devices=2", "batch_size=8", "strategy.schedule=1f1b"),
    "mp_interleaved": ("strategy=mp", "devices=2", "batch_size=8", "strategy.schedule=interleaved"),
    "mp_1f1b_grad_accum": ("strategy=mp", "devices=2", "batch_size=4", "grad_accum=2",
                           "strategy.schedule=1f1b", "strategy.microbatches=2"),
    "mp_gpipe_grad_accum": ("strategy=mp", "devices=2", "batch_size=4", "grad_accum=2",
                            "strategy.schedule=gpipe", "strategy.microbatches=2"),
    "mp_naive_grad_accum": ("strategy=mp", "devices=2", "batch_size=4", "grad_accum=2"),
    "tp": ("strategy=tp", "devices=2", "batch_size=8"),
    "tp_sequence_parallel": ("strategy=tp", "devices=2", "batch_size=8", "strategy.sequence_parallel=true"),
    "tp_full_head": ("strategy=tp", "devices=2", "batch_size=8", "strategy.vocab_parallel=false"),
    "fsdp": ("strategy=fsdp", "devices=2", "batch_size=4"),
    "fsdp_keep_gathered_checkpointed": ("strategy=fsdp", "devices=2", "batch_size=4",
                                        "strategy.reshard_after_forward=false", "activation_checkpointing=full"),
    "fsdp_grad_accum": ("strategy=fsdp", "devices=2", "batch_size=2", "grad_accum=2"),
    "hybrid_dp_tp": ("strategy=hybrid", "devices=4", "strategy.tp=2", "strategy.pp=1", "batch_size=4"),
    "hybrid_dp_tp_sequence_parallel": ("strategy=hybrid", "devices=4", "strategy.tp=2", "strategy.pp=1",
                                       "batch_size=4", "strategy.sequence_parallel=true"),
    "hybrid_dp_mp": ("strategy=hybrid", "devices=4", "strategy.pp=2", "batch_size=4", "strategy.microbatches=2"),
    "hybrid_dp_mp_naive": ("strategy=hybrid", "devices=4", "strategy.pp=2", "batch_size=4",
                           "strategy.schedule=naive"),
}
# the chunked loss head (bench/loss.py) on every strategy whose last stage computes the loss,
# against the same reference (plain head: mini's logits are small, `auto` takes plain there)
CHUNKED = ("dp", "single_grad_accum", "mp_naive", "mp_gpipe", "mp_1f1b", "mp_interleaved", "tp",
           "tp_sequence_parallel", "fsdp", "hybrid_dp_tp")
CASES |= {f"{name}_chunked_head": (*CASES[name], "loss_head=chunked") for name in CHUNKED}


def test_every_strategy_has_a_case():
    """A new strategy is checked against `single` too (nn.DataParallel needs GPUs: its case is
    the GPU test below)."""
    from bench import parallel
    covered = {next(o.split("=")[1] for o in case if o.startswith("strategy=")) for case in CASES.values()}
    assert set(parallel.STRATEGIES) - {"dataparallel"} <= covered


@pytest.fixture(scope="module")
def standing(tmp_path_factory):
    """Every case measured as bench.advise measures: in standing jobs (bench/session.py), one
    job per process count, point after point, each case its own point with its own folder
    (its dumps) and metrics. Against the reference, run as a point of its own, this also checks
    that a standing job's points leave nothing behind for the next (one launch per group
    instead of one per case, too). {case: bench.session.ItemOutcome}"""
    from bench.session import Item, Job
    from bench.worker import serve_rank
    root = tmp_path_factory.mktemp("standing")
    mp = pytest.MonkeyPatch()
    mp.setenv(DUMP_ENV, "1")
    try:
        specs = {name: plan(*BASE, *case) for name, case in CASES.items()}
        groups: dict[int, list[str]] = {}
        for name, spec in specs.items():
            groups.setdefault(spec.procs, []).append(name)
        outcomes = {}
        for procs, left in groups.items():
            for attempt in range(3):  # a failed case ends its job: the rest in a new one
                if not left:
                    break
                for n in left:
                    (root / n).mkdir(exist_ok=True)
                job = Job(specs[left[0]], str(root / f"job-{procs}-{attempt}"), serve_rank)
                outs = job.measure([Item(specs[n], str(root / n), n, 300.0) for n in left])
                job.close()
                outcomes.update({n: o for n, o in zip(left, outs) if o is not None})
                left = [n for n, o in zip(left, outs) if o is None]
        # a case whose rank crashed (SIGSEGV/SIGABRT) after other points of its process: once more,
        # alone in a fresh process, as bench.advise does (mini's tp+sp crashed so in long standing
        # jobs on this VM, never alone: still open, see the README)
        for n, o in list(outcomes.items()):
            if o.status != "ok" and any(f"signal {s} " in (o.error or "") for s in (6, 7, 11)):
                job = Job(specs[n], str(root / f"job-retry-{n}"), serve_rank)
                (again,) = job.measure([Item(specs[n], str(root / n), n, 300.0)])
                job.close()
                outcomes[n] = again if again is not None else o
        return root, outcomes
    finally:
        mp.undo()


@pytest.mark.parametrize("name", list(CASES))
def test_matches_single(standing, reference, name):
    ref_m, ref_p, ref_g, ref_init = reference
    root, outcomes = standing
    o = outcomes[name]
    assert o.status == "ok", o.error
    m = o.metrics
    params, grads, init = dumps(root / name)
    assert init.keys() == ref_init.keys()
    for k in ref_init:  # built sharded on the meta device, each shard drawn: bit-identical to single
        assert torch.equal(init[k], ref_init[k]), f"initial {k} differs from single's"
    torch.testing.assert_close(torch.tensor(m["loss"]), torch.tensor(ref_m["loss"]), atol=LOSS_TOL, rtol=0)
    assert m["tokens_per_step"] == ref_m["tokens_per_step"]
    assert params.keys() == ref_p.keys()
    for k in ref_p:
        torch.testing.assert_close(grads[k], ref_g[k], atol=1e-5, rtol=1e-4, msg=lambda s: f"grad {k}: {s}")
        torch.testing.assert_close(params[k], ref_p[k], atol=1e-4, rtol=0, msg=lambda s: f"param {k}: {s}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", ["dp", "dataparallel"])
def test_cuda_bf16_runs(tmp_path, strategy):
    n = min(2, torch.cuda.device_count())
    spec = plan("size=mini", "accelerator=cuda", "precision=bf16", f"strategy={strategy}", f"devices={n}", "steps=3")
    res = launch_job(spec, tmp_path)
    assert res.status == "ok", res.error
    m = res.metrics
    # NVML's used peak where NVML answers (a real GPU), else torch's reserved; torch's beside it always
    assert m["mem_source"].split()[0] in ("nvml", "torch") and m["tokens_per_s"] > 0
    assert 0 < m["mem_torch_max_allocated_bytes"] <= m["mem_torch_max_reserved_bytes"] <= m["mem_peak_bytes"]


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(tmp_path):
    """compile=true: torch.compile per block gives the eager losses; compilation happens in
    the warm-up and is reported, not timed."""
    base = ("size=tiny", "strategy=dp", "devices=1", "accelerator=cpu", "seq_len=32", "warmup_steps=2", "steps=2")
    eager = launch_job(plan(*base), tmp_path / "eager")
    comp = launch_job(plan(*base, "compile=true"), tmp_path / "compiled")
    assert eager.status == comp.status == "ok", comp.error
    assert comp.metrics["loss"] == pytest.approx(eager.metrics["loss"], abs=1e-4)
    assert comp.metrics["compile_s"] > 0 and eager.metrics["compile_s"] is None
    assert comp.metrics["warmup_times_s"][0] > 5 * comp.metrics["step_time_s"]  # compiling was in the warm-up
