"""Uniform binning of continuous actions into discrete tokens (RT-2 / OpenVLA style)."""

import torch


class ActionTokenizer:
    """Maps values in [low, high] to ``n_bins`` equal-width bins and back.

    Bin ``i`` covers ``[low + i*w, low + (i+1)*w)`` with ``w = (high - low) / n_bins``; ``high``
    itself falls in the last bin. Decoding returns bin centers, so for values inside the range
    the round-trip error is at most ``w / 2``. Values outside the range are clamped to the
    edge bins (normalized actions can overshoot [-1, 1] slightly on unseen data).

    Args:
        n_bins: number of bins (the size of the action vocabulary).
        low: lower edge of the first bin.
        high: upper edge of the last bin.
    """

    def __init__(self, n_bins: int = 512, low: float = -1.0, high: float = 1.0):
        if n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {n_bins}")
        if not high > low:
            raise ValueError(f"high ({high}) must be greater than low ({low})")
        self.n_bins = n_bins
        self.low = float(low)
        self.high = float(high)
        self.bin_width = (self.high - self.low) / n_bins

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        """Float tensor of any shape -> long bin ids of the same shape, in [0, n_bins)."""
        # float32 even under autocast: bf16 cannot resolve 512 bins over [-1, 1].
        scaled = (values.float() - self.low) / self.bin_width
        return scaled.floor().clamp(0, self.n_bins - 1).long()

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Long bin ids of any shape -> float32 bin centers of the same shape."""
        return self.low + (ids.float() + 0.5) * self.bin_width

    def __repr__(self) -> str:
        return f"ActionTokenizer(n_bins={self.n_bins}, low={self.low}, high={self.high})"
