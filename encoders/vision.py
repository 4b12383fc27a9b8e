"""ResNet18 image tokens: the last feature map becomes one token per cell.

Images arrive as uint8 (B, N_cam, 3, H, W) (or float in [0, 1]); ImageNet mean/std
normalization happens here, so callers never have to remember it.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
import torchvision
from einops import rearrange
from torch import nn

from core.configuration import ConfigError, doc_field
from core.errors import MissingResourceError
from core.network import host_reachable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Channels and total stride of each ResNet18 stage.
_STAGES = {"layer2": (128, 8), "layer3": (256, 16), "layer4": (512, 32)}  # channels, stride


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that, without gradients on a CPU, pools a channels-last copy: the same values
    (a max is exact), no parameters, the same state dict.

    Why: PyTorch's CPU max-pool in NCHW computes the argmax indices it then drops; at batch 1 (a robot
    re-planning) the stem's pool of a (2, 64, 32, 32) map took 1.22 ms in NCHW against 0.056 ms through
    channels-last, conversions included (one thread). With gradients the NCHW kernel is as fast.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu" or x.dim() != 4:
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous(
            memory_format=torch.contiguous_format if x.is_contiguous() else torch.channels_last)


@dataclass
class VisionConfig:
    pretrained: str = doc_field("none", "imagenet | none | path to a ResNet18 state-dict file (.pth or .safetensors)")
    trainable: Literal["all", "layer4", "none"] = doc_field("all", "which ResNet layers train; frozen ones stay in eval mode")
    norm: Literal["batch", "group"] = doc_field("group", "BatchNorm, or GroupNorm (better when training from scratch)")
    feature_layer: Literal["layer2", "layer3", "layer4"] = doc_field(
        "layer4", "stage whose map becomes tokens: layer3 keeps 2x finer spatial detail (stride 16), layer2 "
                  "4x (stride 8: 4x the tokens of layer3, for small targets such as the stock reach goal)")
    augment_shift: int = doc_field(0, "random shift by up to this many pixels during training (0 = off)")
    crop: int = doc_field(0, "Diffusion Policy crop: a random crop x crop window in training, the center one "
                             "when evaluating (0 = off; PushT: 84 of 96)")

    def __post_init__(self):
        if self.augment_shift < 0 or self.crop < 0:
            raise ConfigError("vision.augment_shift and vision.crop must be >= 0")
        if self.trainable == "layer4" and self.feature_layer != "layer4":
            raise ConfigError(f"vision.trainable=layer4 with feature_layer={self.feature_layer} would train nothing "
                              "in the trunk")


def imagenet_weights_path() -> Path:
    """Where torchvision caches the ImageNet ResNet18 weights."""
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_resnet18_weights(pretrained: str) -> dict[str, torch.Tensor] | None:
    """State dict for ``pretrained`` (imagenet | none | path); a clear error when offline."""
    if pretrained == "none":
        return None
    if pretrained == "imagenet":
        path = imagenet_weights_path()
        if not path.is_file():
            url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
            if not host_reachable(urlparse(url).hostname, timeout=1.0):
                raise MissingResourceError(
                    f"ImageNet ResNet18 weights are not cached and {url} cannot be reached (offline?). "
                    f"Download {path.name} on a connected machine and put it at {path}, "
                    "or set vision.pretrained to a local weights file, or to 'none' to train from scratch.")
            return torchvision.models.ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    path = Path(pretrained)
    if not path.is_file():
        raise MissingResourceError(f"vision.pretrained: weights file {path} does not exist (or use imagenet | none)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _batchnorm_to_groupnorm(module: nn.Module) -> None:
    """Swap every BatchNorm2d for GroupNorm (16 channels a group), keeping the affine weights."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            group_norm = nn.GroupNorm(child.num_features // 16, child.num_features)
            with torch.no_grad():
                group_norm.weight.copy_(child.weight)
                group_norm.bias.copy_(child.bias)
            setattr(module, name, group_norm)
        else:
            _batchnorm_to_groupnorm(child)


