"""The denoisers' fast inference path: the small-batch matmul convolution and the FiLM condition
computed once per chunk must give what the plain computation gives."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from action_head.denoisers import (ConditionalResidualBlock1D, ConditionalUnet1D, Conv1d, Denoiser, MLPDenoiser,
                                  ResidualMLPDenoiser, plain_inference)
from action_head.diffusion import DiffusionHeadConfig
from action_head.flow import FlowHeadConfig
from action_head.base import build_head
from fusion.context import Context


def small_denoisers() -> list[Denoiser]:
    """One small network per kind, with seeded weights: built at collection, they would otherwise take
    whatever state the global generator is left in by the modules collected before (the fast and plain
    U-Net paths agree to float rounding, which some weights amplify past 1e-6 through GroupNorm)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return [ConditionalUnet1D(3, 12, (8, 16), time_embed_dim=8),
                MLPDenoiser(3, 5, 12, hidden=16, n_layers=2, time_embed_dim=8),
                ResidualMLPDenoiser(3, 5, 12, hidden=16, n_blocks=2, time_embed_dim=8)]


@pytest.mark.parametrize("kernel, stride, padding", [(5, 1, 2), (3, 2, 1), (1, 1, 0)])
@pytest.mark.parametrize("batch", [1, 3, Conv1d.MATMUL_MAX_BATCH])
@pytest.mark.parametrize("length", [4, 9, 16])
def test_matmul_convolution_equals_the_library_convolution(kernel, stride, padding, batch, length):
    torch.manual_seed(0)
    reference = nn.Conv1d(6, 5, kernel, stride=stride, padding=padding)
    fast = Conv1d(6, 5, kernel, stride=stride, padding=padding)
    fast.load_state_dict(reference.state_dict())  # the same weights and keys
    x = torch.randn(batch, 6, length)
    with torch.no_grad():
        expected = reference(x)
        got = fast(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)


