"""DDPM noise schedule with DDIM and DDPM samplers, for a denoiser that predicts the noise
(epsilon) or the clean sample."""

import math
import typing
from typing import Callable, Literal

import torch
from torch import nn

from core import rng
from core.configuration import ConfigError
from core.rng import Generators

BetaSchedule = Literal["squaredcos_cap_v2", "linear"]
BETA_SCHEDULES: tuple[str, ...] = typing.get_args(BetaSchedule)
Sampler = Literal["ddim", "ddpm"]
SAMPLERS: tuple[str, ...] = typing.get_args(Sampler)
PredictionType = Literal["epsilon", "sample"]
PREDICTION_TYPES: tuple[str, ...] = typing.get_args(PredictionType)

# denoise_fn(x_t (B, H, A), t (B,) float step index) -> the predicted noise or clean sample (B, H, A)
DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_betas(beta_schedule: str, num_train_steps: int) -> torch.Tensor:
    """(T,) float64 betas."""
    if beta_schedule == "squaredcos_cap_v2":
        # Nichol & Dhariwal 2021: alpha-bar follows a squared cosine, betas capped at 0.999.
        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        T = num_train_steps
        return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)],
                            dtype=torch.float64)
    if beta_schedule == "linear":
        return torch.linspace(1e-4, 0.02, num_train_steps, dtype=torch.float64)
    raise ConfigError(f"unknown beta_schedule '{beta_schedule}'; valid: {', '.join(BETA_SCHEDULES)}")


class NoiseSchedule(nn.Module):
    """The forward process q(x_t | x_0) and the reverse samplers.

    Args:
        num_train_steps: T; training draws t uniformly from {0, ..., T-1}.
        beta_schedule: "squaredcos_cap_v2" or "linear".
        prediction_type: what the denoiser predicts: "epsilon", the added noise (DDPM), or "sample",
            the clean x_0. From pure noise, "epsilon" implies x_0 by dividing the noise error by
            sqrt(alpha-bar), 5e-4 at the cosine schedule's last step (x_0 is then mostly the clip),
            where "sample" gives the network's x_0 as it is: the one suited to 1 or 2 DDIM steps.
    Raises:
        ConfigError: if alpha-bar at t = T-1 is not below 1e-3, so x_{T-1} is not pure noise and
            sampling from N(0, I) starts off the training distribution.
    """

    def __init__(self, num_train_steps: int = 100, beta_schedule: str = "squaredcos_cap_v2",
                 prediction_type: str = "epsilon"):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"unknown prediction_type '{prediction_type}'; valid: {', '.join(PREDICTION_TYPES)}")
        if num_train_steps < 2:
            raise ConfigError(f"num_train_steps must be at least 2, got {num_train_steps}")
        betas = make_betas(beta_schedule, num_train_steps)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        if alphas_cumprod[-1] >= 1e-3:
            raise ConfigError(f"the schedule never reaches noise: alpha-bar at the last step is "
                              f"{alphas_cumprod[-1].item():.3g}; use squaredcos_cap_v2 or more steps")
        self.num_train_steps = num_train_steps
        self.prediction_type = prediction_type
        # Derived, so not saved in checkpoints; registered so .to(device) moves them.
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)

    def _abar(self, t: int) -> torch.Tensor:
        """alpha-bar at step t; 1 (no noise) for t < 0."""
        return self.alphas_cumprod[t] if t >= 0 else self.alphas_cumprod.new_tensor(1.0)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, for x0 and noise (B, ...) and integer t (B,)."""
        abar = self.alphas_cumprod[t].reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the denoiser regresses for x_t = add_noise(x0, noise, t): the noise or x0 itself."""
        return noise if self.prediction_type == "epsilon" else x0

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        """DDIM steps, "trailing" spacing: the first is T-1 (pure noise); after the last, alpha-bar = 1."""
        T = self.num_train_steps
        if not 1 <= num_steps <= T:
            raise ValueError(f"num_steps must be between 1 and {T}, got {num_steps}")
        return (torch.arange(T, 0, -T / num_steps, dtype=torch.float64).round().long() - 1).tolist()

    def _predict_x0(self, x: torch.Tensor, prediction: torch.Tensor, t: int) -> torch.Tensor:
        """The clean sample the denoiser's output implies at step t, clipped to the data's [-1, 1]."""
        if self.prediction_type == "sample":
            return prediction.clamp(-1.0, 1.0)
        abar = self._abar(t)
        return ((x - (1 - abar).sqrt() * prediction) / abar.sqrt()).clamp(-1.0, 1.0)  # clip_sample

    def _ddim_step(self, x: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """Deterministic (eta = 0) DDIM step from t to t_prev, given the (clipped) x0 estimate."""
        abar, abar_prev = self._abar(t), self._abar(t_prev)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()  # the noise consistent with the clipped x0
        return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps

    def _ddpm_step(self, x: torch.Tensor, x0: torch.Tensor, t: int, generator: Generators
                   ) -> torch.Tensor:
        """Ancestral step: a draw from the posterior q(x_{t-1} | x_t, x0 = the x0 estimate)."""
        abar, abar_prev, beta = self._abar(t), self._abar(t - 1), self.betas[t]
        coef1 = abar_prev.sqrt() * beta / (1 - abar)
        coef2 = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
        mean = coef1 * x0 + coef2 * x
        if t == 0:  # coef1 = 1, coef2 = 0: the mean is the predicted x0, and no noise is added
            return mean
        variance = beta * (1 - abar_prev) / (1 - abar)
        noise = rng.randn(tuple(x.shape), generator, x.device, x.dtype)
        return mean + variance.sqrt() * noise

    def sample(self, denoise_fn: DenoiseFn, shape: tuple[int, ...], generator: Generators = None,
               num_steps: int = 10, method: str = "ddim") -> torch.Tensor:
        """Draw x_0 of ``shape`` (B, H, A) in [-1, 1], float32, on the schedule's device.

        Args:
            denoise_fn: (x_t (B, H, A), t (B,) float) -> the predicted noise or clean sample (B, H, A),
                as ``prediction_type`` says.
            generator: source of all randomness (initial noise, DDPM noise); one per row or one for all.
            num_steps: DDIM steps; "ddpm" always runs all T steps.
            method: "ddim" (deterministic) or "ddpm" (ancestral).
        """
        if method not in SAMPLERS:
            raise ValueError(f"unknown sampler '{method}'; valid: {', '.join(SAMPLERS)}")
        device = self.alphas_cumprod.device
        x = rng.randn(tuple(shape), generator, device)
        steps = self.ddim_timesteps(num_steps) if method == "ddim" else list(range(self.num_train_steps - 1, -1, -1))
        for i, t in enumerate(steps):
            prediction = denoise_fn(x, torch.full((shape[0],), float(t), device=device)).float()
            x0 = self._predict_x0(x, prediction, t)
            if method == "ddim":
                x = self._ddim_step(x, x0, t, steps[i + 1] if i + 1 < len(steps) else -1)
            else:
                x = self._ddpm_step(x, x0, t, generator)
        return x.clamp(-1.0, 1.0)
