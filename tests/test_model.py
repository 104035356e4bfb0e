import math

import pytest
import torch

from bench import flops
from bench.model import GPT, GPTShape, build_model, loss_fn
from bench.flops import stage_layers

MINI = GPTShape(n_layer=4, n_head=4, n_embd=128, vocab_size=512, block_size=256)


def test_forward_shapes_and_initial_loss_near_ln_vocab():
    model = build_model(MINI, torch.device("cpu"), seed=0)
    x = torch.randint(0, MINI.vocab_size, (2, 64))
    logits = model(x)
    assert logits.shape == (2, 64, MINI.vocab_size)
    loss = loss_fn(logits, torch.randint(0, MINI.vocab_size, (2, 64)))
    # GPT-2 init gives near-uniform predictions: loss within a few % of ln(V)
    assert abs(loss.item() - math.log(MINI.vocab_size)) < 0.05 * math.log(MINI.vocab_size)


def test_attention_is_causal():
    model = build_model(MINI, torch.device("cpu"), seed=0)
    x = torch.randint(0, MINI.vocab_size, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % MINI.vocab_size  # change only the future of position 9
    torch.testing.assert_close(model(x)[0, :10], model(y)[0, :10])
    assert not torch.allclose(model(x)[0, 10:], model(y)[0, 10:])


def test_output_layer_is_tied_to_embedding():
    model = build_model(MINI, torch.device("cpu"), seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert "wte.weight" in names and not any("lm_head" in n for n in names)


def test_small_parameter_count_matches_hand_count():
    # GPT-2 small with the padded vocab 50304, counted by hand:
    # wte 50304*768 = 38,633,472; wpe 1024*768 = 786,432;
    # per block 12*768^2 + 13*768 = 7,087,872, x12 = 85,054,464; ln_f 2*768 = 1,536
    hand = 38_633_472 + 786_432 + 85_054_464 + 1_536
    assert hand == 124_475_904
    with torch.device("meta"):
        model = GPT(GPTShape(12, 12, 768, 50304, 1024))
    assert sum(p.numel() for p in model.parameters()) == hand
    assert flops.n_params(12, 768, 50304, 1024) == hand
    # with GPT-2's own vocabulary this is the published 124,439,808 (REFERENCE.md)
    assert flops.n_params(12, 768, 50257, 1024) == 124_439_808


def test_built_on_meta_then_materialised_deterministically():
    a = build_model(MINI, torch.device("cpu"), seed=3)
    b = build_model(MINI, torch.device("cpu"), seed=3)
    c = build_model(MINI, torch.device("cpu"), seed=4)
    for (n, p), (_, q), (_, r) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert p.device.type == "cpu"
        torch.testing.assert_close(p, q)
        if n.endswith("weight") and p.dim() == 2:
            assert not torch.equal(p, r)
    # GPT-2 init: residual projections scaled by 1/sqrt(2L)
    std = a.layers["0"].mlp.proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(2 * MINI.n_layer), rel=0.1)


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_pipeline_stages_hold_the_same_weights_as_the_full_model(stages):
    full = build_model(MINI, torch.device("cpu"), seed=0)
    ref = dict(full.named_parameters())
    x = torch.randint(0, MINI.vocab_size, (2, 32))
    h = x
    for i, layers in enumerate(stage_layers(MINI.n_layer, stages)):
        stage = build_model(MINI, torch.device("cpu"), seed=0, layers=layers,
                            first=i == 0, last=i == stages - 1)
        for n, p in stage.named_parameters():
            torch.testing.assert_close(p, ref[n], msg=n)
        h = stage(h)
    torch.testing.assert_close(h, full(x))  # stages chained = the full model
