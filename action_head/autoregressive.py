"""Autoregressive head: actions as discrete tokens, decoded one at a time (RT-2 / OpenVLA / VLA-0 style).

Every action dimension of every timestep becomes one token (uniform bins over [-1, 1], see
:class:`ActionTokenizer`). A small causal transformer decoder predicts the tokens left to right,
cross-attending to the fused context.

Decoding is constrained by construction: the input vocabulary is ``n_bins`` bin tokens plus BOS
and MASK, but the output projection spans only the ``n_bins`` bin tokens, so the model can emit
nothing but bins, and decoding runs exactly ``L = chunk_size * action_dim`` steps. There is no
EOS and nothing to parse: every decode yields a full, valid chunk.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from action_head.base import ActionHead, HeadConfig, head_type, masked_mean, register_head
from action_head.tokenizer import ActionTokenizer
from core import rng
from core.configuration import ConfigError, doc_field
from core.device import compile_frozen
from core.dropout import use_cheap_dropout
from core.rng import Generators
from fusion.context import Context


@dataclass
class AutoregressiveHeadConfig(HeadConfig):
    type: str = head_type("autoregressive")
    n_bins: int = doc_field(512, "uniform bins per action value over [-1, 1] (the action vocabulary)")
    n_layers: int = doc_field(2, "causal transformer decoder layers")
    n_heads: int = doc_field(4, "attention heads (d_model must divide by it)")
    ffn_mult: int = doc_field(4, "feed-forward width as a multiple of d_model")
    dropout: float = doc_field(0.1, "dropout inside attention and feed-forward blocks")
    input_mask_prob: float = doc_field(
        0.0, "training only: chance to replace each teacher-forced input token with MASK (VLA-0 augmentation)")
    temperature: float = doc_field(0.0, "sampling temperature at predict; 0 means greedy argmax")

    def __post_init__(self):
        if self.n_bins < 2:
            raise ConfigError(f"action_head.n_bins must be at least 2, got {self.n_bins}")
        if self.n_layers < 1 or self.n_heads < 1 or self.ffn_mult < 1:
            raise ConfigError("action_head.n_layers, n_heads and ffn_mult must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"action_head.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.input_mask_prob < 1.0:
            raise ConfigError(f"action_head.input_mask_prob must be in [0, 1), got {self.input_mask_prob}")
        if self.temperature < 0.0:
            raise ConfigError(f"action_head.temperature must be >= 0, got {self.temperature}")


@register_head
class AutoregressiveHead(ActionHead):
    """Causal transformer over action tokens, ordered timestep-major (t0d0, t0d1, ..., t1d0, ...).

    Sequence length ``L = chunk_size * action_dim``. Inputs are embedded with a learned token
    embedding (``n_bins`` bins + BOS + MASK) plus a learned embedding per position, so a position
    tells the model both the timestep and the action dimension. Cross-attention reads
    ``context.memory()`` (query and scene tokens with their padding mask).

    Training is teacher forcing: inputs ``[BOS, tok_0 .. tok_{L-2}]``, targets ``tok_0 .. tok_{L-1}``.
    With ``input_mask_prob > 0`` each input token after BOS is replaced by MASK with that chance,
    so the model learns not to copy its previous tokens blindly.

    Prediction decodes exactly ``L`` tokens; the output layer covers only the ``n_bins`` bins
    (the decoding constraint), and the tokens decode to bin centers. Decoding keeps a key/value
    cache: each step runs the layers on the newest token only, attending to the cached keys and
    values of the earlier ones, and the memory's cross-attention keys and values are projected
    once per chunk (``use_cache=False`` recomputes the whole prefix each step, for comparison).

    Gradient note: BOS and MASK are rows of the one token embedding table, so every parameter
    tensor gets a gradient from each loss; the MASK row itself only learns when
    ``input_mask_prob > 0`` (with 0 it is never used, in training or at predict).
    """

    config_class = AutoregressiveHeadConfig

    def __init__(self, config: AutoregressiveHeadConfig, d_model: int, n_queries: int, chunk_size: int,
                 action_dim: int):
        super().__init__(config, d_model, n_queries, chunk_size, action_dim)
        if d_model % config.n_heads:
            raise ConfigError(f"d_model={d_model} must be divisible by action_head.n_heads={config.n_heads}")
        self.tokenizer = ActionTokenizer(config.n_bins, -1.0, 1.0)
        self.seq_len = chunk_size * action_dim
        self.bos_id = config.n_bins
        self.mask_id = config.n_bins + 1

        self.token_embedding = nn.Embedding(config.n_bins + 2, d_model)
        self.position_embedding = nn.Parameter(torch.zeros(self.seq_len, d_model))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.02)
        layer = nn.TransformerDecoderLayer(d_model, config.n_heads, config.ffn_mult * d_model, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # Pre-norm layers leave the residual stream unnormalized, hence the final LayerNorm.
        self.decoder = use_cheap_dropout(nn.TransformerDecoder(layer, config.n_layers, norm=nn.LayerNorm(d_model)))
        self.to_logits = nn.Linear(d_model, config.n_bins)  # bins only: BOS/MASK can never be emitted
        causal = torch.triu(torch.ones(self.seq_len, self.seq_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal_mask", causal, persistent=False)
        self._decode_step = _KVCache.step  # compile_for_inference swaps in the compiled one

    def _logits(self, inputs: torch.Tensor, memory: torch.Tensor, memory_pad: torch.Tensor) -> torch.Tensor:
        """(B, T) input token ids, T <= L -> (B, T, n_bins) logits for the next token at each position."""
        length = inputs.shape[1]
        x = self.token_embedding(inputs) + self.position_embedding[:length]
        x = self.decoder(x, memory, tgt_mask=self.causal_mask[:length, :length], tgt_is_causal=True,
                         memory_key_padding_mask=memory_pad)
        return self.to_logits(x)

    def loss(self, context: Context, actions: torch.Tensor, action_is_pad: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Teacher-forced cross-entropy over the tokens of non-padded timesteps.

        Args:
            context: fused observation tokens, batch B.
            actions: (B, H, A) normalized target chunk.
            action_is_pad: (B, H) bool; a padded step's A tokens add no loss. Padding trails the
                chunk, so padded tokens only ever feed (as inputs) positions that are ignored too.
        Returns:
            scalar float32 loss and {"ce", "token_accuracy"} over the kept tokens.
        """
        if actions.shape[1:] != (self.chunk_size, self.action_dim):
            raise ValueError(f"actions must be (B, {self.chunk_size}, {self.action_dim}), got {tuple(actions.shape)}")
        targets = rearrange(self.tokenizer.encode(actions), "b h a -> b (h a)")
        bos = targets.new_full((targets.shape[0], 1), self.bos_id)
        inputs = torch.cat([bos, targets[:, :-1]], dim=1)
        if self.training and self.config.input_mask_prob > 0:
            replace = torch.rand(inputs.shape, device=inputs.device) < self.config.input_mask_prob
            replace[:, 0] = False  # BOS is the only fixed anchor; never hide it
            inputs = inputs.masked_fill(replace, self.mask_id)

        memory, memory_pad = context.memory()
        logits = self._logits(inputs, memory, memory_pad)
        # Cross-entropy over hundreds of classes is not safe in bf16: leave autocast for it.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            ce = F.cross_entropy(rearrange(logits, "b l v -> b v l"), targets, reduction="none")  # (B, L)
        ce = rearrange(ce, "b (h a) -> b h a", h=self.chunk_size)
        correct = rearrange((logits.argmax(dim=-1) == targets).float(), "b (h a) -> b h a", h=self.chunk_size)
        loss = masked_mean(ce, action_is_pad)
        accuracy = masked_mean(correct, action_is_pad)
        return loss, {"ce": loss.item(), "token_accuracy": accuracy.item()}

    def _choose(self, logits: torch.Tensor, generator: Generators) -> torch.Tensor:
        """(B, n_bins) float32 logits -> (B,) long bin ids: argmax, or a sample at ``temperature``."""
        if self.config.temperature == 0.0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / self.config.temperature, dim=-1)
        return rng.multinomial(probs, generator)

    @torch.no_grad()
    def generate_tokens(self, context: Context, generator: Generators = None, use_cache: bool = True,
                        length: int | None = None) -> torch.Tensor:
        """Decode exactly ``length`` tokens (L = H*A by default), each a bin id in [0, n_bins).

        Args:
            context: fused observation tokens, batch B.
            generator: randomness for sampling (``temperature > 0``); must live on the context's
                device. Dropout follows the module's mode, so call ``eval()`` for reproducible output.
            use_cache: decode with the key/value cache (the same tokens, far fewer operations).
            length: how many tokens, <= L. Decoding is causal, so they are the first ``length`` of
                the full decode.
        Returns:
            (B, length) long token ids, timestep-major.
        """
        length = self.seq_len if length is None else length
        if not 1 <= length <= self.seq_len:
            raise ValueError(f"length must be in [1, {self.seq_len}], got {length}")
        memory, memory_pad = context.memory()
        tokens = torch.full((context.batch_size, 1), self.bos_id, dtype=torch.long, device=memory.device)
        if not use_cache or self.training:  # dropout in the layers: only the reference path applies it
            for _ in range(length):
                logits = self._logits(tokens, memory, memory_pad)[:, -1].float()
                tokens = torch.cat([tokens, self._choose(logits, generator)[:, None]], dim=1)
            return tokens[:, 1:]  # drop BOS
        cache = _KVCache(self.decoder, memory, memory_pad)
        for position in range(length):
            x = self.token_embedding(tokens[:, -1:]) + self.position_embedding[position]
            logits = self.to_logits(self._decode_step(cache, x))[:, -1].float()
            tokens = torch.cat([tokens, self._choose(logits, generator)[:, None]], dim=1)
        return tokens[:, 1:]

    def compile_for_inference(self) -> None:
        """The cached decoder's step, run once per token, through ``torch.compile`` with frozen weights. The
        cache grows a token a step: the first tokens compile, then one graph with a dynamic length serves
        the rest (about 40 s on a 2-core CPU at the first re-plan)."""
        self._decode_step = compile_frozen(_KVCache.step)

    @torch.no_grad()
    def predict(self, context: Context, generator: Generators = None) -> torch.Tensor:
        """(B, H, A) float32 chunk of bin centers, in [-1, 1]; greedy unless ``temperature > 0``."""
        return self.predict_prefix(context, self.chunk_size, generator)

    @torch.no_grad()
    def predict_prefix(self, context: Context, steps: int, generator: Generators = None) -> torch.Tensor:
        """The first ``steps`` steps of the chunk, decoding only their ``steps * A`` tokens: at
        ``n_action_steps`` of a 16-step chunk, a quarter of the decoding."""
        self._check_prefix(steps)  # generate_tokens checks its length again, but names `length`, not `steps`
        tokens = self.generate_tokens(context, generator, length=steps * self.action_dim)
        return rearrange(self.tokenizer.decode(tokens), "b (h a) -> b h a", h=steps)


