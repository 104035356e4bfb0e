"""The memory model's terms, checked by hand (bench/memory.py). The measured side is
tests/test_memory.py."""
import pytest

from bench import memory
from bench.memory import activation_bytes_per_layer as act
from bench.memory import estimate_memory, pipeline_in_flight
from conftest import plan

# mini: L=4, H=128, V=512, T_max=256 -> 891,648 parameters; one block 12*128^2 + 13*128
BLOCK, ROOT, N = 198_272, 512 * 128 + 256 * 128, 891_648
MINI = dict(L=4, H=128, V=512, T_max=256, seq=128, micro_batch=8, layers_on_device=4, first=True, last=True)
SBH = 128 * 8 * 128


def test_activations_per_layer_by_hand():
    # fp32: x, x2 (8) + h1, h2 (8) + q, k, v (12) + attention out (4; W^O's reshape is a view)
    # + MLP 4H twice (32) = 64
    assert act(128, 8, 128) == SBH * 64
    # autocast: x, x2 fp32 (8) + three casts of h1 and one of h2 (8) + half of the rest (24) = 40
    assert act(128, 8, 128, compute_bytes=2) == SBH * 40
    # FSDP's mixed precision makes the stream 2-byte: on a CPU x, x2, h1, h2 at 2 bytes (8) + 24
    assert act(128, 8, 128, compute_bytes=2, stream_bytes=2) == SBH * 32
    # on CUDA LayerNorm keeps fp32 casts of its inputs (8) and its outputs are cast as under autocast (8)
    assert act(128, 8, 128, compute_bytes=2, stream_bytes=2, device="cuda") == SBH * 40
    # tensor parallel splits the attention and MLP tensors only; sequence parallel also x, x2
    assert act(128, 8, 128, tp=2) == SBH * (16 + 48 // 2)
    assert act(128, 8, 128, tp=2, sequence_parallel=True) == SBH * (8 + (48 + 8) // 2)


def test_full_model_by_hand():
    e = estimate_memory(**MINI)
    assert e.params_bytes + e.grads_bytes + e.optimizer_bytes == N * 16  # AdamW fp32: 16 bytes/parameter
    assert e.activations_bytes == 4 * SBH * 64
    assert e.logits_bytes == 3 * 8 * 128 * 512 * 4  # log-softmax + its gradient + the logits' gradient
    assert e.buffers_bytes == 512 * 128 * 4  # one module holds the tied embedding: its 2nd gradient
    assert e.runtime_bytes == 0  # a CPU rank's runtime is measured (mem_baseline_bytes), not modelled
    assert e.model_bytes == e.total_bytes == N * 16 + e.activations_bytes + e.logits_bytes + e.buffers_bytes


def test_fsdp_buffers_by_hand():
    e = estimate_memory(**MINI, shard=2, fsdp_reshard=True)
    assert e.params_bytes == N * 4 // 2
    # root gathered + the running block and the prefetched next + one block's fp32 gradient
    # before its reduce-scatter + the tied embedding's second gradient
    assert e.buffers_bytes == ROOT * 4 + 2 * BLOCK * 4 + BLOCK * 4 + 512 * 128 * 4
    keep = estimate_memory(**MINI, shard=2, fsdp_reshard=False)
    assert keep.buffers_bytes == ROOT * 4 + 4 * BLOCK * 4 + BLOCK * 4 + 512 * 128 * 4
    # FSDP's mixed precision gathers 2-byte weights and adds no autocast copies; a block's
    # gradient is 2-byte, with its fp32 copy for the reduce-scatter
    mixed = estimate_memory(**MINI, shard=2, fsdp_reshard=True, compute_bytes=2, fsdp_mixed=True)
    assert mixed.buffers_bytes == ROOT * 2 + 2 * BLOCK * 2 + BLOCK * (4 + 2) + 512 * 128 * 2
    assert mixed.activations_bytes == 4 * SBH * 32  # the residual stream is 2-byte too
    # FSDP2 gathers into its own buffers at dp = 1 too
    assert estimate_memory(**MINI, shard=1, fsdp_reshard=True).buffers_bytes == e.buffers_bytes


def test_autocast_weight_copies_and_logits():
    bf = estimate_memory(**MINI, compute_bytes=2)
    # copies of what F.linear multiplies: the blocks' matrices and the tied output layer (not wpe)
    assert bf.buffers_bytes == (4 * BLOCK + 512 * 128) * 2 + 512 * 128 * 4
    assert bf.logits_bytes == 3 * 8 * 128 * 512 * 4 + 8 * 128 * 512 * 2  # and the 2-byte logits


def test_pipeline_stages_and_schedules():
    mid = estimate_memory(12, 768, 50304, 1024, 256, 8, 4, False, False)
    full = estimate_memory(12, 768, 50304, 1024, 256, 8, 12, True, True)
    assert mid.logits_bytes == 0 and mid.total_bytes < full.total_bytes / 3
    # GPipe: every micro-batch in flight; its last stage keeps each one's logits (and the
    # schedule's copy of its output) until backward
    last = estimate_memory(**{**MINI, "first": False}, in_flight=4, logits_in_flight=4, keeps_outputs=True)
    assert last.logits_bytes == (4 + 2) * 8 * 128 * 512 * 4 + 4 * 8 * 128 * 512 * 4
    assert last.activations_bytes == 4 * 4 * SBH * 64
    # several micro-steps: a second copy of the largest gradient while it is accumulated
    assert estimate_memory(**{**MINI, "first": False, "last": False}, microsteps=2).buffers_bytes == 4 * 128 * 128 * 4


@pytest.mark.parametrize("schedule,m,p,stage,v,expected", [
    ("naive", 1, 4, 0, 1, 1), ("gpipe", 8, 4, 3, 1, 8),
    ("1f1b", 8, 4, 0, 1, 4), ("1f1b", 8, 4, 3, 1, 1), ("1f1b", 2, 4, 0, 1, 2),
    # interleaved, v=2, p=4: rank 0 warms up (2-1)*4 + 2*(4-1) = 10 chunk forwards, +1 in steady state
    ("interleaved", 8, 4, 0, 2, 11 / 2), ("interleaved", 8, 4, 3, 2, 5 / 2), ("interleaved", 2, 4, 0, 2, 4 / 2),
])
def test_in_flight_by_schedule(schedule, m, p, stage, v, expected):
    assert pipeline_in_flight(schedule, m, p, stage, v) == expected


def test_checkpointing_keeps_block_inputs():
    e = estimate_memory(**MINI, checkpointing=True)
    assert e.activations_bytes == 4 * SBH * 4 + SBH * 64  # each block's fp32 input + one block recomputed


def test_predict_memory_reads_the_layout():
    common = ("accelerator=cpu", "size=small", "seq_len=128", "batch_size=2", "oversubscribe=true")
    single = memory.predict_memory(plan(*common, "strategy=single", "precision=fp32"))
    fsdp = memory.predict_memory(plan(*common, "strategy=fsdp", "devices=2", "precision=fp32"))
    fsdp_bf16 = memory.predict_memory(plan(*common, "strategy=fsdp", "devices=2", "precision=bf16"))
    assert fsdp.params_bytes * 2 == single.params_bytes
    assert fsdp_bf16.model_bytes < fsdp.model_bytes  # bf16: smaller activations, 2-byte gathers, no extra copy
    gpipe = memory.predict_memory(plan(*common, "strategy=mp", "devices=2", "strategy.schedule=gpipe",
                                       "strategy.microbatches=2", "precision=fp32"))
    assert gpipe.logits_bytes > 0  # the most loaded stage is the last here


def test_vocab_parallel_splits_the_tied_matrix_and_the_head_by_tp():
    tp = dict(MINI, tp=2)
    whole, vp = estimate_memory(**tp), estimate_memory(**tp, vocab_parallel=True)
    # state: 16 bytes per parameter, the 512 x 128 matrix halved
    assert (whole.params_bytes - vp.params_bytes) * 4 == 256 * 128 * 16
    # the head: one chunk of all 1,024 tokens' 256 logits (fp32), and the gradients forward made:
    # the matrix slice's (256 x 128) and the hidden states' (1,024 x 128), fp32
    assert vp.logits_bytes == 1024 * 256 * 4 + (256 * 128 + 1024 * 128) * 4
    assert vp.buffers_bytes == 256 * 128 * 4  # the tied slice's second gradient (input and output side)
    chunked = estimate_memory(**tp, vocab_parallel=True, chunked_head=True)
    assert chunked.logits_bytes == vp.logits_bytes  # 1,024 tokens: one chunk either way
    # through the planner: strategy=tp splits it unless told not to
    assert plan("strategy=tp", "devices=2").layout.vocab_parallel
    assert not plan("strategy=tp", "devices=2", "strategy.vocab_parallel=false").layout.vocab_parallel
    assert not plan("strategy=tp", "devices=1").layout.vocab_parallel  # tp = 1: nothing to split
    assert memory.predict_memory(plan("strategy=tp", "devices=2")).total_bytes \
        < memory.predict_memory(plan("strategy=tp", "devices=2", "strategy.vocab_parallel=false")).total_bytes
