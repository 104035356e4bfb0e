"""Token batches, made before the timed window so that data costs nothing inside it.

The data of optimizer step s is a function of (seed, s) alone, laid out as the *global*
batch (grad_accum, dp * batch_size, seq_len + 1); data-parallel rank r takes its rows. So
`single` with batch 2B and `dp` on 2 ranks with batch B train on exactly the same tokens,
which is what lets every strategy be checked against the single-device reference.
"""
from __future__ import annotations

import pydoc
import sys

import torch


def stdlib_text() -> bytes:
    """A corpus every Python has: the documentation of a few standard-library modules."""
    import collections
    import json
    import os
    import pathlib
    import re
    parts = [pydoc.render_doc(m, renderer=pydoc.plaintext) for m in (os, re, json, collections, pathlib)]
    return "\n".join(parts).encode("utf-8")


def load_text(path: str | None) -> torch.Tensor:
    raw = open(path, "rb").read() if path else stdlib_text()
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()  # byte tokens 0..255


def make_batches(kind: str, path: str | None, seed: int, n_steps: int, grad_accum: int,
                 dp: int, dp_rank: int, batch: int, seq_len: int, vocab: int) -> torch.Tensor:
    """(n_steps, grad_accum, batch, seq_len + 1) int64 tokens for this data-parallel rank."""
    corpus = load_text(path) if kind == "text" else None
    if corpus is not None and corpus.numel() <= seq_len + 1:
        raise ValueError(f"the text has {corpus.numel()} bytes; need more than seq_len + 1 = {seq_len + 1}")
    if corpus is not None and vocab < 256:
        raise ValueError(f"data=text uses byte tokens (256) but the model's vocabulary is {vocab}")
    out = torch.empty(n_steps, grad_accum, batch, seq_len + 1, dtype=torch.long)
    g = torch.Generator()
    rows = slice(dp_rank * batch, (dp_rank + 1) * batch)
    for s in range(n_steps):
        g.manual_seed(seed * 1_000_003 + s)
        if corpus is None:
            glob = torch.randint(0, vocab, (grad_accum, dp * batch, seq_len + 1), generator=g)
        else:
            starts = torch.randint(0, corpus.numel() - seq_len - 1, (grad_accum, dp * batch), generator=g)
            glob = corpus[starts.unsqueeze(-1) + torch.arange(seq_len + 1)]
        out[s] = glob[:, rows]
    return out


if __name__ == "__main__":  # pragma: no cover - quick look at the default corpus
    sys.stdout.write(stdlib_text()[:2000].decode())
