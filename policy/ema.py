"""Exponential moving average of weights, swapped in for evaluation and checkpoints."""

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Shadow copies of every floating-point parameter and buffer, updated after each step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            if key in self.shadow:
                self.shadow[key].lerp_(value.detach(), 1.0 - self.decay)

    @contextmanager
    def applied(self, model: nn.Module):
        """Temporarily load the averaged weights into ``model``."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)
