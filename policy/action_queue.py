"""Turning predicted chunks into one action per control step.

``ActionQueue`` executes the first ``n_action_steps`` of each chunk in order.
``TemporalEnsembler`` re-plans every step and blends the predictions that overlap the
current step: exponential weights (ACT, oldest prediction weighted most for ``coeff > 0``)
or the uniform average of the last K chunks (VLA-0).
"""

import math
from collections import deque
from typing import Literal

import torch


class ActionQueue:
    def __init__(self, n_action_steps: int):
        self.n_action_steps = n_action_steps
        self._queue: deque[torch.Tensor] = deque()

    def reset(self) -> None:
        self._queue.clear()

    def empty(self) -> bool:
        return not self._queue

    def push(self, chunk: torch.Tensor) -> None:
        """chunk: (B, H, A); keeps the first n_action_steps, in time order."""
        self._queue.extend(chunk[:, : self.n_action_steps].unbind(dim=1))

    def pop(self) -> torch.Tensor:
        return self._queue.popleft()


class TemporalEnsembler:
    """Blend overlapping chunk predictions; call ``update`` once per control step.

    Args:
        mode: "act" (weights exp(-coeff * i), i = 0 for the oldest prediction) or
            "average" (uniform weights over the last ``k`` chunks).
        chunk_size: H.
        coeff: ACT's temperature (0.01 in ACT).
        k: how many recent chunks "average" blends; "act" blends every chunk that covers the step.
    """

    def __init__(self, mode: Literal["act", "average"], chunk_size: int, coeff: float = 0.01, k: int = 4):
        if mode not in ("act", "average"):
            raise ValueError(f"unknown ensembling mode '{mode}'; use act | average")
        self.mode, self.coeff = mode, coeff
        self._chunks: deque[torch.Tensor] = deque(maxlen=chunk_size if mode == "act" else min(k, chunk_size))

    def reset(self) -> None:
        self._chunks.clear()

    def update(self, chunk: torch.Tensor) -> torch.Tensor:
        """chunk: (B, H, A) predicted now -> (B, A) action for this step."""
        self._chunks.append(chunk)
        n = len(self._chunks)
        # The chunk predicted j steps ago covers this step with its action at index j.
        actions = torch.stack([c[:, n - 1 - i] for i, c in enumerate(self._chunks)])  # oldest first
        if self.mode == "act":
            weights = torch.tensor([math.exp(-self.coeff * i) for i in range(n)], dtype=chunk.dtype, device=chunk.device)
        else:
            weights = torch.ones(n, dtype=chunk.dtype, device=chunk.device)
        weights = weights / weights.sum()
        return torch.einsum("n,nba->ba", weights, actions)
