"""The diffusion and flow samplers, checked against exact (closed-form) denoisers.

With the true noise of a known distribution plugged in, a correct sampler must reproduce that
distribution; so these tests isolate the sampler from any network training.
"""

import pytest
import torch

from action_head.base import build_head
from action_head.denoisers import Denoiser
from action_head.diffusion import DiffusionHeadConfig
from action_head.flow import FlowHeadConfig, euler_integrate
from action_head.noise_schedule import NoiseSchedule
from core.configuration import ConfigError
from fusion.context import Context

MODES = torch.tensor([-0.5, 0.5])
MODE_STD = 0.05
N_SAMPLES = 2000


def mixture_x0(schedule: NoiseSchedule):
    """The exact E[x0 | x_t] for x0 ~ 0.5 N(-0.5, 0.05^2) + 0.5 N(0.5, 0.05^2).

    Given component k, x_t ~ N(sqrt(abar) mu_k, abar s^2 + 1 - abar); the components' posterior
    weights follow by Bayes (equal priors and variances, so only the squared distance matters);
    E[x0 | x_t, k] = mu_k + sqrt(abar) s^2 / var (x_t - sqrt(abar) mu_k).
    """

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = schedule.alphas_cumprod[t.long()].reshape(-1, 1, 1, 1)
        var = abar * MODE_STD**2 + 1 - abar
        offset = x[..., None] - abar.sqrt() * MODES  # (B, H, A, 2)
        weights = torch.softmax(-0.5 * offset**2 / var, dim=-1)
        x0_given_k = MODES + abar.sqrt() * MODE_STD**2 / var * offset
        return (weights * x0_given_k).sum(-1)

    return denoise


def mixture_eps(schedule: NoiseSchedule):
    """The exact epsilon of the same mixture: eps = (x_t - sqrt(abar) E[x0 | x_t]) / sqrt(1 - abar)."""
    x0_fn = mixture_x0(schedule)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = schedule.alphas_cumprod[t.long()].reshape(-1, 1, 1)
        return (x - abar.sqrt() * x0_fn(x, t)) / (1 - abar).sqrt()

    return denoise


def looks_like_mixture(samples: torch.Tensor, min_near: float = 0.9) -> bool:
    """Both modes in near-equal proportion, and at least ``min_near`` of the samples within
    0.15 (3 std) of a mode."""
    samples = samples.flatten()
    upper = (samples > 0).float().mean().item()
    near = ((samples[:, None] - MODES).abs().min(dim=1).values < 0.15).float().mean().item()
    return 0.4 <= upper <= 0.6 and near >= min_near


def draw(schedule: NoiseSchedule, method: str, seed: int = 0, num_steps: int = 10) -> torch.Tensor:
    """Samples with the exact denoiser of what ``schedule`` predicts (noise or clean sample)."""
    exact = mixture_eps(schedule) if schedule.prediction_type == "epsilon" else mixture_x0(schedule)
    return schedule.sample(exact, (N_SAMPLES, 1, 1), torch.Generator().manual_seed(seed),
                           num_steps=num_steps, method=method)


def test_cosine_schedule_reaches_noise():
    assert NoiseSchedule(100, "squaredcos_cap_v2").alphas_cumprod[-1] < 1e-3


def test_linear_schedule_with_100_steps_is_rejected():
    with pytest.raises(ConfigError, match="never reaches noise"):
        NoiseSchedule(100, "linear")
    with pytest.raises(ConfigError, match="never reaches noise"):
        DiffusionHeadConfig(beta_schedule="linear")


def test_ddim_trailing_timesteps():
    schedule = NoiseSchedule(100)
    assert schedule.ddim_timesteps(10) == [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]
    assert schedule.ddim_timesteps(100) == list(range(99, -1, -1))


# Measured: ddpm puts ~100% of samples within 0.15 of a mode; 10-step ddim ~95.5% (seeds 0-5:
# 95.1-96.1%), its discretization error leaves a few trajectories between the modes. A broken
# sampler scores ~0%, so 0.9 keeps a margin without losing the power to fail.
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
@pytest.mark.parametrize("method, min_near", [("ddim", 0.9), ("ddpm", 0.97)])
def test_sampler_recovers_both_modes(method, min_near, prediction_type):
    samples = draw(NoiseSchedule(100, prediction_type=prediction_type), method)
    assert samples.shape == (N_SAMPLES, 1, 1)
    assert looks_like_mixture(samples, min_near)


