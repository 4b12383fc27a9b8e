"""Networks that map a noisy (B, H, A) action chunk, a time per sample and a condition to a
noise or a clean chunk (diffusion) or a velocity (flow) of the same shape, plus the config fields
and the builder that the diffusion and flow heads share.

Every denoiser has the signature ``forward(x, t, cond) -> (B, H, A)`` where ``x`` is (B, H, A),
``t`` is a float (B,) time (a diffusion step index 0..T-1, or flow time scaled to a similar
range) and ``cond`` is (B, cond_dim).
"""

import contextlib
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from action_head.base import HeadConfig
from core.configuration import ConfigError, doc_field
from core.device import compile_frozen

DenoiserKind = Literal["unet", "mlp", "resmlp"]
DENOISER_KINDS: tuple[str, ...] = typing.get_args(DenoiserKind)

_plain = False  # True inside plain_inference()


@contextlib.contextmanager
def plain_inference() -> Iterator[None]:
    """Inside: the U-Net's re-plan without its fast path (the library convolution at every batch size,
    the condition's FiLM part recomputed at every denoising step). The same numbers up to float
    rounding; it is the reference the fast path is tested and timed against
    (``python -m benchmarks.latency --fast-path``). Process-wide, not thread-safe."""
    global _plain
    previous, _plain = _plain, True
    try:
        yield
    finally:
        _plain = previous


class SinusoidalTimeEmbedding(nn.Module):
    """(B,) float times -> (B, dim) sin/cos features at geometrically spaced frequencies."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ConfigError(f"time embedding dim must be even and at least 4, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        # float32 even under autocast: bf16 cannot resolve step indices near 100 at high frequency.
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _small_init(layer: nn.Conv1d | nn.Linear, scale: float = 0.1) -> None:
    """Shrink a final layer so initial outputs are small. Not zero: a zero weight would block the
    gradient to every earlier layer on the first backward."""
    with torch.no_grad():
        layer.weight.mul_(scale)
        layer.bias.zero_()


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` that runs as one matmul over unfolded windows where that is faster than the
    library convolution: the same result, the same weights and state-dict keys.

    Where: without gradients at batch <= ``MATMUL_MAX_BATCH`` (a robot re-planning), and in training
    under bf16 autocast on a CPU. Why: oneDNN's convolution on the U-Net's wide, short layers is slow
    at batch 1, e.g. 256 -> 256 channels, kernel 5, length 4: 0.41 ms, against 0.085 ms as a matmul
    (one CPU thread; 0.23 vs 0.20 ms at batch 5, and the library conv wins from batch 10). In bf16
    training its backward is the slow part (five times its forward on a Xeon with AMX), while the
    matmul's backward runs on the bf16 matrix units: the reach diffusion step 405 -> 386 ms (batch 64,
    2 threads, one process, round-robin). In fp32 training the library conv stays faster (611 vs 633
    ms). ``python -m benchmarks.latency`` shows the re-plan it buys.
    """

    MATMUL_MAX_BATCH = 4

    def _as_matmul(self, x: torch.Tensor) -> bool:
        if (_plain or self.groups != 1 or self.dilation != (1,) or self.padding_mode != "zeros"
                or isinstance(self.padding, str)):
            return False
        if torch.is_grad_enabled():
            return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                    and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return x.shape[0] <= self.MATMUL_MAX_BATCH

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._as_matmul(x):
            return super().forward(x)
        (k,), (stride,), (pad,) = self.kernel_size, self.stride, self.padding
        windows = F.pad(x, (pad, pad)).unfold(2, k, stride)  # (B, C_in, L_out, k)
        columns = windows.permute(0, 2, 1, 3).flatten(2)  # (B, L_out, C_in * k), the weight's order
        return F.linear(columns, self.weight.flatten(1), self.bias).transpose(1, 2)


