"""The loss head (bench/loss.py): the chunked output layer + cross entropy gives the plain
head's loss and gradients, in fp32 and under bf16 autocast, across chunk boundaries; `auto`
picks by the logits' size; what cannot run is refused before anything starts."""
import pytest
import torch

from bench.loss import embedding, linear_cross_entropy
from bench.model import build_model
from bench.plan import InvalidConfig
from bench.spec import GPTShape
from conftest import plan


def _grads(head, h, w, y, chunk=1024, bf16=False):
    h = h.detach().requires_grad_()
    w = w.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = linear_cross_entropy(h, w, y, head, chunk=chunk)
    loss.backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("chunk", [7, 64, 1024])  # uneven chunks, exact ones, a single chunk
def test_chunked_head_matches_plain_in_fp32(chunk):
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(3, 40, 16, generator=g), torch.randn(300, 16, generator=g) * 0.3
    y = torch.randint(0, 300, (3, 40), generator=g)
    (lp, hp, wp), (lc, hc, wc) = _grads("plain", h, w, y), _grads("chunked", h, w, y, chunk)
    assert lc.dtype == torch.float32 and lc.shape == ()
    torch.testing.assert_close(lc, lp, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(hc, hp, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(wc, wp, atol=1e-7, rtol=1e-5)


def test_chunked_head_matches_plain_under_bf16_autocast():
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(2, 64, 32, generator=g), torch.randn(500, 32, generator=g) * 0.2
    y = torch.randint(0, 500, (2, 64), generator=g)
    (lp, hp, wp), (lc, hc, wc) = _grads("plain", h, w, y, bf16=True), _grads("chunked", h, w, y, 50, bf16=True)
    assert hc.dtype == torch.float32 and wc.dtype == torch.float32  # fp32 master weights and stream
    torch.testing.assert_close(lc, lp, atol=1e-3, rtol=1e-3)  # both bf16 matmuls, fp32 softmax
    torch.testing.assert_close(hc, hp, atol=1e-4, rtol=2e-2)
    torch.testing.assert_close(wc, wp, atol=1e-4, rtol=2e-2)


def test_the_model_gives_one_loss_under_either_head():
    shape = GPTShape(n_layer=2, n_head=2, n_embd=32, vocab_size=200, block_size=16)
    x = torch.randint(0, 200, (2, 17), generator=torch.Generator().manual_seed(2))
    out = {}
    for head in ("plain", "chunked"):
        m = build_model(shape, torch.device("cpu"), seed=0)
        m.loss_head = head
        loss = m(x[:, :-1], x[:, 1:])
        loss.backward()
        out[head] = (loss.detach(), m.wte.weight.grad.clone())
    torch.testing.assert_close(out["chunked"][0], out["plain"][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["chunked"][1], out["plain"][1], atol=1e-7, rtol=1e-5)


def test_an_unknown_head_is_an_error():
    with pytest.raises(ValueError, match="plain or chunked"):
        linear_cross_entropy(torch.zeros(1, 2, 4), torch.zeros(3, 4), torch.zeros(1, 2, dtype=torch.long), "fused")


def test_auto_takes_the_chunked_head_where_the_logits_are_large():
    assert plan("size=mini", "accelerator=cpu").loss_head == "plain"  # 8 x 256 x 512 x 4 B = 4 MiB of logits
    assert plan("size=small", "accelerator=cpu", "seq_len=256", "batch_size=8").loss_head == "chunked"  # 412 MB
    assert plan("size=small", "accelerator=cpu", "loss_head=plain", "batch_size=8").loss_head == "plain"
    assert plan("size=mini", "accelerator=cpu", "loss_head=chunked").loss_head == "chunked"
    # under a pipeline, a micro-batch's logits count: 1 x 256 x 50304 x 4 B = 51 MB, 4 x that = 206 MB
    mp = ("size=small", "accelerator=cpu", "strategy=mp", "devices=2", "seq_len=256", "batch_size=8",
          "strategy.schedule=gpipe")
    assert plan(*mp, "strategy.microbatches=8").loss_head == "plain"
    assert plan(*mp, "strategy.microbatches=2").loss_head == "chunked"


def test_chunked_head_on_a_pipeline_under_fsdp_is_refused():
    with pytest.raises(InvalidConfig, match="loss_head=plain"):
        plan("size=mini", "accelerator=cpu", "strategy=hybrid", "devices=2", "strategy.pp=2", "strategy.tp=1",
             "strategy.microbatches=2", "loss_head=chunked", "oversubscribe=true")


def test_fp16_takes_the_plain_head():
    """fp16's gradient scaling reaches the chunked head's gradients only in backward, after
    forward cast them to fp16: refused, and `auto` picks plain (shape and batch where it would
    otherwise take chunked)."""
    from bench.plan import Host
    gpu = Host(cores=16, gpus=1, gpu_bf16=True, gpu_memory_bytes=(80 * 2**30,), ram_bytes=2**37,
               ram_available_bytes=2**37)
    big = ("size=small", "accelerator=cuda", "seq_len=1024", "batch_size=8")
    assert plan(*big, "precision=bf16", host=gpu).loss_head == "chunked"
    assert plan(*big, "precision=fp16", host=gpu).loss_head == "plain"
    with pytest.raises(InvalidConfig, match="fp16"):
        plan(*big, "precision=fp16", "loss_head=chunked", host=gpu)


def test_a_dataparallel_replica_gets_the_targets():
    """nn.DataParallel's replicas run the wrapper's forward: the targets must reach the model,
    which returns the replica's loss (the head inside its forward)."""
    import contextlib

    from bench.parallel.parallelize import _Autocast

    class Ctx:
        def autocast(self):
            return contextlib.nullcontext()

    shape = GPTShape(n_layer=1, n_head=2, n_embd=16, vocab_size=50, block_size=8)
    m = build_model(shape, torch.device("cpu"), seed=0)
    x = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(3))
    loss = _Autocast(m, Ctx())(x[:, :-1], x[:, 1:])
    assert loss.dim() == 0 and torch.equal(loss, m(x[:, :-1], x[:, 1:]))


def _vocab_parallel_rank(rank, port, out):
    import os

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("tp",))
    g = torch.Generator().manual_seed(4)
    h, w = torch.randn(3, 40, 16, generator=g), torch.randn(301, 16, generator=g) * 0.3  # 301: shards 151 + 150
    y = torch.randint(0, 301, (3, 40), generator=g)
    res = {}
    for head, chunk, bf16 in (("plain", 1024, False), ("chunked", 7, False), ("chunked", 50, True)):
        ref = _grads("plain", h, w, y, bf16=bf16)
        hh = h.detach().clone().requires_grad_()
        wd = distribute_tensor(w.detach().clone(), mesh, [Shard(0)]).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = linear_cross_entropy(hh, wd, y, head, chunk=chunk)
        (3 * loss).backward()  # an incoming gradient other than 1 (as grad_accum and fp16's scaler give)
        assert wd.grad.placements == (Shard(0),) and wd.grad.to_local().shape[0] == (151, 150)[rank]
        res[(head, chunk, bf16)] = (tuple(3 * t for t in ref), (3 * loss.detach(), hh.grad, wd.grad.full_tensor()))
    # the lookup: each rank's rows, summed; the gradient on the rank's rows only
    wd = distribute_tensor(w.detach().clone(), mesh, [Shard(0)]).requires_grad_()
    wp = w.detach().clone().requires_grad_()
    up = torch.randn(3, 40, 16, generator=g)
    e, ep = embedding(y, wd), torch.nn.functional.embedding(y, wp)
    (e * up).sum().backward()
    (ep * up).sum().backward()
    assert wd.grad.placements == (Shard(0),) and wd.grad.to_local().shape[0] == (151, 150)[rank]
    res["embedding"] = ((ep.detach(), wp.grad), (e.detach(), wd.grad.full_tensor()))
    torch.save(res, f"{out}.{rank}")
    dist.destroy_process_group()


def test_vocab_parallel_head_matches_plain_over_two_ranks(tmp_path):
    """The output matrix split by vocabulary over 2 gloo ranks (uneven: 151 + 150 rows), in one
    chunk and in uneven chunks, fp32 and bf16, with an incoming gradient of 3: the plain head's
    loss and gradients (the hidden states' gradient whole on every rank, the matrix's on its
    rows); and the lookup through the same split matrix: F.embedding's output and gradient."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "res.pt"
    mp.spawn(_vocab_parallel_rank, args=(port, str(out)), nprocs=2)
    for rank in (0, 1):  # both ranks hold the whole loss and hidden-state gradient
        res = torch.load(f"{out}.{rank}")
        (ep, gp), (ev, gv) = res.pop("embedding")
        torch.testing.assert_close(ev, ep, atol=1e-7, rtol=0)
        torch.testing.assert_close(gv, gp, atol=1e-6, rtol=1e-6)
        for (head, chunk, bf16), ((lp, hp, wp), (lv, hv, wv)) in res.items():
            tol = dict(atol=3e-4, rtol=2e-2) if bf16 else dict(atol=3e-6, rtol=1e-5)
            torch.testing.assert_close(lv, lp, **(dict(atol=3e-3, rtol=1e-3) if bf16 else dict(atol=3e-6, rtol=1e-6)))
            torch.testing.assert_close(hv, hp, **tol)
            torch.testing.assert_close(wv, wp, **tol)


def test_auto_takes_one_head_at_every_tp_degree():
    """`auto` judges the whole vocabulary's logits (4 x 128 x 50304 x 4 B = 103 MB here), also where
    a rank makes only V/tp of them: a tp series keeps one head, and so one identity, across its
    device counts."""
    base = ("size=small", "accelerator=cpu", "strategy=tp", "seq_len=128", "batch_size=4")
    assert {plan(*base, f"devices={n}", *vp).loss_head for n in (1, 2)
            for vp in ((), ("strategy.vocab_parallel=false",))} == {"chunked"}


def test_a_cpu_chunk_keeps_its_logits_under_the_mmap_ceiling():
    """On a CPU in fp32 a chunk's logits stay within glibc's largest mmap threshold (32 MiB), so
    they come from the heap and not fresh pages each chunk; a GPU, and 2-byte matmuls (where more
    chunks cost more by measurement), keep 1024 tokens."""
    from bench.spec import LOSS_CHUNK_TOKENS, loss_chunk_tokens
    assert loss_chunk_tokens("cuda", 50304, True) == LOSS_CHUNK_TOKENS == 1024
    assert loss_chunk_tokens("cpu", 50304, False) == 1024  # bf16
    assert loss_chunk_tokens("cpu", 50304, True) == 128  # 2**25 / (50304 * 4) = 166.8 -> 128, a multiple of 64
    assert loss_chunk_tokens("cpu", 25152, True) == 320  # split over tp=2: 333.5 -> 320
    assert loss_chunk_tokens("cpu", 512, True) == 1024  # small vocabularies: the GPU's chunk at most
    assert loss_chunk_tokens("cpu", 10**7, True) == 64  # never under 64 tokens
    assert 128 * 50304 * 4 <= 2**25 < 192 * 50304 * 4


def test_the_plan_resolves_the_chunk_and_the_results_keep_it_apart():
    """The spec carries the chunk a point runs (so a result records it, failed runs too); the
    identity holds it, so a 128-token CPU fp32 run is never pooled with a 1024-token one (the
    rule before 2026-12-01), and a chunked result from before the record reads as 1024."""
    from bench.identity import identity
    from bench.results import flatten
    from bench.spec import head_rows
    assert head_rows(50304, 2, True) == 25152 and head_rows(50305, 2, True) == 25153  # ceil: the largest shard
    assert head_rows(50304, 2, False) == 50304
    big = ("size=small", "accelerator=cpu", "seq_len=256", "batch_size=8")
    assert plan(*big, "precision=fp32").loss_chunk_tokens == 128
    assert plan(*big, "precision=bf16").loss_chunk_tokens == 1024
    assert plan(*big, "loss_head=plain").loss_chunk_tokens is None
    # tensor parallel split by vocabulary: by ceil(V / tp) rows (2**25 / (25152 * 4) = 333.5 -> 320)
    assert plan(*big, "strategy=tp", "devices=2", "batch_size=4").loss_chunk_tokens == 320
    assert plan(*big, "strategy=tp", "devices=2", "batch_size=4",
                "strategy.vocab_parallel=false").loss_chunk_tokens == 128
    spec = plan(*big, "precision=fp32")
    rec = {"status": "ok", "config": {"size": {"name": "small"}, "strategy": {"name": "single"}},
           "spec": spec.to_dict(), "metrics": {}}
    old = {**rec, "spec": {k: v for k, v in spec.to_dict().items() if k != "loss_chunk_tokens"}}
    plain = {**rec, "spec": {**spec.to_dict(), "loss_head": "plain", "loss_chunk_tokens": None}}
    assert [flatten(r)["loss_chunk_tokens"] for r in (rec, old, plain)] == [128, 1024, None]
    assert identity(flatten(rec)) != identity(flatten(old))
