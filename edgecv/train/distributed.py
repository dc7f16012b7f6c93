"""Multi-GPU / multi-node through torchrun and torch.distributed (DDP + DistributedSampler); no custom launcher.

``torchrun --nproc-per-node N -m edgecv train RECIPE`` sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*; the trainer calls
:func:`init_from_env`, wraps the model in DDP and shards the data. Only rank 0 writes checkpoints and metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for a single process).

    The backend is NCCL when CUDA is available, else gloo (CPU).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def current() -> DistInfo:
    """The process group this process is in (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (identity when not distributed). Works for CPU tensors on NCCL by staging."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
    buf = t.to(dev)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch-norm running stats) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step each rank still holds its own
    running statistics; this makes the saved and evaluated model the same on every rank.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    nccl = dist.get_backend() == "nccl"
    for b in module.buffers():
        if nccl and b.device.type != "cuda":
            buf = b.cuda()
            dist.broadcast(buf, src)
            b.copy_(buf.cpu())
        else:
            dist.broadcast(b, src)
