"""Regression head: one MLP readout from the query vector to the whole chunk (the simplest baseline)."""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from action_head.base import ActionHead, HeadConfig, head_type, masked_mean, register_head
from core.configuration import ConfigError, doc_field
from core.dropout import Dropout
from core.rng import Generators
from fusion.context import Context


@dataclass
class RegressionHeadConfig(HeadConfig):
    type: str = head_type("regression")
    loss: Literal["l1", "mse"] = doc_field("l1", "training loss on the normalized chunk: l1 | mse")
    hidden: int = doc_field(512, "width of the MLP's hidden layers")
    n_layers: int = doc_field(2, "hidden layers in the MLP (0 = a single linear readout)")
    dropout: float = doc_field(0.0, "dropout after each hidden layer")

    def __post_init__(self):
        if self.loss not in ("l1", "mse"):
            raise ConfigError(f"action_head.loss must be 'l1' or 'mse', got {self.loss!r}")
        if self.hidden < 1 or self.n_layers < 0:
            raise ConfigError("action_head.hidden must be >= 1 and action_head.n_layers >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"action_head.dropout must be in [0, 1), got {self.dropout}")


@register_head
class RegressionHead(ActionHead):
    """MLP from ``context.global_vector()`` (B, Q*d) to the chunk (B, H, A), trained with L1 or MSE.

    It regresses the conditional mean (MSE) or median (L1), so it averages multimodal
    demonstrations; it is the fast, deterministic baseline the other heads are compared to.
    """

    config_class = RegressionHeadConfig

    def __init__(self, config: RegressionHeadConfig, d_model: int, n_queries: int, chunk_size: int,
                 action_dim: int):
        super().__init__(config, d_model, n_queries, chunk_size, action_dim)
        layers: list[nn.Module] = []
        width = n_queries * d_model
        for _ in range(config.n_layers):
            layers += [nn.Linear(width, config.hidden), nn.GELU(), Dropout(config.dropout)]
            width = config.hidden
        layers.append(nn.Linear(width, chunk_size * action_dim))
        self.mlp = nn.Sequential(*layers)

    def _readout(self, context: Context) -> torch.Tensor:
        """(B, H, A) unclamped float32 prediction."""
        flat = self.mlp(context.global_vector()).float()
        return rearrange(flat, "b (h a) -> b h a", h=self.chunk_size)

    def loss(self, context: Context, actions: torch.Tensor, action_is_pad: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked L1 or MSE over non-padded steps.

        Args:
            context: fused observation tokens, batch B.
            actions: (B, H, A) normalized target chunk.
            action_is_pad: (B, H) bool, True for steps that add no loss.
        Returns:
            scalar float32 loss and {"l1", "mse"} over the kept steps.
        """
        if actions.shape[1:] != (self.chunk_size, self.action_dim):
            raise ValueError(f"actions must be (B, {self.chunk_size}, {self.action_dim}), got {tuple(actions.shape)}")
        # Unclamped: clamping would zero the gradient of predictions that overshoot the range.
        pred = self._readout(context)
        target = actions.float()
        l1 = masked_mean(F.l1_loss(pred, target, reduction="none"), action_is_pad)
        mse = masked_mean(F.mse_loss(pred, target, reduction="none"), action_is_pad)
        loss = l1 if self.config.loss == "l1" else mse
        return loss, {"l1": l1.item(), "mse": mse.item()}

    @torch.no_grad()
    def predict(self, context: Context, generator: Generators = None) -> torch.Tensor:
        """(B, H, A) float32 chunk clamped to [-1, 1]; deterministic, ``generator`` is unused."""
        return self._readout(context).clamp(-1.0, 1.0)
