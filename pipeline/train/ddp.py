"""The pieces of a data-parallel training step: where a rank stands, its shard, global-batch BatchNorm, DDP.

:func:`pipeline.train.trainer.train` uses these when it runs as one rank of a torchrun job
(:mod:`pipeline.train.distributed` launches it); they import nothing from the trainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import DeployError

RANK_SEED_STRIDE = 1_000_003  # a prime: per-rank seeds never collide with another run's --seed + 1, + 2, ...


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (from torchrun's environment)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistContext:
        try:
            rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        except (KeyError, ValueError):
            raise DeployError("not started by torch.distributed.run: RANK, WORLD_SIZE and LOCAL_RANK are not set; "
                              "use `deploy train --nproc N`.") from None
        return cls(rank, world, local, "nccl" if torch.cuda.is_available() else "gloo")


def rank_seed(seed: int, rank: int) -> int:
    """The seed for a rank's own randomness (dropout): ``seed`` on rank 0, distinct and reproducible elsewhere."""
    return int(seed) + RANK_SEED_STRIDE * int(rank)


def shard(order: np.ndarray, dist: DistContext | None) -> np.ndarray:
    """This rank's part of an epoch's ``order``, split exactly as ``DistributedSampler`` splits a dataset.

    The sampler sees positions ``0 … len(order)-1`` unshuffled (the order is already shuffled,
    identically on every rank), pads by wrapping to a multiple of the world size, and gives rank r
    every W-th position from r.
    """
    from torch.utils.data import DistributedSampler

    if dist is None or dist.world_size == 1:
        return order
    sampler = DistributedSampler(range(len(order)), num_replicas=dist.world_size, rank=dist.rank, shuffle=False)
    return np.asarray(order)[np.fromiter(iter(sampler), dtype=np.int64)]


class SyncBatchNormCPU(nn.BatchNorm2d):
    """BatchNorm whose training statistics cover the batch of every rank (gloo all-reduce; CPU).

    Sum, sum of squares and count are all-reduced through ``torch.distributed.nn.all_reduce``,
    which is differentiable (its backward all-reduces the gradient), so autograd gives each rank its
    share of the gradient of the global-batch loss. Evaluation uses the running statistics, as
    ``BatchNorm2d`` does; the state dict is ``BatchNorm2d``'s.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = x.shape[1]
        n = stats[2 * c]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(model: nn.Module, dist: DistContext) -> nn.Module:
    """Every ``BatchNorm2d`` of ``model`` synchronised across ranks (in place), keeping its parameters and buffers."""
    if dist.backend == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncBatchNormCPU):
            sync = SyncBatchNormCPU(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            setattr(model, name, sync)
        else:
            sync_batchnorm(child, dist)
    return model


def plain_batchnorm(model: nn.Module) -> nn.Module:
    """The inverse of :func:`sync_batchnorm` for :class:`SyncBatchNormCPU` (checkpoints hold plain modules)."""
    for name, child in list(model.named_children()):
        if isinstance(child, SyncBatchNormCPU):
            plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            plain.load_state_dict(child.state_dict())
            setattr(model, name, plain)
        else:
            plain_batchnorm(child)
    return model


def data_parallel(model: nn.Module, dist: DistContext, device: torch.device) -> nn.Module:
    """``model`` with global-batch BatchNorm, wrapped in DDP (rank 0's weights broadcast to every rank)."""
    from torch.nn.parallel import DistributedDataParallel

    model = sync_batchnorm(model, dist).to(device)
    ids = [dist.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


__all__ = ["DistContext", "SyncBatchNormCPU", "data_parallel", "plain_batchnorm", "rank_seed", "shard",
           "sync_batchnorm"]
