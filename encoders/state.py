"""Robot state (with its short history) -> one token."""

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from core.configuration import ConfigError, doc_field


@dataclass
class StateConfig:
    hidden: int = doc_field(256, "hidden width of the state MLP")
    n_layers: int = doc_field(2, "linear layers in the state MLP")

    def __post_init__(self):
        if self.n_layers < 1:
            raise ConfigError("state.n_layers must be at least 1")


class StateEncoder(nn.Module):
    """MLP over the flattened (T_obs, S) normalized state history -> (B, d_model)."""

    def __init__(self, config: StateConfig, state_dim: int, n_obs_steps: int, d_model: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = state_dim * n_obs_steps
        for _ in range(config.n_layers - 1):
            layers += [nn.Linear(width, config.hidden), nn.GELU()]
            width = config.hidden
        layers.append(nn.Linear(width, d_model))
        self.mlp = nn.Sequential(*layers)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """(B, T_obs, S) -> (B, d_model)."""
        return self.mlp(rearrange(state, "b t s -> b (t s)"))
