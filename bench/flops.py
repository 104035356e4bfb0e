"""Pure arithmetic about the model: parameters, FLOPs per token, the pipeline bubble.

No torch here, so every figure can be checked by hand (tests/test_flops.py does).
Formulas and their sources are in shared/REFERENCE.md; the conventions are:

* parameters (tied embedding, biases, LayerNorms):
      V*H + T_max*H + L*(12*H^2 + 13*H) + 2*H
* matmul parameters N (what multiplies activations; the tied embedding counts once, as the
  output layer):  12*L*H^2 + V*H
* training FLOPs per token (forward + backward, PaLM appendix B; torchtitan and nanoGPT use
  the same form):  6*N + 12*L*H*T, T the sequence length. The attention term does not
  discount causal masking (it counts the full T x T score matrix), as PaLM does not.
"""
from __future__ import annotations

FP32_BYTES = 4


def n_params(L: int, H: int, V: int, T_max: int) -> int:
    """All trainable parameters of the GPT-2-style model (embedding counted once)."""
    return V * H + T_max * H + L * (12 * H * H + 13 * H) + 2 * H


def n_matmul_params(L: int, H: int, V: int) -> int:
    """Parameters that take part in matrix multiplies (the 'N' of 6N)."""
    return 12 * L * H * H + V * H


def flops_per_token(L: int, H: int, V: int, T: int) -> int:
    """Model FLOPs per trained token: 6N + 12*L*H*T."""
    return 6 * n_matmul_params(L, H, V) + 12 * L * H * T


def bubble_fraction(stages: int, microbatches: int, chunks: int = 1) -> float:
    """Ideal pipeline bubble (REFERENCE.md): GPipe and 1F1B (p - 1) / (m + p - 1); interleaved
    1F1B with v chunks per stage (p - 1) / (v*m + p - 1). The naive layer split is m = 1:
    (p - 1) / p, one stage busy at a time."""
    return (stages - 1) / (chunks * microbatches + stages - 1)


def stage_layers(n_layer: int, stages: int) -> list[range]:
    """Contiguous blocks per pipeline stage; the first `n_layer % stages` get one more."""
    base, extra = divmod(n_layer, stages)
    out, start = [], 0
    for s in range(stages):
        n = base + (1 if s < extra else 0)
        out.append(range(start, start + n))
        start += n
    return out
