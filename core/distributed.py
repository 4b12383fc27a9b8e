"""Multi-process training with PyTorch's own engine: ``torchrun --nproc_per_node=N train.py ...``.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a single process and
a no-op. NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), Gloo on CPU.
"""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Rank 0 works alone while the others wait in a collective: collecting demonstrations, validation
# rollouts. The default (10 min for NCCL) would kill a run during a long collection.
COLLECTIVE_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, checkpoints and evaluates; the others only train."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any); returns this process's info and device."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo(), device
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE is set but {missing} are not: launch with torchrun "
                           "(torchrun --nproc_per_node=N train.py ...)")
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"distributed training runs on CUDA (NCCL) or CPU (Gloo), not {device.type}")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=info.rank,
                            world_size=info.world_size, timeout=COLLECTIVE_TIMEOUT)
    return info, device


def replica_max_difference(module: torch.nn.Module, info: DistInfo) -> float:
    """Largest absolute parameter difference between any rank and rank 0 (0.0 when in sync).

    DDP keeps replicas identical by construction; this checks it, since a replica that drifts (a
    parameter outside the gradient all-reduce, a rank-dependent update) fails silently otherwise.
    """
    if not info.enabled:
        return 0.0
    flat = torch.cat([p.detach().float().flatten() for p in module.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    difference = (flat - reference).abs().max()
    dist.all_reduce(difference, op=dist.ReduceOp.MAX)
    return float(difference)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(value, info: DistInfo):
    """Rank 0's ``value`` on every rank (e.g. a run directory named after the time of day)."""
    if not info.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
