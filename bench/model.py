"""Decoder-only GPT (GPT-2 architecture): the one model every strategy trains.

Pre-LayerNorm blocks of causal multi-head self-attention (softmax(QK^T/sqrt(d_k))V through
`scaled_dot_product_attention`, heads concatenated then W^O) and a GELU MLP; token embedding
tied to the output layer. Q, K and V are separate Linear layers (not one fused c_attn) so
that head-wise tensor parallelism can shard each column-wise without splitting across them.

A model can be built as one pipeline stage: `layers` picks which blocks it holds (kept under
their global index, so parameter names match the full model's), `first` adds the
embeddings, `last` the final LayerNorm and the (tied) output layer. Build on the meta device,
shard there (tensor parallel, FSDP), then `materialise`: storage for this rank's shards only,
and `init_weights`, which draws each parameter from its own generator seeded by (seed, name),
so every strategy starts from bit-identical weights however the model is split or sharded.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.loss import embedding, linear_cross_entropy
from bench.spec import GPTShape  # noqa: F401  (the shape lives beside the spec: no torch there)


class CausalSelfAttention(nn.Module):
    def __init__(self, s: GPTShape):
        super().__init__()
        self.n_head = s.n_head
        self.q = nn.Linear(s.n_embd, s.n_embd)
        self.k = nn.Linear(s.n_embd, s.n_embd)
        self.v = nn.Linear(s.n_embd, s.n_embd)
        self.proj = nn.Linear(s.n_embd, s.n_embd)  # W^O

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        # (B, T, C) -> (B, nh, T, hd); -1 lets a tensor-parallel shard hold fewer heads
        q = self.q(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, -1)  # heads concatenated: (B, T, C)
        return self.proj(y)

    @property
    def head_dim(self) -> int:
        return self.q.weight.shape[1] // self.n_head


class MLP(nn.Module):
    def __init__(self, s: GPTShape):
        super().__init__()
        self.fc = nn.Linear(s.n_embd, 4 * s.n_embd)
        self.proj = nn.Linear(4 * s.n_embd, s.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))  # GPT-2's GELU


class Block(nn.Module):
    def __init__(self, s: GPTShape):
        super().__init__()
        self.ln_1 = nn.LayerNorm(s.n_embd)
        self.attn = CausalSelfAttention(s)
        self.ln_2 = nn.LayerNorm(s.n_embd)
        self.mlp = MLP(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The full model, or one pipeline stage of it.

    forward: first stage takes token ids (B, T) int64, others take hidden states (B, T, C);
    the last stage returns logits (B, T, V), others hidden states (B, T, C).
    """

    def __init__(self, shape: GPTShape, layers: Iterable[int] | None = None,
                 first: bool = True, last: bool = True):
        super().__init__()
        self.shape = shape
        self.first, self.last = first, last
        ids = range(shape.n_layer) if layers is None else layers
        # the token embedding lives on the first stage (input) and the last (tied output)
        self.wte = nn.Embedding(shape.vocab_size, shape.n_embd) if (first or last) else None
        self.wpe = nn.Embedding(shape.block_size, shape.n_embd) if first else None
        self.layers = nn.ModuleDict({str(i): Block(shape) for i in ids})
        self.ln_f = nn.LayerNorm(shape.n_embd) if last else None
        self.loss_head = "plain"  # the last stage's loss head (bench/loss.py); the strategy sets spec.loss_head

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """With `targets` (B, T) on the last stage: the mean loss (scalar fp32), the output layer
        and cross entropy applied by `loss_head` (nanoGPT's forward(idx, targets) does the same,
        so that the head runs inside the forward wrappers such as FSDP gather for)."""
        if self.first:
            T = x.shape[1]
            pos = torch.arange(T, device=x.device)
            x = embedding(x, self.wte.weight) + self.wpe(pos)  # (B, T, C); split by vocabulary under tp
        for block in self.layers.values():
            x = block(x)
        if self.last:
            x = self.ln_f(x)
            if targets is not None:
                return linear_cross_entropy(x, self.wte.weight, targets, self.loss_head)
            if self.loss_head == "plain":
                x = F.linear(x, self.wte.weight)  # tied output layer: (B, T, V)
            # chunked: the final hidden states (B, T, C); a pipeline's loss function applies the head
        return x


def build_model(shape: GPTShape, device: torch.device, seed: int, **stage) -> GPT:
    """Build on the meta device (no memory, no init cost), materialise on `device`, init."""
    with torch.device("meta"):
        model = GPT(shape, **stage)
    materialise(model, device, seed)
    return model


def materialise(model: nn.Module, device: torch.device, seed: int) -> None:
    """Give a model built on the meta device (and possibly sharded there already: tensor
    parallel, FSDP) real storage on `device`, then its initial weights. Only this rank's
    shards get storage: the whole model never exists on a sharded rank."""
    model.to_empty(device=device)
    init_weights(model, seed)


# names wrappers insert between a module and its parameters (checkpoint_wrapper; torch.compile
# of a whole module); DDP and nn.DataParallel add a leading "module."
_WRAPPERS = ("_checkpoint_wrapped_module.", "_orig_mod.")


def plain_name(name: str) -> str:
    """A parameter's name in the plain (unwrapped) model: `layers.0.attn.q.weight`."""
    for w in _WRAPPERS:
        name = name.replace(w, "")
    return name.removeprefix("module.")


@torch.no_grad()
def init_weights(model: nn.Module, seed: int) -> None:
    """GPT-2 initialisation: N(0, 0.02) for weights and embeddings, zero biases, unit
    LayerNorm gains, and residual output projections scaled by 1/sqrt(2 * n_layer).

    Each parameter is drawn whole from a generator seeded by (seed, plain name), so every
    layout starts from the weights `single` starts from. A sharded parameter (a DTensor of
    tensor parallel or FSDP) draws its whole tensor, keeps its own shard and frees the rest:
    at most one parameter is ever whole on a rank (the largest is the token embedding, V x H)."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    n_layer = model.shape.n_layer
    for name, p in model.named_parameters():
        name = plain_name(name)
        if name.endswith(".bias"):
            p.zero_()
            continue
        if ".ln_" in name or name.startswith("ln_f"):
            p.fill_(1.0)
            continue
        std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
        gen = torch.Generator(device=p.device)
        gen.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        if isinstance(p, DTensor):
            whole = torch.empty(p.shape, dtype=p.dtype, device=p.device).normal_(0.0, std, generator=gen)
            # src_data_rank=None: every rank cuts its own shard from its own copy, no communication
            mine = distribute_tensor(whole, p.device_mesh, p.placements, src_data_rank=None).to_local()
            local = p.to_local()
            assert mine.shape == local.shape, f"{name}: shard {tuple(mine.shape)} vs {tuple(local.shape)}"
            local.copy_(mine)
            del whole, mine
        else:
            p.normal_(0.0, std, generator=gen)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(0, 1))


def stage_loss(stage: GPT, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss of a last pipeline stage's output `out` (its forward without targets): logits
    (B, T, V) under the plain head, final hidden states (B, T, C) under the chunked one."""
    if stage.loss_head == "plain":
        return loss_fn(out, targets)
    return linear_cross_entropy(out, stage.wte.weight, targets, stage.loss_head)