@pytest.mark.parametrize("method, num_steps", [("ddim", 1), ("ddim", 2), ("ddim", 10), ("ddpm", 100)])
def test_noise_and_sample_prediction_draw_the_same_samples(method, num_steps):
    """The exact noise and the exact clean sample are one denoiser written two ways: from the same
    generator both samplers must land on the same samples, at any number of steps. Up to float32
    rounding, which the noise path divides by sqrt(alpha-bar) = 5e-4 at t = 99 (measured: 4.6e-4 at
    1 step, 2.5e-5 at 2, 3.6e-6 at 10; a wrong conversion is off by tenths)."""
    by_noise = draw(NoiseSchedule(100, prediction_type="epsilon"), method, num_steps=num_steps)
    by_sample = draw(NoiseSchedule(100, prediction_type="sample"), method, num_steps=num_steps)
    assert torch.allclose(by_noise, by_sample, atol=1e-3 if num_steps == 1 else 1e-4)


def test_check_fails_for_a_broken_sampler(monkeypatch):
    """The mixture check must catch a plausible bug: a DDIM step whose x0 estimate drops x_t."""

    def broken_x0(self, x, prediction, t):
        abar = self._abar(t)
        return (-(1 - abar).sqrt() * prediction / abar.sqrt()).clamp(-1, 1)  # should be (x - sqrt(1-abar) eps) / ...

    schedule = NoiseSchedule(100)
    assert looks_like_mixture(draw(schedule, "ddim"))
    monkeypatch.setattr(NoiseSchedule, "_predict_x0", broken_x0)
    assert not looks_like_mixture(draw(schedule, "ddim"))


def test_one_ddim_step_from_sample_prediction_is_the_denoisers_estimate():
    """At 1 DDIM step the chunk is the network's clean-sample output at t = T-1, clipped: nothing of
    the noise survives (with epsilon, the estimate would be divided by sqrt(alpha-bar) = 5e-4)."""
    schedule = NoiseSchedule(100, prediction_type="sample")
    calls = []

    def constant(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        return torch.full_like(x, 0.25)

    out = schedule.sample(constant, (8, 4, 2), torch.Generator().manual_seed(0), num_steps=1)
    assert len(calls) == 1 and torch.equal(calls[0], torch.full((8,), 99.0))
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-6)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_sampler_is_deterministic_for_a_seed(method):
    schedule = NoiseSchedule(100)
    assert torch.equal(draw(schedule, method, seed=3), draw(schedule, method, seed=3))
    assert not torch.equal(draw(schedule, method, seed=3), draw(schedule, method, seed=4))


def tiny_context(batch: int, n_queries: int = 2, d_model: int = 8) -> Context:
    generator = torch.Generator().manual_seed(0)
    return Context(torch.randn(batch, n_queries, d_model, generator=generator),
                   torch.randn(batch, 3, d_model, generator=generator), torch.zeros(batch, 3, dtype=torch.bool))


class ExactMixtureEps(Denoiser):
    """Stands in for a trained denoiser: the closed-form epsilon, ignoring the condition."""

    def __init__(self, schedule: NoiseSchedule):
        super().__init__()
        self.eps = mixture_eps(schedule)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.eps(x, t)


def test_diffusion_head_predict_with_exact_denoiser():
    head = build_head(DiffusionHeadConfig(denoiser="mlp", mlp_hidden=8, mlp_layers=1), 8, 2, chunk_size=4,
                      action_dim=1)
    head.denoiser = ExactMixtureEps(head.schedule)
    actions = head.predict(tiny_context(500), torch.Generator().manual_seed(0))
    assert actions.shape == (500, 4, 1)
    assert looks_like_mixture(actions)


