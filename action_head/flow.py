"""Flow-matching head: a denoiser predicts the velocity of the straight path from noise to actions."""

from dataclasses import dataclass
from typing import Callable

import torch

from action_head.base import ActionHead, head_type, masked_mean, register_head
from action_head.denoisers import DenoiserHeadConfig, hold_last_action, make_denoiser
from core import rng
from core.configuration import ConfigError, doc_field
from core.rng import Generators
from fusion.context import Context

# Flow time t in [0, 1] is scaled to the range of diffusion step indices, which the sinusoidal
# time embedding is built to resolve.
TIME_SCALE = 100.0

# velocity_fn(x_t (B, H, A), t (B,) in [0, 1]) -> velocity (B, H, A)
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FlowHeadConfig(DenoiserHeadConfig):
    type: str = head_type("flow")
    num_inference_steps: int = doc_field(10, "Euler steps from noise (t=0) to actions (t=1)")

    def __post_init__(self):
        super().__post_init__()
        if self.num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}")


def euler_integrate(velocity_fn: VelocityFn, x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t=0 to t=1 in ``num_steps`` equal Euler steps.

    Args:
        velocity_fn: (x (B, ...), t (B,)) -> velocity (B, ...).
        x: (B, ...) the state at t=0 (noise).
    Returns:
        (B, ...) float32 state at t=1.
    """
    x = x.float()
    dt = 1.0 / num_steps
    for i in range(num_steps):
        t = torch.full((x.shape[0],), i * dt, device=x.device)
        x = x + dt * velocity_fn(x, t).float()
    return x


@register_head
class FlowHead(ActionHead):
    """Flow matching on the linear path x_t = (1 - t) x0 + t x1, x0 ~ N(0, I), x1 the actions;
    the network regresses the velocity x1 - x0, conditioned on ``context.global_vector()``."""

    config_class = FlowHeadConfig

    def __init__(self, config: FlowHeadConfig, d_model: int, n_queries: int, chunk_size: int, action_dim: int):
        super().__init__(config, d_model, n_queries, chunk_size, action_dim)
        self.denoiser = make_denoiser(config, action_dim, chunk_size, cond_dim=n_queries * d_model)

    def loss(self, context: Context, actions: torch.Tensor, action_is_pad: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        x1 = hold_last_action(actions.float(), action_is_pad)
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], device=x1.device)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        pred = self.denoiser(xt, t * TIME_SCALE, context.global_vector().float())
        mse = masked_mean((pred.float() - (x1 - x0)) ** 2, action_is_pad)  # float32 even under autocast
        return mse, {"mse": mse.item()}

    def compile_for_inference(self) -> None:
        self.denoiser.compile_for_inference()  # it runs num_inference_steps times per chunk

    @torch.no_grad()
    def predict(self, context: Context, generator: Generators = None) -> torch.Tensor:
        cond = context.global_vector().float()
        shape = (context.batch_size, self.chunk_size, self.action_dim)
        noise = rng.randn(shape, generator, cond.device)
        denoise = self.denoiser.conditioned(cond)  # what depends on the context alone, once per chunk
        x = euler_integrate(lambda x, t: denoise(x, t * TIME_SCALE), noise,
                            self.config.num_inference_steps)
        return x.clamp(-1.0, 1.0)
