"""Peak memory on CPU by following every live tensor storage (torch has no CPU peak counter).

A TorchDispatchMode sees every tensor an operator creates, autograd's saved tensors and the
backward's temporaries included. Each storage is counted once, when first seen, and uncounted
by a weakref callback when it is freed, so ``peak`` is the true high-water mark of tensor
memory during the tracked region (plus whatever was registered with ``track`` beforehand).
"""

import weakref
from functools import partial

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only


class LiveStorageTracker(TorchDispatchMode):
    def __init__(self, device_type: str = "cpu"):
        super().__init__()
        self.device_type = device_type
        self._refs: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0

    def _freed(self, key: int, nbytes: int, _ref: weakref.ref) -> None:
        if self._refs.pop(key, None) is not None:
            self.current -= nbytes

    def track(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage as live (idempotent)."""
        if tensor.device.type != self.device_type:
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._refs:
            return
        nbytes = storage.nbytes()
        self._refs[key] = weakref.ref(storage, partial(self._freed, key, nbytes))
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def track_all(self, *objects) -> None:
        """Count modules' parameters, gradients and buffers, optimizers' state, and plain tensors."""
        for obj in objects:
            if isinstance(obj, torch.nn.Module):
                for tensor in list(obj.parameters()) + list(obj.buffers()):
                    self.track(tensor)
                    if tensor.grad is not None:
                        self.track(tensor.grad)
            elif isinstance(obj, torch.optim.Optimizer):
                for state in obj.state.values():
                    tree_map_only(torch.Tensor, self.track, state)
            else:
                tree_map_only(torch.Tensor, self.track, obj)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self.track, out)
        return out
