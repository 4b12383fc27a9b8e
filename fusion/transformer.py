"""Two-stage fusion: self-attention over the scene, then state queries cross-attend to it."""

from dataclasses import dataclass

import torch
from torch import nn

from core.configuration import ConfigError, doc_field
from core.dropout import use_cheap_dropout
from fusion.context import Context


@dataclass
class FusionConfig:
    n_scene_layers: int = doc_field(2, "self-attention layers over vision + language tokens")
    n_state_layers: int = doc_field(2, "layers where the state queries cross-attend to the scene")
    n_heads: int = doc_field(4, "attention heads (d_model must divide by it)")
    ffn_mult: int = doc_field(4, "feed-forward width as a multiple of d_model")
    dropout: float = doc_field(0.1, "dropout inside attention and feed-forward blocks")
    n_queries: int = doc_field(1, "state query tokens (the state embedding plus a learned offset each)")

    def __post_init__(self):
        if self.n_scene_layers < 0 or self.n_state_layers < 1:
            raise ConfigError("fusion needs n_scene_layers >= 0 and n_state_layers >= 1")
        if self.n_queries < 1 or self.n_heads < 1:
            raise ConfigError("fusion.n_queries and fusion.n_heads must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("fusion.dropout must be in [0, 1)")


class FusionTransformer(nn.Module):
    """Scene self-attention (stage 1) then state-query cross-attention (stage 2).

    Pre-norm blocks (``norm_first``) train stably without warmup tricks at this size.
    """

    def __init__(self, config: FusionConfig, d_model: int):
        super().__init__()
        if d_model % config.n_heads:
            raise ConfigError(f"d_model={d_model} must be divisible by fusion.n_heads={config.n_heads}")
        self.config = config
        ffn = config.ffn_mult * d_model
        scene_layer = nn.TransformerEncoderLayer(d_model, config.n_heads, ffn, config.dropout,
                                                 activation="gelu", batch_first=True, norm_first=True)
        self.scene_encoder = nn.TransformerEncoder(scene_layer, config.n_scene_layers, enable_nested_tensor=False)
        self.scene_norm = nn.LayerNorm(d_model)
        state_layer = nn.TransformerDecoderLayer(d_model, config.n_heads, ffn, config.dropout,
                                                 activation="gelu", batch_first=True, norm_first=True)
        self.state_decoder = nn.TransformerDecoder(state_layer, config.n_state_layers)
        self.query_norm = nn.LayerNorm(d_model)
        self.query_offsets = nn.Parameter(torch.zeros(config.n_queries, d_model))
        nn.init.normal_(self.query_offsets, std=0.02)
        use_cheap_dropout(self)  # cheaper masks on a CPU (core/dropout.py)

    def forward(self, scene: torch.Tensor, scene_pad_mask: torch.Tensor, state_token: torch.Tensor) -> Context:
        """
        Args:
            scene: (B, N, d) vision and language tokens.
            scene_pad_mask: (B, N) bool, True for padding tokens (ignored by attention).
            state_token: (B, d) embedded robot state.
        Returns:
            Context with query (B, Q, d), scene (B, N, d) and the mask.
        """
        # A check of values, which torch.compile cannot trace without splitting the graph: eager only.
        if not torch.compiler.is_compiling() and scene_pad_mask.all(dim=1).any():
            raise ValueError("every scene token of some sample is padding; nothing to attend to")
        scene = self.scene_norm(self.scene_encoder(scene, src_key_padding_mask=scene_pad_mask))
        queries = state_token[:, None, :] + self.query_offsets[None]
        query = self.state_decoder(queries, scene, memory_key_padding_mask=scene_pad_mask)
        return Context(query=self.query_norm(query), scene=scene, scene_pad_mask=scene_pad_mask)
