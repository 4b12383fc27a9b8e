"""Exponential moving average of weights, swapped in for evaluation and checkpoints."""

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Shadow copies of every floating-point parameter and buffer, updated after each step.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates: with a fixed 0.999
    from the start, the random initial weights would still make up 0.999^1500 = 22% of the average
    after 1,500 steps, and early validation would score that blend instead of the trained model.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0  # set to the step when resuming: the warm-up depends on it
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        for key, value in model.state_dict().items():
            if key in self.shadow:
                self.shadow[key].lerp_(value.detach(), 1.0 - decay)

    @contextmanager
    def applied(self, model: nn.Module):
        """Temporarily load the averaged weights into ``model``."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)
