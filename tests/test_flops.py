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
