"""Minimal trainers people use, for `bench.perf --references` to hold the suite's trainer against.

* `nanogpt`: the architecture of Karpathy's nanoGPT (`model.py`): one fused Q/K/V projection
  (`c_attn`, C -> 3C), causal `scaled_dot_product_attention`, a tanh-GELU MLP, pre-LayerNorm
  blocks, the token embedding tied to the output layer, the whole logits and `F.cross_entropy`;
  AdamW with weight decay on matrices as nanoGPT's `configure_optimizers` sets it (its fused
  kernel on CUDA only, so the foreach one here on a CPU). Written here from that description.
* `hf-gpt2`: Hugging Face's `GPT2LMHeadModel` (dropout off), its own loss (labels shifted
  inside), AdamW; only where `transformers` is installed (it is not a dependency).

Same shape, batch, data (`data.make_batches`), threads, pinning and loop as the bare loop
(bench/bare.py `run_loop`). Each returns the measured step times (s).
"""
from __future__ import annotations

import math

from bench.spec import RunSpec

REFERENCES = ("nanogpt", "hf-gpt2")


def available(name: str) -> str | None:
    """None when reference `name` can run here, else why not."""
    if name == "hf-gpt2":
        import importlib.util
        if importlib.util.find_spec("transformers") is None:
            return "transformers is not installed (pip install transformers to include it)"
    return None


def _nanogpt(spec: RunSpec):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    s = spec.shape

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(s.n_embd), nn.LayerNorm(s.n_embd)
            self.c_attn, self.c_proj = nn.Linear(s.n_embd, 3 * s.n_embd), nn.Linear(s.n_embd, s.n_embd)
            self.c_fc, self.mlp_proj = nn.Linear(s.n_embd, 4 * s.n_embd), nn.Linear(4 * s.n_embd, s.n_embd)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)  # (B, T, C) each
            q, k, v = (t.view(B, T, s.n_head, C // s.n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + self.c_proj(y)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(s.vocab_size, s.n_embd), nn.Embedding(s.block_size, s.n_embd)
            self.h = nn.ModuleList(Block() for _ in range(s.n_layer))
            self.ln_f = nn.LayerNorm(s.n_embd)
            for n, p in self.named_parameters():  # GPT-2 initialisation
                if p.dim() >= 2:
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * s.n_layer) if n.endswith("proj.weight") else 0.02)
                elif n.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for b in self.h:
                x = b(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied output layer: (B, T, V)
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(0, 1))

    torch.manual_seed(spec.seed)
    model = GPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=spec.lr, betas=(0.9, 0.95), foreach=True)
    return lambda x, y: model(x, y), opt


def _hf_gpt2(spec: RunSpec):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    s = spec.shape
    cfg = GPT2Config(vocab_size=s.vocab_size, n_positions=s.block_size, n_embd=s.n_embd, n_layer=s.n_layer,
                     n_head=s.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(spec.seed)
    model = GPT2LMHeadModel(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.1)
    # labels = the inputs: the model shifts them by one inside; the same tokens as x plus the last target
    return lambda x, y: model(input_ids=torch.cat([x, y[:, -1:]], 1), labels=torch.cat([x, y[:, -1:]], 1)).loss, opt


def reference_loop(name: str, spec: RunSpec) -> list[float]:
    """Warm-up + measured steps of reference trainer `name` on `spec`'s shape, batch, data,
    precision and threads (CPU), in the bare loop's own loop (bench.bare.run_loop). Returns
    the measured step times (s)."""
    from bench.bare import run_loop
    build = {"nanogpt": _nanogpt, "hf-gpt2": _hf_gpt2}[name]
    return run_loop(spec, lambda spec, device: build(spec))[0]
