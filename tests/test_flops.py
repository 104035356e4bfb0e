import pytest

from bench import flops


def test_flops_per_token_gpt2_small_by_hand():
    # N = 12*L*H^2 + V*H = 12*12*768^2 + 50304*768 = 84,934,656 + 38,633,472
    n = 84_934_656 + 38_633_472
    assert flops.n_matmul_params(12, 768, 50304) == n
    # 6N + 12*L*H*T at T=1024: 741,408,768 + 113,246,208
    assert flops.flops_per_token(12, 768, 50304, 1024) == 741_408_768 + 113_246_208


def test_bubble_fraction():
    assert flops.bubble_fraction(4, 8) == pytest.approx(3 / 11)  # (p-1) / (m+p-1)
    assert flops.bubble_fraction(1, 8) == 0
    assert flops.bubble_fraction(2, 1) == pytest.approx(1 / 2)  # naive split: (p-1)/p
    assert flops.bubble_fraction(2, 4, chunks=2) == pytest.approx(1 / 9)  # interleaved: (p-1) / (v*m+p-1)


def test_stage_layers_balanced_and_contiguous():
    assert [len(r) for r in flops.stage_layers(12, 5)] == [3, 3, 2, 2, 2]
    assert [r.start for r in flops.stage_layers(12, 5)] == [0, 3, 6, 8, 10]


def test_activation_bytes_korthikanti():
    # s=1024, b=1, h=768, a=12, 2-byte activations, unfused: s*b*h*(34 + 5*a*s/h) = 1024*768*114
    assert flops.activation_bytes_per_layer(1024, 1, 768, 12, 2, fused_attention=False) == 1024 * 768 * 114
    # fused attention drops the a*s^2 term; fp32 doubles
    assert flops.activation_bytes_per_layer(1024, 1, 768, 12, 4) == 1024 * 768 * 34 * 2


def test_memory_estimate_full_model_by_hand():
    # mini: L=4, H=128, V=512, T_max=256 -> 891,648 parameters, 16 bytes each with AdamW fp32
    e = flops.estimate_memory(4, 128, 512, 256, 4, seq=128, micro_batch=8, layers_on_device=4,
                              first=True, last=True)
    assert e.params_bytes == 891_648 * 4
    assert e.params_bytes + e.grads_bytes + e.optimizer_bytes == 891_648 * 16
    assert e.activations_bytes == 4 * 128 * 8 * 128 * 34 * 2
    assert e.logits_bytes == 3 * 8 * 128 * 512 * 4
    assert e.runtime_bytes == 128 * 2**20


def test_memory_estimate_pipeline_stage_holds_less():
    full = flops.estimate_memory(12, 768, 50304, 1024, 12, 256, 8, 12, True, True)
    mid = flops.estimate_memory(12, 768, 50304, 1024, 12, 256, 8, 4, False, False)
    assert mid.total_bytes < full.total_bytes / 3
    assert mid.logits_bytes == 0


def test_fsdp_and_autocast_buffers_by_hand():
    # mini: block = 12*128^2 + 13*128 = 198,272 params; root = 512*128 + 256*128 = 98,304
    block, root = 198_272, 98_304
    e = flops.estimate_memory(4, 128, 512, 256, 4, 128, 8, 4, True, True, shard=2, fsdp_reshard=True)
    assert e.params_bytes == 891_648 * 4 // 2
    # root gathered + this block and the prefetched next (fp32) + one block's full fp32 gradient
    assert e.buffers_bytes == root * 4 + 2 * block * 4 + block * 4
    keep = flops.estimate_memory(4, 128, 512, 256, 4, 128, 8, 4, True, True, shard=2, fsdp_reshard=False)
    assert keep.buffers_bytes == root * 4 + 4 * block * 4 + block * 4
    # bf16 autocast caches 2-byte copies of the weights
    bf = flops.estimate_memory(4, 128, 512, 256, 4, 128, 8, 4, True, True, compute_bytes=2)
    assert bf.buffers_bytes == (4 * block + root) * 2


def test_sequence_parallel_splits_the_rest_of_the_activations():
    tp = flops.estimate_memory(4, 128, 512, 256, 4, 128, 8, 4, True, True, tp=2)
    sp = flops.estimate_memory(4, 128, 512, 256, 4, 128, 8, 4, True, True, tp=2, sequence_parallel=True)
    # per layer s*b*h*(10 + 24/t) vs s*b*h*(10/t + 24/t), 4-byte activations (x2 of 2-byte units)
    assert tp.activations_bytes == 4 * 128 * 8 * 128 * 22 * 2
    assert sp.activations_bytes == 4 * 128 * 8 * 128 * 17 * 2
