"""The loss head: output layer + next-token cross entropy, whole or in chunks of tokens.

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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.spec import LOSS_CHUNK_TOKENS


def compute_dtype(device: torch.device, weight: torch.Tensor) -> torch.dtype:
    """The matmul dtype autocast would use here (its dtype when enabled, else the weight's)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


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
                grad_w += (g.t() @ hs).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return loss / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, (grad_w * grad_out).to(ctx.weight_dtype), None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, head: str = "chunked",
                         chunk: int = LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """Mean next-token cross entropy of the output layer: h (B, T, C) final hidden states,
    weight (V, C) the (tied) output matrix, y (B, T) targets -> scalar fp32.
    head: `plain` (whole logits) or `chunked` (ChunkedLinearCrossEntropy)."""
    if head == "plain":
        return F.cross_entropy(F.linear(h, weight).float().flatten(0, 1), y.flatten(0, 1))
    if head != "chunked":
        raise ValueError(f"loss head {head!r}: use plain or chunked")
    return ChunkedLinearCrossEntropy.apply(h.flatten(0, 1), weight, y.flatten(0, 1), chunk)
