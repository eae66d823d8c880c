"""Data-parallel training with torch.distributed (``torchrun``; NCCL on GPUs, gloo on CPU).

Every process takes its shard of each batch (``idx[rank::world]``, DistributedSampler's
interleaving), runs inference locally, and the local weight updates are averaged with an
all-reduce before the learning step, weighted by shard size so the result is the
global batch mean exactly. Only rank 0 writes files.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import torch

from pcsim.engines.torch.params import flatten_named, unflatten_named

__all__ = ["Parallel", "from_env", "is_main_process"]


@dataclass
class Parallel:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    active: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        return idx[self.rank::self.world]

    def reduce_grads(self, grads: dict, n_local: int, n_global: int) -> dict:
        """Turn per-rank batch means (by name) into the global batch mean: one all-reduce
        of the weighted sums, flat."""
        if not self.active:
            return grads
        import torch.distributed as dist
        flat = flatten_named(grads) * n_local
        dist.all_reduce(flat)
        flat /= n_global
        return unflatten_named(flat, grads)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.active:
            import torch.distributed as dist
            value = value.clone()
            dist.all_reduce(value)
        return value

    def gather(self, obj) -> list:
        """Every rank's ``obj``, on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj``, on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the group together: a barrier first, so that no rank tears down its
        gloo pairs while a peer still has work in flight on them (which aborts the
        peer), then ``destroy_process_group`` while the interpreter is fully alive."""
        if self.active:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()
            self.active = False


def is_main_process() -> bool:
    """Whether this process is rank 0 of the ``torchrun`` group (or runs alone)."""
    return int(os.environ.get("RANK", "0")) == 0


def from_env(device: torch.device, timeout_s: float = 300.0) -> tuple[Parallel, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    A rank that dies makes the others fail at their next collective after
    ``timeout_s`` seconds with a clear error, instead of hanging.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Parallel(), device
    import torch.distributed as dist
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=_dt.timedelta(seconds=timeout_s))
    return Parallel(rank, world, True), device