class Zero(Denoiser):
    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_diffusion_loss_regresses_what_the_head_predicts(prediction_type):
    """A denoiser that outputs 0 scores the mean square of its target: the unit noise for "epsilon",
    the actions (0.5 everywhere, so 0.25) for "sample"."""
    torch.manual_seed(0)
    head = build_head(DiffusionHeadConfig(denoiser="mlp", mlp_hidden=8, mlp_layers=1, prediction_type=prediction_type),
                      8, 2, chunk_size=16, action_dim=4)
    head.denoiser = Zero()
    loss, _ = head.loss(tiny_context(256), torch.full((256, 16, 4), 0.5), torch.zeros(256, 16, dtype=torch.bool))
    if prediction_type == "sample":
        assert loss.item() == pytest.approx(0.25, abs=1e-6)
    else:
        assert loss.item() == pytest.approx(1.0, abs=0.02)


class ExactPointVelocity(Denoiser):
    """The optimal velocity on the linear path when every target is the point c: (c - x_t) / (1 - t)."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = t / 100.0  # the head passes flow time scaled by 100
        return (self.c - x) / (1 - t).reshape(-1, 1, 1)


def test_euler_integration_of_exact_velocity_lands_on_target():
    c = 0.3
    noise = torch.randn(256, 4, 2, generator=torch.Generator().manual_seed(0))
    x = euler_integrate(lambda x, t: (c - x) / (1 - t).reshape(-1, 1, 1), noise, num_steps=10)
    assert torch.allclose(x, torch.full_like(x, c), atol=1e-5)


def test_flow_head_predict_with_exact_velocity():
    head = build_head(FlowHeadConfig(denoiser="mlp", mlp_hidden=8, mlp_layers=1, num_inference_steps=7), 8, 2,
                      chunk_size=4, action_dim=2)
    head.denoiser = ExactPointVelocity(0.3)
    context = tiny_context(64)
    actions = head.predict(context, torch.Generator().manual_seed(1))
    assert actions.shape == (64, 4, 2)
    assert torch.allclose(actions, torch.full_like(actions, 0.3), atol=1e-4)
    assert torch.equal(actions, head.predict(context, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("config", [
    DiffusionHeadConfig(down_dims=(12, 24)),
    DiffusionHeadConfig(denoiser="mlp", mlp_hidden=32, sampler="ddpm", num_train_steps=20),
    DiffusionHeadConfig(down_dims=(12, 24), prediction_type="sample", num_inference_steps=2),
    FlowHeadConfig(down_dims=(12, 24)),
    FlowHeadConfig(denoiser="mlp", mlp_hidden=32),
    DiffusionHeadConfig(denoiser="resmlp", resmlp_width=16, resmlp_blocks=2),
    FlowHeadConfig(denoiser="resmlp", resmlp_width=16, resmlp_blocks=2),
], ids=["diffusion-unet", "diffusion-mlp-ddpm", "diffusion-unet-sample", "flow-unet", "flow-mlp",
        "diffusion-resmlp", "flow-resmlp"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_head_trains_and_predicts(config, autocast):
    """Every parameter gets a gradient, also under bf16 autocast; odd H exercises the U-Net padding."""
    torch.manual_seed(0)
    head = build_head(config, d_model=8, n_queries=2, chunk_size=5, action_dim=3)
    context = tiny_context(4)
    actions = torch.rand(4, 5, 3) * 2 - 1
    action_is_pad = torch.zeros(4, 5, dtype=torch.bool)
    action_is_pad[0, 3:] = True
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, metrics = head.loss(context, actions, action_is_pad)
        predicted = head.predict(context, torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and isinstance(metrics["mse"], float)
    no_grad = [name for name, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad
    assert predicted.shape == (4, 5, 3) and predicted.dtype == torch.float32
    assert predicted.abs().max() <= 1.0


def test_config_validation():
    with pytest.raises(ConfigError, match="num_inference_steps"):
        DiffusionHeadConfig(num_train_steps=100, num_inference_steps=101)
    with pytest.raises(ConfigError, match="unet, mlp"):
        DiffusionHeadConfig(denoiser="transformer")
    with pytest.raises(ConfigError, match="prediction_type 'x0' is not one of epsilon, sample"):
        DiffusionHeadConfig(prediction_type="x0")
    with pytest.raises(ConfigError):
        FlowHeadConfig(num_inference_steps=0)
    with pytest.raises(ConfigError, match="resmlp_width and resmlp_blocks"):
        FlowHeadConfig(denoiser="resmlp", resmlp_blocks=0)
