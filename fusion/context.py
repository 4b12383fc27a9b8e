"""The typed container that carries fused tokens from the fusion transformer to a head."""

from dataclasses import dataclass

import torch
from einops import rearrange


@dataclass
class Context:
    """What an action head may read.

    Attributes:
        query: (B, Q, d) state-query outputs after cross-attention to the scene.
        scene: (B, N, d) scene tokens (vision and language) after self-attention.
        scene_pad_mask: (B, N) bool, True where a scene token is padding.
    """

    query: torch.Tensor
    scene: torch.Tensor
    scene_pad_mask: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.query.shape[0]

    def global_vector(self) -> torch.Tensor:
        """(B, Q*d): the query outputs flattened, for heads that condition on one vector."""
        return rearrange(self.query, "b q d -> b (q d)")

    def memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Q+N, d) tokens and their (B, Q+N) padding mask, for heads that cross-attend."""
        query_mask = torch.zeros(self.query.shape[:2], dtype=torch.bool, device=self.query.device)
        return torch.cat([self.query, self.scene], dim=1), torch.cat([query_mask, self.scene_pad_mask], dim=1)

    def float(self) -> "Context":
        """This context in float32 (a head run outside autocast reads fp32 tokens)."""
        return Context(self.query.float(), self.scene.float(), self.scene_pad_mask)
