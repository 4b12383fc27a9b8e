"""Device selection for ``device: auto``."""

import torch

from core.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; anything else must name a device this machine has."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"device '{name}' is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device '{name}': this machine has no CUDA GPU; use device=auto or cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA device(s)")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"device '{name}': MPS is not available here; use device=auto or cpu")
        if device.type not in ("cpu", "cuda", "mps"):
            raise UserError(f"device '{name}' is not supported; use auto, cpu, cuda, cuda:N or mps")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
