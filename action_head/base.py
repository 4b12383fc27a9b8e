"""The one interface every action head inherits, and the registry that builds heads by name.

Heads live entirely in normalized action space: targets and predictions are in [-1, 1]
(min-max) or standardized units; the policy's Normalizer converts at the boundary.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.configuration import doc_field
from core.registry import Registry
from core.rng import Generators
from fusion.context import Context


def head_type(name: str) -> Any:
    """The ``type`` field of a head's config: ``name`` is the head's one spelling (``register_head``)."""
    return doc_field(name, "which head, a key of action_head.HEADS (train.py --help lists them)")


@dataclass
class HeadConfig:
    """Fields every head config has. Each head subclasses this with its own options."""

    type: str = head_type("")


class ActionHead(nn.Module, ABC):
    """Maps a fused Context to an action chunk.

    Args:
        config: the head's own config dataclass (``config_class``).
        d_model: width of the context tokens.
        n_queries: Q, number of state-query tokens in the context.
        chunk_size: H, actions per predicted chunk.
        action_dim: A, size of one action.
    """

    config_class: type[HeadConfig] = HeadConfig

    def __init__(self, config: HeadConfig, d_model: int, n_queries: int, chunk_size: int, action_dim: int):
        super().__init__()
        self.config = config
        self.d_model = d_model
        self.n_queries = n_queries
        self.chunk_size = chunk_size
        self.action_dim = action_dim

    @abstractmethod
    def loss(self, context: Context, actions: torch.Tensor, action_is_pad: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss.

        Args:
            context: fused observation tokens, batch B.
            actions: (B, H, A) normalized target chunk.
            action_is_pad: (B, H) bool, True for steps past the episode end; they add no loss.
        Returns:
            scalar loss and a dict of float metrics for logging.
        """

    @abstractmethod
    def predict(self, context: Context, generator: Generators = None) -> torch.Tensor:
        """(B, H, A) normalized action chunk; deterministic for a given ``generator`` state.

        ``generator``: one for the batch, or one per row (then a row's draws depend on its own only).
        """

    def predict_prefix(self, context: Context, steps: int, generator: Generators = None) -> torch.Tensor:
        """(B, steps, A): exactly the first ``steps`` steps of ``predict``'s chunk for the same ``generator``
        state, which is all a policy executes between re-plans. Heads that write the chunk jointly compute it
        whole; a head that writes it step by step stops early (the autoregressive one).
        """
        self._check_prefix(steps)
        return self.predict(context, generator)[:, :steps]

    def compile_for_inference(self) -> None:
        """Compile what the head runs many times per re-plan (``torch.compile``, inference only: a denoiser's
        step, the autoregressive decoder's step). Nothing by default: the regression head runs its small
        network once per chunk."""

    def _check_prefix(self, steps: int) -> None:
        if not 1 <= steps <= self.chunk_size:
            raise ValueError(f"steps must be in [1, {self.chunk_size}], got {steps}")


def masked_mean(values: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Mean of (B, H, ...) ``values`` over the steps that are not padding."""
    keep = (~action_is_pad).to(values.dtype)
    keep = keep.reshape(*keep.shape, *([1] * (values.dim() - keep.dim()))).expand_as(values)
    return (values * keep).sum() / keep.sum().clamp(min=1.0)


HEADS: Registry[ActionHead] = Registry("action head", ActionHead)


def register_head(cls: type[ActionHead]) -> type[ActionHead]:
    """Class decorator: register a head under its config's ``type`` default."""
    return HEADS.register(cls.config_class.type)(cls)


def head_config_class(name: str) -> type[HeadConfig]:
    """Config class for a head ``type`` (used by the strict config loader)."""
    return HEADS.get(name).config_class


def build_head(config: HeadConfig, d_model: int, n_queries: int, chunk_size: int, action_dim: int) -> ActionHead:
    return HEADS.get(config.type)(config, d_model, n_queries, chunk_size, action_dim)