def _group_norm(channels: int, n_groups: int) -> nn.GroupNorm:
    # The largest group count <= n_groups that divides the width, so any width is valid.
    return nn.GroupNorm(math.gcd(n_groups, channels), channels)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish over (B, C, L), length preserved."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.block = nn.Sequential(
            Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            _group_norm(out_channels, n_groups),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM (per-channel scale and bias from concat(time features, condition))
    after the first.

    The FiLM layer is Mish then one Linear over the concatenation, so it splits exactly into a time
    part and a condition part (:meth:`film_of_cond`), and a sampler computes the condition part once
    per chunk instead of once per denoising step.
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, cond_dim: int, kernel_size: int,
                 n_groups: int):
        super().__init__()
        self.conv1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.conv2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        # Mish then Linear over concat(time, cond); applied in two parts (below), kept as one module so
        # that checkpoints keep their keys.
        self.film = nn.Sequential(nn.Mish(), nn.Linear(time_dim + cond_dim, 2 * out_channels))
        self.residual = Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.time_dim = time_dim

    def film_of_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, cond_dim) -> (B, 2 * C_out): the condition's share of the FiLM output, bias included."""
        linear = self.film[1]
        return F.linear(F.mish(cond), linear.weight[:, self.time_dim:], linear.bias)

    def forward(self, x: torch.Tensor, time: torch.Tensor, cond_film: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, L), time features (B, time_dim), ``film_of_cond(cond)`` -> (B, C_out, L)."""
        film = F.linear(F.mish(time), self.film[1].weight[:, :self.time_dim]) + cond_film
        scale, bias = film.unflatten(1, (2, -1)).unsqueeze(-1).unbind(1)  # (B, C_out, 1) each
        # 1 + scale: an untrained block modulates around identity instead of near zero.
        out = self.conv1(x) * (1 + scale) + bias
        return self.conv2(out) + self.residual(x)


class Denoiser(nn.Module, ABC):
    """The interface of the networks the diffusion and flow heads iterate.

    A sampler calls the network at every denoising step with the same condition, so the condition's
    share is split off: ``prepare(cond)`` once per chunk, then ``step(x, t, prepared)`` per step.
    ``conditioned`` ties the two together, and ``compile_for_inference`` swaps ``step`` for its
    ``torch.compile``d version (the same numbers up to float rounding).
    """

    _compiled_step: Callable | None = None

    @abstractmethod
    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, H, A), t (B,) float, cond (B, cond_dim) -> (B, H, A)."""

    def prepare(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What depends on ``cond`` alone, computed once per chunk (the condition itself by default)."""
        return (cond.float(),)

    def step(self, x: torch.Tensor, t: torch.Tensor, prepared: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``forward(x, t, cond)`` given ``prepare(cond)``."""
        return self.forward(x, t, *prepared)

    def conditioned(self, cond: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(x, t) -> forward(x, t, cond)`` for a sampler that calls it at every step with the same
        ``cond``: ``prepare`` runs here, once; each call runs ``step`` (compiled, after
        ``compile_for_inference``)."""
        prepared = self.prepare(cond)
        step = self._compiled_step or self.step
        return lambda x, t: step(x, t, prepared)

    def compile_for_inference(self) -> None:
        """From here on ``conditioned`` runs ``step`` through ``torch.compile`` with frozen weights
        (``core.device.compile_frozen``; inference only: the first call at each new batch size compiles,
        seconds to a minute on a CPU; training calls ``forward``, which stays eager). At batch 1 the step
        is a few hundred small ops, so fusing them pays: ``python -m benchmarks.latency --compile`` times both."""
        self._compiled_step = compile_frozen(self.step)


class ConditionalUnet1D(Denoiser):
    """The Diffusion Policy 1-D U-Net (Chi et al. 2023): convolution over the chunk's time axis,
    FiLM-conditioned on concat(time embedding, global condition).

    Args:
        action_dim: A, channels in and out.
        cond_dim: width of the global condition vector.
        down_dims: channel width per resolution level; each level but the last halves the length.
        time_embed_dim: width of the time embedding.
        kernel_size: convolution kernel over the time axis.
        n_groups: GroupNorm groups (reduced where a width does not divide by it).
    """

    def __init__(self, action_dim: int, cond_dim: int, down_dims: tuple[int, ...] = (64, 128, 256),
                 time_embed_dim: int = 128, kernel_size: int = 5, n_groups: int = 8):
        super().__init__()
        if not down_dims:
            raise ConfigError("down_dims needs at least one level")
        self.time_encoder = nn.Sequential(
            SinusoidalTimeEmbedding(time_embed_dim),
            nn.Linear(time_embed_dim, 4 * time_embed_dim),
            nn.Mish(),
            nn.Linear(4 * time_embed_dim, time_embed_dim),
        )
        widths = [action_dim, *down_dims]
        levels = list(zip(widths[:-1], widths[1:]))

        def block(c_in: int, c_out: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(c_in, c_out, time_embed_dim, cond_dim, kernel_size, n_groups)

        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(nn.ModuleList([
                block(c_in, c_out), block(c_out, c_out),
                Conv1d(c_out, c_out, 3, stride=2, padding=1) if not last else nn.Identity(),
            ]))
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        # As in Diffusion Policy: every up level doubles the length back, and the finest skip is unused.
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(levels[1:]):
            self.up.append(nn.ModuleList([
                block(2 * c_out, c_in), block(c_in, c_in),
                nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
            ]))
        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            Conv1d(down_dims[0], action_dim, 1),
        )
        _small_init(self.final[-1])
        self.length_multiple = 2 ** (len(down_dims) - 1)
        # The FiLM blocks, listed once (a plain tuple: they are registered above, in down/mid/up); each
        # knows its slot in ``prepare``'s tuple.
        self._film_blocks = tuple(m for m in self.modules() if isinstance(m, ConditionalResidualBlock1D))
        for slot, block in enumerate(self._film_blocks):
            block.film_slot = slot

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, H, A), t (B,) float, cond (B, cond_dim) -> (B, H, A)."""
        return self.step(x, t, self.prepare(cond))

    def prepare(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The condition's share of every FiLM block's output, in ``film_slot`` order."""
        cond = cond.float()
        return tuple(block.film_of_cond(cond) for block in self._film_blocks)

    def conditioned(self, cond: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if _plain:  # the reference: the FiLM of the condition at every step, the eager step
            return lambda x, t: self.step(x, t, self.prepare(cond))
        return super().conditioned(cond)

    def step(self, x: torch.Tensor, t: torch.Tensor, prepared: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # Tensor methods here, not einops: torch.compile traces einops' pattern parsing, 4x the compile time.
        time = self.time_encoder(t)

        def res(block: ConditionalResidualBlock1D, h: torch.Tensor) -> torch.Tensor:
            return block(h, time, prepared[block.film_slot])

        horizon = x.shape[1]
        h = x.transpose(1, 2)  # (B, A, H): convolve over the chunk's time axis
        # Pad so every downsampling halves exactly; replicate keeps the edge free of a false step.
        pad = -horizon % self.length_multiple
        if pad:
            h = F.pad(h, (0, pad), mode="replicate")
        skips = []
        for res1, res2, downsample in self.down:
            h = res(res2, res(res1, h))
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = res(block, h)
        for res1, res2, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(res(res2, res(res1, h)))
        h = self.final(h)[..., :horizon]
        return h.transpose(1, 2)


class MLPDenoiser(Denoiser):
    """A flat MLP on concat(flattened chunk, time embedding, cond); for short chunks and ablations.

    Args:
        action_dim: A.
        chunk_size: H (fixed: the chunk is flattened).
        cond_dim: width of the global condition vector.
        hidden: hidden width.
        n_layers: hidden layers (Linear + Mish each), followed by the output Linear.
        time_embed_dim: width of the sinusoidal time embedding.
    """

    def __init__(self, action_dim: int, chunk_size: int, cond_dim: int, hidden: int = 512, n_layers: int = 3,
                 time_embed_dim: int = 128):
        super().__init__()
        self.time_embedding = SinusoidalTimeEmbedding(time_embed_dim)
        layers: list[nn.Module] = []
        width = chunk_size * action_dim + time_embed_dim + cond_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.Mish()]
            width = hidden
        out = nn.Linear(width, chunk_size * action_dim)
        _small_init(out)
        self.mlp = nn.Sequential(*layers, out)
        self.chunk_size = chunk_size

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, H, A), t (B,) float, cond (B, cond_dim) -> (B, H, A)."""
        flat = torch.cat([rearrange(x, "b h a -> b (h a)").float(), self.time_embedding(t), cond.float()], dim=-1)
        return rearrange(self.mlp(flat), "b (h a) -> b h a", h=self.chunk_size)


class ResidualMLPDenoiser(Denoiser):
    """A residual MLP on the flattened chunk, FiLM-conditioned in every block.

    The flat :class:`MLPDenoiser` sees the condition once, at its input; here every block is
    modulated by it, as in the U-Net, and the blocks are pre-norm residual (LayerNorm, Linear to
    4x the width, Mish, Linear back), the network IDQL (Hansen-Estruch et al. 2023) uses for
    diffusion policies. At batch 1 a step is a dozen matrix-vector products instead of the U-Net's
    ~50 small convolutions and matmuls (15x cheaper), but on Meta-World reach it fit the demonstrations
    less well and succeeded less often than the U-Net (README, "Which denoiser"). All that depends on
    the condition alone (its share of the input projection and every block's FiLM) is computed once
    per chunk in ``prepare``.

    Args:
        action_dim: A.
        chunk_size: H (fixed: the chunk is flattened).
        cond_dim: width of the global condition vector.
        hidden: width of the residual stream.
        n_blocks: residual blocks.
        time_embed_dim: width of the sinusoidal time embedding.
    """

    def __init__(self, action_dim: int, chunk_size: int, cond_dim: int, hidden: int = 256, n_blocks: int = 3,
                 time_embed_dim: int = 128):
        super().__init__()
        self.time_encoder = nn.Sequential(SinusoidalTimeEmbedding(time_embed_dim),
                                          nn.Linear(time_embed_dim, hidden), nn.Mish())
        self.chunk_in = nn.Linear(chunk_size * action_dim + hidden, hidden)
        self.cond_in = nn.Linear(cond_dim, hidden, bias=False)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden, elementwise_affine=False) for _ in range(n_blocks))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.Mish(), nn.Linear(4 * hidden, hidden))
            for _ in range(n_blocks))
        self.film = nn.Linear(cond_dim, n_blocks * 2 * hidden)  # per block: scale, bias of the normed stream
        nn.init.zeros_(self.film.weight)  # starts as a plain residual MLP; the FiLM is learned from there
        nn.init.zeros_(self.film.bias)
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, chunk_size * action_dim))
        _small_init(self.out[-1])
        self.chunk_size = chunk_size

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, H, A), t (B,) float, cond (B, cond_dim) -> (B, H, A)."""
        return self.step(x, t, self.prepare(cond))

    def prepare(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The condition's share of the input projection, and (B, n_blocks, 2, hidden) FiLM scales and biases."""
        cond = cond.float()
        film = self.film(cond).unflatten(1, (len(self.blocks), 2, -1))
        return self.cond_in(cond), film

    def step(self, x: torch.Tensor, t: torch.Tensor, prepared: tuple[torch.Tensor, ...]) -> torch.Tensor:
        cond_in, film = prepared
        flat = torch.cat([x.flatten(1).float(), self.time_encoder(t)], dim=-1)
        h = self.chunk_in(flat) + cond_in
        for i, (norm, block) in enumerate(zip(self.norms, self.blocks)):
            h = h + block(norm(h) * (1 + film[:, i, 0]) + film[:, i, 1])
        return self.out(h).unflatten(1, (self.chunk_size, -1))


