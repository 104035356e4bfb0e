import torch

from bench.data import make_batches


def test_dp_ranks_split_the_single_batch():
    one = make_batches("synthetic", None, 0, 3, 2, 1, 0, 8, 16, 100)
    halves = [make_batches("synthetic", None, 0, 3, 2, 2, r, 4, 16, 100) for r in range(2)]
    torch.testing.assert_close(torch.cat(halves, dim=2), one)


def test_grad_accum_sees_the_same_tokens_as_one_big_batch():
    big = make_batches("synthetic", None, 0, 2, 1, 1, 0, 8, 16, 100)
    acc = make_batches("synthetic", None, 0, 2, 2, 1, 0, 4, 16, 100)
    torch.testing.assert_close(acc.reshape(2, 1, 8, 17), big)


def test_seeded_and_in_range():
    a = make_batches("synthetic", None, 1, 2, 1, 1, 0, 4, 8, 50)
    assert torch.equal(a, make_batches("synthetic", None, 1, 2, 1, 1, 0, 4, 8, 50))
    assert not torch.equal(a, make_batches("synthetic", None, 2, 2, 1, 1, 0, 4, 8, 50))
    assert a.min() >= 0 and a.max() < 50


def test_text_is_byte_tokens(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("hello world, " * 20)
    b = make_batches("text", str(p), 0, 1, 1, 1, 0, 2, 8, 256)
    row = bytes(b[0, 0, 0].tolist()).decode()
    assert row in "hello world, " * 20
    default = make_batches("text", None, 0, 1, 1, 1, 0, 2, 8, 256)  # standard-library docs
    assert default.max() < 256