class VisionEncoder(nn.Module):
    """ResNet18 trunk -> 1x1 projection -> tokens with a learned 2-D position and camera embedding.

    Args:
        config: VisionConfig.
        d_model: token width.
        image_size: (H, W) of the images given to forward.
        n_cameras: cameras per observation; they share the trunk and differ by camera embedding.
    """

    def __init__(self, config: VisionConfig, d_model: int, image_size: tuple[int, int], n_cameras: int):
        super().__init__()
        self.config = config
        resnet = torchvision.models.resnet18(weights=None)
        state = load_resnet18_weights(config.pretrained)
        if state is not None:
            resnet.load_state_dict(state)
        if config.norm == "group":
            _batchnorm_to_groupnorm(resnet)
        pool = resnet.maxpool
        resnet.maxpool = MaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                   ceil_mode=pool.ceil_mode)
        # The ReLU after the max-pool, not before: the two commute exactly (max and ReLU are both
        # monotone), values and gradients alike, and the ReLU then sees a quarter of the pixels.
        stages = ["conv1", "bn1", "maxpool", "relu", "layer1", "layer2", "layer3", "layer4"]
        stages = stages[: stages.index(config.feature_layer) + 1]
        self.trunk = nn.Sequential(*[getattr(resnet, name) for name in stages])
        channels, stride = _STAGES[config.feature_layer]
        if config.crop > min(image_size):
            raise ValueError(f"vision.crop={config.crop} is larger than the {tuple(image_size)} images")
        seen = (config.crop, config.crop) if config.crop else tuple(image_size)  # what the trunk sees
        self.grid = (math.ceil(seen[0] / stride), math.ceil(seen[1] / stride))
        self.proj = nn.Conv2d(channels, d_model, kernel_size=1)
        self.row_embed = nn.Parameter(torch.randn(self.grid[0], 1, d_model) * 0.02)
        self.col_embed = nn.Parameter(torch.randn(1, self.grid[1], d_model) * 0.02)
        self.camera_embed = nn.Parameter(torch.randn(n_cameras, 1, d_model) * 0.02)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.n_cameras = n_cameras
        self.image_size = tuple(image_size)
        self._frozen = self._freeze(config.trainable)

    def _freeze(self, trainable: str) -> list[nn.Module]:
        if trainable == "all":
            return []
        frozen = list(self.trunk) if trainable == "none" else list(self.trunk)[:-1]
        for module in frozen:
            module.requires_grad_(False)
        return frozen

    def train(self, mode: bool = True) -> "VisionEncoder":
        super().train(mode)
        for module in self._frozen:  # frozen BatchNorm keeps its running statistics
            module.eval()
        return self

    @property
    def tokens_per_image(self) -> int:
        return self.grid[0] * self.grid[1]

    @staticmethod
    def _windows(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Image i's (h, w) window at (top[i], left[i])."""
        n, c, _, width = x.shape
        rows = (top[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None].expand(n, c, h, width)
        cols = (left[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :].expand(n, c, h, w)
        return x.gather(2, rows).gather(3, cols)

    def _random_shift(self, x: torch.Tensor) -> torch.Tensor:
        """DrQ-style augmentation: pad by replication, crop back at a random offset per image."""
        pad = self.config.augment_shift
        n, _, h, w = x.shape
        padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
        offsets = torch.randint(0, 2 * pad + 1, (2, n), device=x.device)
        return self._windows(padded, offsets[0], offsets[1], h, w)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """A random window per image in training, the center window otherwise."""
        size, (n, _, h, w) = self.config.crop, x.shape
        if self.training:
            top = torch.randint(0, h - size + 1, (n,), device=x.device)
            left = torch.randint(0, w - size + 1, (n,), device=x.device)
        else:
            top = torch.full((n,), (h - size) // 2, device=x.device)
            left = torch.full((n,), (w - size) // 2, device=x.device)
        return self._windows(x, top, left, size, size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images: (B, N_cam, 3, H, W), uint8 0..255 or float 0..1.
        Returns:
            (B, N_cam * h * w, d_model) tokens.
        """
        if images.dim() != 5 or images.shape[1] != self.n_cameras or images.shape[2] != 3:
            raise ValueError(f"images must be (B, {self.n_cameras}, 3, H, W); got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"images are {tuple(images.shape[-2:])}, the encoder was built for {self.image_size}")
        batch = images.shape[0]
        x = rearrange(images, "b n c h w -> (b n) c h w")
        x = x.float() / 255.0 if images.dtype == torch.uint8 else x.float()
        if self.training and self.config.augment_shift > 0:
            x = self._random_shift(x)
        if self.config.crop:
            x = self._crop(x)
        x = (x - self.mean) / self.std
        if self.trunk[0].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # the model was put in channels-last
        features = self.proj(self.trunk(x))
        tokens = rearrange(features, "(b n) d h w -> b n h w d", b=batch)
        tokens = tokens + (self.row_embed + self.col_embed)[None, None] + self.camera_embed[None, :, :, None]
        return rearrange(tokens, "b n h w d -> b (n h w) d")