class _KVCache:
    """Incremental decoding through a pre-norm ``nn.TransformerDecoder``, with its own weights.

    Per layer it keeps the self-attention keys and values of the tokens seen so far and the
    cross-attention keys and values of the memory (projected once). ``step`` runs one new token
    (B, 1, D) through every layer, exactly as the full decoder computes that position in eval mode.
    """

    def __init__(self, decoder: nn.TransformerDecoder, memory: torch.Tensor, memory_pad: torch.Tensor):
        self.decoder = decoder
        self.keys: list[torch.Tensor | None] = [None] * len(decoder.layers)
        self.values: list[torch.Tensor | None] = [None] * len(decoder.layers)
        self.memory_kv = [self._project_kv(layer.multihead_attn, memory) for layer in decoder.layers]
        self.memory_mask = memory_pad[:, None, None, :]  # (B, 1, 1, M), True = padding

    @staticmethod
    def _heads(attention: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b t (h d) -> b h t d", h=attention.num_heads)

    def _project_kv(self, attention: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = attention.embed_dim
        w, b = attention.in_proj_weight, attention.in_proj_bias
        k = F.linear(x, w[d:2 * d], b[d:2 * d])
        v = F.linear(x, w[2 * d:], b[2 * d:])
        return self._heads(attention, k), self._heads(attention, v)

    def _attend(self, attention: nn.MultiheadAttention, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        d = attention.embed_dim
        q = self._heads(attention, F.linear(x, attention.in_proj_weight[:d], attention.in_proj_bias[:d]))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else ~mask)
        return attention.out_proj(rearrange(out, "b h t d -> b t (h d)"))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, D) embedded new token -> (B, 1, D) decoder output at its position (final norm applied)."""
        for i, layer in enumerate(self.decoder.layers):
            h = layer.norm1(x)
            k, v = self._project_kv(layer.self_attn, h)
            if self.keys[i] is not None:
                k, v = torch.cat([self.keys[i], k], dim=2), torch.cat([self.values[i], v], dim=2)
            self.keys[i], self.values[i] = k, v
            x = x + self._attend(layer.self_attn, h, k, v, None)  # the newest token sees every cached one
            x = x + self._attend(layer.multihead_attn, layer.norm2(x), *self.memory_kv[i], self.memory_mask)
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
        return self.decoder.norm(x)