def test_matmul_convolution_is_taken_without_gradients_at_small_batch_and_in_cpu_bf16_training(monkeypatch):
    conv = Conv1d(4, 4, 3, padding=1)
    calls = []
    monkeypatch.setattr(F, "linear", lambda *args: calls.append(1) or torch.zeros(1, 4, 4))
    with torch.no_grad():
        conv(torch.randn(1, 4, 4))
    assert calls == [1]
    conv(torch.randn(1, 4, 4))  # gradients on, fp32: the library convolution
    with torch.no_grad():
        conv(torch.randn(Conv1d.MATMUL_MAX_BATCH + 1, 4, 4))
    assert calls == [1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(torch.randn(8, 4, 4))  # bf16 training on a CPU: the matmul
    assert calls == [1, 1]


@pytest.mark.parametrize("kernel, stride, padding", [(5, 1, 2), (3, 2, 1), (1, 1, 0)])
def test_matmul_convolution_in_bf16_training_gives_the_library_gradients(kernel, stride, padding):
    """Under CPU bf16 autocast with gradients the matmul path runs: the library's outputs and gradients
    up to bf16 rounding (both multiply bf16 operands and accumulate in fp32)."""
    torch.manual_seed(0)
    reference = nn.Conv1d(32, 16, kernel, stride=stride, padding=padding)
    fast = Conv1d(32, 16, kernel, stride=stride, padding=padding)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(16, 32, 12)
    results = []
    for conv in (reference, fast):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(xi)
        (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append((y.float(), xi.grad, conv.weight.grad, conv.bias.grad))
    for got, expected in zip(results[1], results[0]):
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 0.02 * expected.abs().max()


def test_film_split_into_time_and_condition_equals_the_concatenated_film():
    torch.manual_seed(0)
    block = ConditionalResidualBlock1D(8, 16, time_dim=6, cond_dim=10, kernel_size=3, n_groups=4)
    time, cond = torch.randn(3, 6), torch.randn(3, 10)
    split = F.linear(F.mish(time), block.film[1].weight[:, :6]) + block.film_of_cond(cond)
    assert torch.allclose(split, block.film(torch.cat([time, cond], dim=-1)), atol=1e-6)


def test_unet_checkpoint_keys_are_unchanged():
    """Checkpoints saved before the FiLM split load: one Linear over concat(time, condition) per block."""
    keys = ConditionalUnet1D(2, 8, (8, 16), time_embed_dim=4).state_dict()
    assert keys["down.0.0.film.1.weight"].shape == (2 * 8, 4 + 8)
    assert "down.0.0.conv1.block.0.weight" in keys and "final.1.weight" in keys


@pytest.mark.parametrize("denoiser", small_denoisers(), ids=["unet", "mlp", "resmlp"])
def test_conditioned_denoiser_equals_the_plain_call(denoiser):
    assert isinstance(denoiser, Denoiser)
    torch.manual_seed(1)
    cond = torch.randn(2, 12)
    denoise = denoiser.conditioned(cond)
    for t in (0.0, 37.0, 99.0):  # one condition, many steps
        x, times = torch.randn(2, 5, 3), torch.full((2,), t)
        assert torch.allclose(denoise(x, times), denoiser(x, times, cond), atol=1e-6)


@pytest.mark.parametrize("config", [DiffusionHeadConfig(down_dims=(16, 32)), FlowHeadConfig(down_dims=(16, 32))],
                         ids=["diffusion", "flow"])
def test_fast_inference_path_gives_the_plain_chunk_for_a_fixed_generator(config, monkeypatch):
    torch.manual_seed(0)
    head = build_head(config, 16, 1, chunk_size=6, action_dim=2).eval()
    g = torch.Generator().manual_seed(0)
    context = Context(torch.randn(1, 1, 16, generator=g), torch.randn(1, 3, 16, generator=g),
                      torch.zeros(1, 3, dtype=torch.bool))
    calls = {"conv": 0, "film": 0}
    conv, film = nn.Conv1d._conv_forward, ConditionalResidualBlock1D.film_of_cond
    monkeypatch.setattr(nn.Conv1d, "_conv_forward",
                        lambda self, *a: calls.__setitem__("conv", calls["conv"] + 1) or conv(self, *a))
    monkeypatch.setattr(ConditionalResidualBlock1D, "film_of_cond",
                        lambda self, c: calls.__setitem__("film", calls["film"] + 1) or film(self, c))
    fast = head.predict(context, torch.Generator().manual_seed(5))
    fast_calls = dict(calls)
    calls.update(conv=0, film=0)
    with plain_inference():
        plain = head.predict(context, torch.Generator().manual_seed(5))
    n_blocks = sum(isinstance(m, ConditionalResidualBlock1D) for m in head.modules())
    assert fast_calls["film"] == n_blocks  # once per chunk
    assert calls["film"] == n_blocks * config.num_inference_steps  # the reference: once per step
    assert fast_calls["conv"] == 0 and calls["conv"] > 0  # at batch 1 the fast path runs no library conv
    assert torch.allclose(fast, plain, atol=1e-5)
    assert not torch.equal(fast, head.predict(context, torch.Generator().manual_seed(6)))


@pytest.mark.parametrize("denoiser", small_denoisers(), ids=["unet", "mlp", "resmlp"])
def test_compile_for_inference_runs_the_compiled_step_only_where_asked(denoiser, monkeypatch):
    """After compile_for_inference a sampler's steps go through the compiled ``step`` (its output is the
    eager one's); training's forward and the plain_inference reference stay eager."""
    compiled_calls = []

    def fake_compile(fn):
        return lambda *args: compiled_calls.append(len(args)) or fn(*args)

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch.manual_seed(1)
    cond, x, t = torch.randn(2, 12), torch.randn(2, 5, 3), torch.full((2,), 40.0)
    with torch.no_grad():  # as a sampler runs (the compiled step runs eager with gradients on)
        eager = denoiser.conditioned(cond)(x, t)
        denoiser.compile_for_inference()
        assert not compiled_calls
        denoise = denoiser.conditioned(cond)
        assert torch.equal(denoise(x, t), eager) and torch.equal(denoise(x, t), eager)
        assert compiled_calls == [3, 3]  # (x, t, prepared) at every step
        denoiser(x, t, cond).sum()  # training's call
        assert compiled_calls == [3, 3]
        if isinstance(denoiser, ConditionalUnet1D):  # the reference path stays eager
            with plain_inference():
                assert torch.allclose(denoiser.conditioned(cond)(x, t), eager, atol=1e-6)
            assert compiled_calls == [3, 3]
    denoiser._compiled_step = None  # the parametrized instance is shared with other tests


def test_resmlp_flow_head_learns_to_sample_the_chunk_its_condition_names():
    """Trained on a fixed context -> chunk mapping, the residual MLP's samples land on each context's chunk
    (the condition reaches the output through the FiLM and the input projection, not a mean chunk)."""
    torch.manual_seed(0)
    head = build_head(FlowHeadConfig(denoiser="resmlp", resmlp_width=64, resmlp_blocks=2, num_inference_steps=4),
                      16, 1, chunk_size=4, action_dim=2)
    g = torch.Generator().manual_seed(0)
    context = Context(torch.randn(8, 1, 16, generator=g), torch.randn(8, 3, 16, generator=g),
                      torch.zeros(8, 3, dtype=torch.bool))
    targets = torch.tanh(context.global_vector() @ torch.randn(16, 8, generator=g)).reshape(8, 4, 2)
    pad = torch.zeros(8, 4, dtype=torch.bool)

    def error() -> float:
        with torch.no_grad():
            return (head.eval().predict(context, torch.Generator().manual_seed(1)) - targets).abs().mean().item()

    untrained = error()
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for _ in range(600):
        loss, _ = head.train().loss(context, targets, pad)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    spread = (targets - targets.mean(0)).abs().mean().item()  # what predicting the mean chunk would err by
    assert error() < 0.25 * min(spread, untrained)  # ~0.1 against a spread of 0.8
