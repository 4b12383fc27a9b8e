"""Fusion: scene self-attention, then robot-state cross-attention; returns a Context."""

from fusion.context import Context
from fusion.transformer import FusionConfig, FusionTransformer

__all__ = ["Context", "FusionConfig", "FusionTransformer"]
