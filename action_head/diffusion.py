"""Diffusion head (Diffusion Policy): a denoiser predicts the noise added to the action chunk, or
the clean chunk itself (``prediction_type: sample``)."""

from dataclasses import dataclass

import torch

from action_head.base import ActionHead, head_type, masked_mean, register_head
from action_head.denoisers import DenoiserHeadConfig, hold_last_action, make_denoiser
from action_head.noise_schedule import (BETA_SCHEDULES, PREDICTION_TYPES, SAMPLERS, BetaSchedule, NoiseSchedule,
                                        PredictionType, Sampler)
from core.configuration import ConfigError, doc_field
from core.rng import Generators
from fusion.context import Context


@dataclass
class DiffusionHeadConfig(DenoiserHeadConfig):
    type: str = head_type("diffusion")
    num_train_steps: int = doc_field(100, "diffusion steps T used in training")
    beta_schedule: BetaSchedule = doc_field("squaredcos_cap_v2", "noise schedule: squaredcos_cap_v2 | linear")
    prediction_type: PredictionType = doc_field(
        "epsilon", "what the denoiser predicts: epsilon (the noise, DDPM) | sample (the clean chunk, "
        "suited to 1 or 2 DDIM steps)")
    sampler: Sampler = doc_field("ddim", "ddim (deterministic, num_inference_steps) | ddpm (all T)")
    num_inference_steps: int = doc_field(10, "ddim denoising steps at inference (1..num_train_steps)")

    def __post_init__(self):
        super().__post_init__()
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"beta_schedule '{self.beta_schedule}' is not one of {', '.join(BETA_SCHEDULES)}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type '{self.prediction_type}' is not one of {', '.join(PREDICTION_TYPES)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler '{self.sampler}' is not one of {', '.join(SAMPLERS)}")
        if not 1 <= self.num_inference_steps <= self.num_train_steps:
            raise ConfigError(f"num_inference_steps={self.num_inference_steps} must be between 1 and "
                              f"num_train_steps={self.num_train_steps}")
        # Fail at load time, not at the first training step, if the schedule never reaches noise.
        NoiseSchedule(self.num_train_steps, self.beta_schedule, self.prediction_type)


@register_head
class DiffusionHead(ActionHead):
    """DDPM over the (B, H, A) chunk, conditioned on ``context.global_vector()``; the denoiser predicts
    the noise or the clean chunk (``config.prediction_type``)."""

    config_class = DiffusionHeadConfig

    def __init__(self, config: DiffusionHeadConfig, d_model: int, n_queries: int, chunk_size: int, action_dim: int):
        super().__init__(config, d_model, n_queries, chunk_size, action_dim)
        self.denoiser = make_denoiser(config, action_dim, chunk_size, cond_dim=n_queries * d_model)
        self.schedule = NoiseSchedule(config.num_train_steps, config.beta_schedule, config.prediction_type)

    def loss(self, context: Context, actions: torch.Tensor, action_is_pad: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        actions = hold_last_action(actions.float(), action_is_pad)
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.config.num_train_steps, (actions.shape[0],), device=actions.device)
        noisy = self.schedule.add_noise(actions, noise, t)
        pred = self.denoiser(noisy, t.float(), context.global_vector().float())
        target = self.schedule.training_target(actions, noise)
        mse = masked_mean((pred.float() - target) ** 2, action_is_pad)  # float32 even under autocast
        return mse, {"mse": mse.item()}

    def compile_for_inference(self) -> None:
        self.denoiser.compile_for_inference()  # it runs num_inference_steps times per chunk

    @torch.no_grad()
    def predict(self, context: Context, generator: Generators = None) -> torch.Tensor:
        denoise = self.denoiser.conditioned(context.global_vector().float())  # the context's share, once
        return self.schedule.sample(
            denoise,
            (context.batch_size, self.chunk_size, self.action_dim),
            generator=generator, num_steps=self.config.num_inference_steps, method=self.config.sampler,
        )
