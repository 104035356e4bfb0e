"""The loss head: output layer + next-token cross entropy, whole or in chunks of tokens; and
the tied matrix's lookup where it is split by vocabulary (`embedding`).

`plain`: logits = h W^T (N, V), then cross entropy; autograd keeps the fp32 log-softmax
(N x V x 4 bytes) for backward, and under autocast the 2-byte logits as well.

`chunked`: the same loss and the same gradients, never holding more than one chunk's logits.
For each chunk of `chunk` tokens, forward computes the chunk's logits, their log-sum-exp and
loss, and at once the chunk's gradients (softmax - onehot) / N: dh = g W, dW += g^T h. Backward
only scales what forward made by the incoming gradient. This is the fused linear cross entropy
of Liger-Kernel (Hsu et al. 2024, "Liger Kernel: Efficient Triton Kernels for LLM Training",
section 3.3) and of Wijmans et al. 2024 ("Cut Your Losses in Large-Vocabulary Language
Models") written in PyTorch: peak memory O(chunk x V) instead of O(N x V). Not a fused
kernel: each chunk still makes its logits in memory and passes over them a few times (max, exp,
sum, divide); on CUDA, Liger-Kernel's Triton kernel would fuse those (not wired in here).

Vocabulary-parallel (tensor parallel, `strategy.vocab_parallel`): the output matrix is split by
vocabulary over the tp ranks (a DTensor sharded on dim 0, also the input embedding's: Megatron-LM's
VocabParallelEmbedding and vocab_parallel_cross_entropy, Shoeybi et al. 2019, section 3;
torchtitan's loss parallel). Each rank makes the logits of its V/tp columns only, chunk by
chunk; per chunk one all-reduce (MAX) of the rows' maxima and one (SUM) of their exp-sums and
target logits make the global log-sum-exp, and at the end one all-reduce (SUM) of the hidden
states' gradient, whose parts the ranks' vocabulary slices each contribute. `plain` is the same
with one chunk of all the tokens.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, Shard

from bench.spec import head_rows, loss_chunk_tokens


def compute_dtype(device: torch.device, weight: torch.Tensor) -> torch.dtype:
    """The matmul dtype autocast would use here (its dtype when enabled, else the weight's)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


def accumulate_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  buf: torch.Tensor | None = None) -> torch.Tensor | None:
    """acc += a @ b for an fp32 `acc` (the output matrix's gradient, V x C), without an fp32
    temporary of its size: in place where a, b are fp32, else through their 2-byte product in
    `buf` (made on the first call; pass back what this returns), one buffer for all the chunks:
    a new V x C product per chunk was a fresh mmap each time on a CPU above 32 MiB (small, bf16)."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
        return None
    if buf is None:
        buf = torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device=a.device)
    torch.mm(a, b, out=buf)
    acc.add_(buf)
    return buf


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(h_i W^T, y_i) over the N tokens; h (N, C), W (V, C), y (N,) int64 -> scalar fp32."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
        dt = compute_dtype(h.device, weight)
        with torch.autocast(h.device.type, enabled=False):
            n = h.shape[0]
            w = weight.to(dt)
            hc = h.to(dt)
            grad_h = torch.empty_like(h)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            buf = None  # the 2-byte V x C product, one for every chunk (accumulate_mm)
            for s in range(0, n, chunk):
                hs, ys = hc[s:s + chunk], y[s:s + chunk]
                logits = (hs @ w.t()).float()  # (c, V)
                # log-sum-exp by hand, in place: torch.logsumexp makes a (c, V) temporary of
                # logits - max (a tenth of the head's time at GPT-2's vocabulary)
                m = logits.amax(dim=-1)  # (c,)
                target = logits.gather(1, ys[:, None]).squeeze(1)
                p = logits.sub_(m[:, None]).exp_()  # exp(logits - max), in place of the logits
                z = p.sum(dim=-1)
                loss += (m + z.log() - target).sum()
                # d(mean loss)/d logits = (softmax - onehot) / N
                p.div_(z[:, None] * n)
                p[torch.arange(len(ys), device=p.device), ys] -= 1.0 / n
                g = p.to(dt)
                grad_h[s:s + chunk] = (g @ w).to(h.dtype)
                buf = accumulate_mm(grad_w, g.t(), hs, buf)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return loss / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, (grad_w * grad_out).to(ctx.weight_dtype), None, None


class VocabParallelLinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(h_i W^T, y_i) with W split by rows over `group`: h (N, C) the same on every rank,
    w (V_r, C) this rank's rows `start .. start + V_r` of the (V, C) matrix, y (N,) int64 global
    ids -> scalar fp32, the same on every rank. Gradients formed in forward, as the chunked head's:
    dh all-reduced (every rank gets the whole), dw this rank's rows only."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, group, start: int,
                chunk: int) -> torch.Tensor:
        dt = compute_dtype(h.device, w)
        with torch.autocast(h.device.type, enabled=False):
            n, v_r = h.shape[0], w.shape[0]
            wc, hc = w.to(dt), h.to(dt)
            grad_h = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
            grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            buf = None  # the 2-byte V_r x C product, one for every chunk (accumulate_mm)
            for s in range(0, n, chunk):
                hs, ys = hc[s:s + chunk], y[s:s + chunk]
                local = ys - start
                mine = (local >= 0) & (local < v_r)  # rows whose target is in this rank's slice
                local = local.clamp(0, v_r - 1)
                logits = (hs @ wc.t()).float()  # (c, V_r)
                m = logits.amax(dim=-1)
                dist.all_reduce(m, dist.ReduceOp.MAX, group=group)  # the row's max over all of V
                target = logits.gather(1, local[:, None]).squeeze(1) * mine
                p = logits.sub_(m[:, None]).exp_()  # exp(logits - max), in place
                zt = torch.stack([p.sum(dim=-1), target])
                dist.all_reduce(zt, group=group)  # exp-sums and target logits over all of V
                z, target = zt[0], zt[1]
                loss += (m + z.log() - target).sum()
                # d loss_i / d logits = softmax - onehot, divided by N after the matmuls: in a 2-byte
                # dtype, 1/N-scaled probabilities would underflow (the fp16 refusal of the chunked head)
                p.div_(z[:, None])
                rows = torch.arange(len(ys), device=p.device)
                p[rows[mine], local[mine]] -= 1.0
                g = p.to(dt)
                grad_h[s:s + chunk] = (g @ wc).float()
                buf = accumulate_mm(grad_w, g.t(), hs, buf)
            dist.all_reduce(grad_h, group=group)  # each slice of V contributes to every row's dh
        ctx.save_for_backward(grad_h.div_(n).to(h.dtype), grad_w.div_(n))
        ctx.weight_dtype = w.dtype
        return loss / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, (grad_w * grad_out).to(ctx.weight_dtype), None, None, None, None


def vocab_shard(weight) -> tuple[torch.Tensor, object, int]:
    """A (V, C) DTensor split by rows over a 1-D mesh -> (this rank's rows, differentiable; the
    mesh's process group; the first row's global index). DTensor's Shard(0) cuts as torch.chunk
    does: ceil(V / n) rows per rank, the last ones fewer (or none)."""
    mesh = weight.device_mesh
    per = -(-weight.shape[0] // mesh.size())
    start = min(mesh.get_local_rank() * per, weight.shape[0])
    local = weight.to_local()
    assert local.shape[0] == min(per, weight.shape[0] - start), (tuple(local.shape), per, start)
    return local, mesh.get_group(), start


class _SumOverRanks(torch.autograd.Function):
    """Forward: all-reduce (sum) over `group`; backward: the gradient as it comes (each rank's
    part of a sum gets the sum's gradient, which every tp rank holds whole). Megatron-LM's
    reduce_from_tensor_model_parallel_region."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        dist.all_reduce(x, group=group)  # in place: autograd is told (mark_dirty)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The token embedding: ids (B, T) int64, weight (V, C) -> (B, T, C). A weight split by
    vocabulary (a DTensor, Shard(0) over tp) is looked up as Megatron-LM's VocabParallelEmbedding
    does: each rank takes the ids in its rows (zeros for the rest) and one all-reduce sums them;
    the gradient stays on the rank's rows (V/tp x C; DTensor's own embedding backward makes a
    whole V x C gradient on every rank)."""
    if not _vocab_sharded(weight):
        return F.embedding(ids, weight)
    local, group, start = vocab_shard(weight)
    rel = ids - start
    mine = (rel >= 0) & (rel < local.shape[0])
    out = F.embedding(rel.masked_fill(~mine, 0), local) * mine.unsqueeze(-1)
    return _SumOverRanks.apply(out, group)


def _vocab_sharded(weight) -> bool:
    """A DTensor split by rows over one mesh dimension: tensor parallel's vocabulary-parallel matrix.
    (Under FSDP alone the forward sees the gathered plain tensor; under FSDP over tp, hybrid, the
    gathered tp DTensor. No layout shards the tied matrix by rows over dp alone in forward.)"""
    return isinstance(weight, DTensor) and tuple(weight.placements) == (Shard(0),)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, head: str = "chunked",
                         chunk: int | None = None) -> torch.Tensor:
    """Mean next-token cross entropy of the output layer: h (B, T, C) final hidden states,
    weight (V, C) the (tied) output matrix, y (B, T) targets -> scalar fp32.
    head: `plain` (whole logits) or `chunked` (ChunkedLinearCrossEntropy). A weight split by
    vocabulary over tensor parallel (a DTensor, Shard(0)) takes VocabParallelLinearCrossEntropy,
    in chunks of `chunk` tokens (`chunked`) or all at once (`plain`). `chunk` None: the device's
    (bench.spec.loss_chunk_tokens: by the matrix's rows, the largest shard's where it is split)."""
    if head not in ("plain", "chunked"):
        raise ValueError(f"loss head {head!r}: use plain or chunked")
    if _vocab_sharded(weight):
        local, group, start = vocab_shard(weight)
        # by the largest shard, ceil(V / tp), not this rank's rows: every rank takes the same chunks
        # (an uneven split could give ranks different chunk counts, and their all-reduces would not pair)
        chunk = chunk or loss_chunk_tokens(local.device.type, head_rows(weight.shape[0], dist.get_world_size(group), True),
                                           compute_dtype(h.device, local) == torch.float32)
        h, y = h.flatten(0, 1), y.flatten(0, 1)
        return VocabParallelLinearCrossEntropy.apply(h, local, y, group, start,
                                                     chunk if head == "chunked" else max(1, h.shape[0]))
    if head == "plain":
        return F.cross_entropy(F.linear(h, weight).float().flatten(0, 1), y.flatten(0, 1))
    chunk = chunk or loss_chunk_tokens(weight.device.type, weight.shape[0],
                                       compute_dtype(h.device, weight) == torch.float32)
    return ChunkedLinearCrossEntropy.apply(h.flatten(0, 1), weight, y.flatten(0, 1), chunk)
