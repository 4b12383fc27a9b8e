"""The optimizer and learning-rate schedule of a run, shared by train.py and the benchmarks that time it."""

import contextlib
import math

import torch
from torch.nn.parallel import DistributedDataParallel

from experiment.config import TrainConfig


def make_optimizer(parameters: list[torch.nn.Parameter], train: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``parameters``; the fused kernel on CPU and CUDA (one pass over all tensors, same update)."""
    device = parameters[0].device.type
    return torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay, betas=(0.9, train.adam_beta2),
                             fused=True if device in ("cpu", "cuda") else None)


def warmup_cosine(warmup: int, total: int):
    """LambdaLR factor: linear warm-up over ``warmup`` steps, then a cosine decay to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(train.warmup_steps, train.steps))


def split_batch(batch: dict, parts: int) -> list[dict]:
    """``parts`` equal slices of a batch along its first dimension (tensors and lists alike): the
    micro-batches of gradient accumulation (``train.micro_batches``)."""
    sizes = {len(value) for value in batch.values()}
    if len(sizes) != 1 or next(iter(sizes)) % parts:
        raise ValueError(f"cannot split a batch of sizes {sorted(sizes)} into {parts} equal micro-batches")
    size = sizes.pop() // parts
    return [{k: v[i * size:(i + 1) * size] for k, v in batch.items()} for i in range(parts)]


def accumulate_gradients(model: torch.nn.Module, batch: dict, autocast, micro_batches: int = 1
                         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward and backward of ``batch`` in ``micro_batches`` slices whose gradients add up (each
    loss scaled by 1 / micro_batches; under DDP only the last slice synchronizes): the whole batch's
    gradient with one slice's activations. Returns the loss (detached) and metrics, averaged."""
    parts = split_batch(batch, micro_batches) if micro_batches > 1 else [batch]
    loss, metrics = 0.0, {}
    for i, part in enumerate(parts):
        defer_sync = isinstance(model, DistributedDataParallel) and i < len(parts) - 1
        with model.no_sync() if defer_sync else contextlib.nullcontext():
            with autocast:
                part_loss, part_metrics = model(part)
            (part_loss / len(parts)).backward()
        loss = loss + part_loss.detach() / len(parts)
        for name, value in part_metrics.items():
            metrics[name] = metrics.get(name, 0.0) + value / len(parts)
    return loss, metrics
