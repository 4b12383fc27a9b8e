"""Normalization that lives inside the policy, so a checkpoint carries its own statistics.

Statistics start as NaN: using a key before ``fit`` raises instead of passing raw data through.
"""

from typing import Literal

import numpy as np
import torch
from torch import nn

Mode = Literal["min_max", "mean_std"]
STAT_NAMES = ("min", "max", "mean", "std")
_EPS = 1e-6


class _KeyStats(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        for name in STAT_NAMES:
            self.register_buffer(name, torch.full((dim,), float("nan")))


def _buffer_name(key: str) -> str:
    return key.replace(".", "__")  # module names cannot hold dots


class Normalizer(nn.Module):
    """Per-key affine normalization: min-max to [-1, 1] or standardization.

    Args:
        dims: feature size per key, e.g. {"observation.state": 4, "action": 4}.
        modes: "min_max" or "mean_std" per key.
    """

    def __init__(self, dims: dict[str, int], modes: dict[str, Mode]):
        super().__init__()
        if set(dims) != set(modes):
            raise ValueError(f"dims and modes must name the same keys: {sorted(dims)} vs {sorted(modes)}")
        self.modes = dict(modes)
        self.stats = nn.ModuleDict({_buffer_name(k): _KeyStats(d) for k, d in dims.items()})

    def _get(self, key: str) -> _KeyStats:
        if key not in self.modes:
            raise KeyError(f"the normalizer has no statistics for '{key}'; it knows {sorted(self.modes)}")
        stats = self.stats[_buffer_name(key)]
        needed = ("min", "max") if self.modes[key] == "min_max" else ("mean", "std")
        if any(torch.isnan(getattr(stats, n)).any() for n in needed):
            raise RuntimeError(f"normalizer statistics for '{key}' were never fitted; call fit() with dataset "
                               "statistics (or load a checkpoint) before using the policy")
        return stats

    @torch.no_grad()
    def fit(self, stats: dict[str, dict[str, np.ndarray | torch.Tensor]]) -> None:
        """Set statistics: ``{key: {"min": .., "max": .., "mean": .., "std": ..}}`` per known key."""
        missing = set(self.modes) - set(stats)
        if missing:
            raise KeyError(f"statistics missing for {sorted(missing)}")
        for key in self.modes:
            target = self.stats[_buffer_name(key)]
            for name in STAT_NAMES:
                value = torch.as_tensor(np.asarray(stats[key][name]), dtype=torch.float32)
                if value.shape != target.min.shape:
                    raise ValueError(f"'{key}' {name} has shape {tuple(value.shape)}, expected {tuple(target.min.shape)}")
                getattr(target, name).copy_(value)

    def _affine(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(center, scale) with normalized = (x - center) / scale."""
        stats = self._get(key)
        if self.modes[key] == "min_max":
            center, half = (stats.max + stats.min) / 2, (stats.max - stats.min) / 2
            return center, torch.where(half < _EPS, torch.ones_like(half), half)  # constant dims map to 0
        return stats.mean, torch.where(stats.std < _EPS, torch.ones_like(stats.std), stats.std)

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        center, scale = self._affine(key)
        return (x - center) / scale

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        center, scale = self._affine(key)
        return x * scale + center

    def to_json(self) -> dict:
        """Statistics as plain lists (written beside checkpoints for people to read)."""
        return {key: {name: getattr(self.stats[_buffer_name(key)], name).tolist() for name in STAT_NAMES}
                for key in self.modes}
