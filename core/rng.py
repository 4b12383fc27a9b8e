"""Random draws from one generator, or from one generator per batch row.

A row's draws then depend only on its own generator: an evaluation episode samples the same
noise whichever other episodes share its batch (``evaluation/rollout.py`` refills slots).
"""

from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def randn(shape: tuple[int, ...], generator: Generators, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal ``shape``; with a sequence of generators, row i (``shape[0]``) from generator i."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    _check_rows(generator, shape[0])
    return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in generator])


def multinomial(probs: torch.Tensor, generator: Generators) -> torch.Tensor:
    """One index per row of (B, K) ``probs``: (B,) long; with generators, row i from generator i."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    _check_rows(generator, probs.shape[0])
    return torch.cat([torch.multinomial(p[None], 1, generator=g)[0] for p, g in zip(probs, generator)])


def _check_rows(generators: Sequence[torch.Generator], rows: int) -> None:
    if len(generators) != rows:
        raise ValueError(f"one generator per row: got {len(generators)} generators for {rows} rows")
