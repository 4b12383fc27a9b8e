"""Action heads: one abstract interface (base.ActionHead), chosen by ``action_head.type``.

Importing this package registers every head.
"""

from action_head import autoregressive, diffusion, flow, regression  # noqa: F401  (registration)
from action_head.base import HEADS, ActionHead, HeadConfig, build_head, head_config_class

__all__ = ["HEADS", "ActionHead", "HeadConfig", "build_head", "head_config_class"]