def build_denoiser(kind: str, action_dim: int, chunk_size: int, cond_dim: int, *,
                   down_dims: tuple[int, ...] = (64, 128, 256), mlp_hidden: int = 512, mlp_layers: int = 3,
                   resmlp_width: int = 256, resmlp_blocks: int = 3, time_embed_dim: int = 128) -> Denoiser:
    """A denoiser by name: "unet" (:class:`ConditionalUnet1D`), "mlp" (:class:`MLPDenoiser`) or "resmlp"
    (:class:`ResidualMLPDenoiser`)."""
    if kind == "unet":
        return ConditionalUnet1D(action_dim, cond_dim, tuple(down_dims), time_embed_dim)
    if kind == "mlp":
        return MLPDenoiser(action_dim, chunk_size, cond_dim, mlp_hidden, mlp_layers, time_embed_dim)
    if kind == "resmlp":
        return ResidualMLPDenoiser(action_dim, chunk_size, cond_dim, resmlp_width, resmlp_blocks, time_embed_dim)
    raise ConfigError(f"unknown denoiser '{kind}'; valid: {', '.join(DENOISER_KINDS)}")


@dataclass
class DenoiserHeadConfig(HeadConfig):
    """Network options shared by the heads that iterate a denoiser (diffusion, flow)."""

    denoiser: DenoiserKind = doc_field("unet", "network: unet (1-D conv U-Net, FiLM) | mlp (flat MLP) | "
                                                 "resmlp (residual MLP, FiLM per block: fast, fits less)")
    down_dims: tuple[int, ...] = doc_field((64, 128, 256), "unet channel widths per level; each but the last halves H")
    mlp_hidden: int = doc_field(512, "mlp hidden width")
    mlp_layers: int = doc_field(3, "mlp hidden layers")
    resmlp_width: int = doc_field(256, "resmlp residual-stream width (each block widens 4x inside)")
    resmlp_blocks: int = doc_field(3, "resmlp residual blocks")
    time_embed_dim: int = doc_field(128, "width of the sinusoidal time embedding (even, >= 4)")

    def __post_init__(self):
        if self.denoiser not in DENOISER_KINDS:
            raise ConfigError(f"denoiser '{self.denoiser}' is not one of {', '.join(DENOISER_KINDS)}")
        if not self.down_dims or min(self.down_dims) < 1:
            raise ConfigError(f"down_dims must be a non-empty list of positive widths, got {self.down_dims}")
        if self.mlp_hidden < 1 or self.mlp_layers < 1:
            raise ConfigError("mlp_hidden and mlp_layers must be at least 1")
        if self.resmlp_width < 1 or self.resmlp_blocks < 1:
            raise ConfigError("resmlp_width and resmlp_blocks must be at least 1")
        if self.time_embed_dim < 4 or self.time_embed_dim % 2:
            raise ConfigError(f"time_embed_dim must be even and at least 4, got {self.time_embed_dim}")


def hold_last_action(actions: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """(B, H, A) ``actions`` with every padded step replaced by the last step before it that is not.

    The loss ignores padded steps, but the noisy chunk fed to the network contains them, and the
    network mixes steps; holding the last action keeps values past the episode end out of the loss
    (and matches the usual dataset convention). Padding is a suffix of the chunk.
    """
    steps = torch.arange(actions.shape[1], device=actions.device).expand_as(action_is_pad)
    last_valid = torch.where(action_is_pad, 0, steps).cummax(dim=1).values
    return actions.gather(1, repeat(last_valid, "b h -> b h a", a=actions.shape[2]))


def make_denoiser(config: DenoiserHeadConfig, action_dim: int, chunk_size: int, cond_dim: int) -> Denoiser:
    """The denoiser a head's config asks for."""
    return build_denoiser(config.denoiser, action_dim, chunk_size, cond_dim, down_dims=config.down_dims,
                          mlp_hidden=config.mlp_hidden, mlp_layers=config.mlp_layers,
                          resmlp_width=config.resmlp_width, resmlp_blocks=config.resmlp_blocks,
                          time_embed_dim=config.time_embed_dim)
