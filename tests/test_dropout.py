"""The cheap CPU dropout draws the right masks, scales without bias, and replaces PyTorch's in the model."""

import math

import pytest
import torch
from torch import nn

from action_head.autoregressive import AutoregressiveHead, AutoregressiveHeadConfig
from action_head.regression import RegressionHead, RegressionHeadConfig
from core.dropout import Dropout, dropout, use_cheap_dropout
from fusion.transformer import FusionConfig, FusionTransformer

N = 400_000


def within_binomial(count: int, n: int, p: float, z: float = 5.0) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_and_scale(p):
    torch.manual_seed(0)
    y = dropout(torch.ones(N), p)
    dropped = int((y == 0).sum())
    assert within_binomial(dropped, N, p)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-4)


def test_neighbouring_masks_are_independent():
    """Four masks come from one 64-bit draw: pairs of neighbours must still be kept at (1-p)^2."""
    torch.manual_seed(1)
    keep = dropout(torch.ones(N), 0.5) != 0
    for offset in (1, 2, 3, 4):
        both = int((keep[:-offset] & keep[offset:]).sum())
        assert within_binomial(both, N - offset, 0.25)


def test_unbiased_in_bf16_and_keeps_dtype():
    torch.manual_seed(2)
    x = torch.full((N,), 0.37, dtype=torch.bfloat16)
    y = dropout(x, 0.1)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    # The scale 1/0.9 rounded to bf16 would bias the mean by 0.16%; the mask's own noise is ~0.05%.
    assert y.double().mean().item() == pytest.approx(x.double().mean().item(), rel=3e-3)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(3)
    x = torch.randn(3, 5, 7, requires_grad=True)
    y = dropout(x, 0.3)
    y.sum().backward()
    expected = (y != 0).float() / (1 - 0.3)
    assert torch.allclose(x.grad, expected, rtol=1e-5)


def test_identity_in_eval_mode_and_at_zero_and_rejects_bad_p():
    x = torch.randn(4, 8)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    module = Dropout(0.5).eval()
    assert module(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, 1.0)


def test_odd_sizes():
    for shape in [(0,), (1,), (3, 5), (2, 3, 7)]:
        assert dropout(torch.ones(shape), 0.2).shape == shape


def test_model_components_use_it():
    """No PyTorch nn.Dropout is left in the fusion or the heads that have dropout, with p preserved."""
    modules = [
        FusionTransformer(FusionConfig(dropout=0.1), d_model=32),
        AutoregressiveHead(AutoregressiveHeadConfig(n_heads=2, n_layers=1, dropout=0.2), 32, 1, 2, 2),
        RegressionHead(RegressionHeadConfig(dropout=0.3), 32, 1, 2, 2),
    ]
    for module, p in zip(modules, [0.1, 0.2, 0.3]):
        drops = [m for m in module.modules() if isinstance(m, nn.Dropout)]
        assert drops and all(type(m) is Dropout and m.p == p for m in drops)


def test_replacement_follows_the_parents_mode():
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(16, 2, 32, 0.1, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    before = layer(x)
    assert torch.equal(use_cheap_dropout(layer)(x), before)
    assert not torch.equal(layer.train()(x), before)  # and the replacements do drop in training
