"""Data-parallel training with PyTorch's own tools: ``torch.distributed.run`` (torchrun) and DDP.

``deploy train --nproc N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]`` (and ``deploy fit
--train-epochs E --nproc N``) does not schedule anything itself. :func:`launch` writes the training
request to a JSON file and runs ``python -m torch.distributed.run`` on this module; torchrun starts
the N worker processes on this node (and meets the other nodes at the rendezvous endpoint), and
each worker runs :func:`main`: join the process group (gloo on CPU, NCCL on GPUs), then the same
:func:`pipeline.train.trainer.train` as a single process, with a :class:`DistContext`.

What changes in a worker (:func:`pipeline.train.trainer.train` with ``dist``):

* **Data.** Every rank draws the same shuffled order for an epoch (seeded by ``--seed`` and the
  epoch) and keeps its shard, as :class:`torch.utils.data.DistributedSampler` splits it
  (:func:`shard`): rank r takes positions r, r+W, r+2W, … So the first step of all ranks together
  sees exactly the first ``W × batch`` samples a single process with that batch would see.
  ``--batch-size`` is per rank; the run records ``world_size`` and the effective ``global_batch``.
* **BatchNorm** statistics are computed over the global batch (:class:`SyncBatchNormCPU` on CPU,
  where torch's ``SyncBatchNorm`` has no kernel; torch's own on GPUs), so the gradients are those
  of one process with the global batch, not merely close to them.
* **Seeds.** The model starts identical everywhere (DDP broadcasts rank 0's weights); anything
  random inside a step (dropout) uses a per-rank seed derived from ``--seed`` (:func:`rank_seed`).
* **Only rank 0 writes** the checkpoint and ``train.json``, and reports progress.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import DeployError, UsageError

CHILD_ENV = "EDGEFIT_DDP_CHILD"
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


# --- launching ---------------------------------------------------------------------------------------


def launch(family: str, scale, data: str | Path, *, out_dir: str | Path, options, nproc: int, nnodes: int = 1,
           node_rank: int = 0, rdzv_endpoint: str | None = None,
           log: Callable[[str], None] = lambda _: None) -> dict:
    """Run ``train`` on ``nproc`` processes (× ``nnodes``) through torchrun; rank 0's ``train.json`` as a dict."""
    from pipeline.train.trainer import TRAIN_JSON

    if nproc < 1 or nnodes < 1:
        raise UsageError("--nproc and --nnodes must be at least 1.")
    if nnodes > 1 and not rdzv_endpoint:
        raise UsageError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the same on every node.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"family": family, "scale": scale.to_dict(), "data": str(data), "out_dir": str(out.resolve()),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}}
    with tempfile.TemporaryDirectory(prefix="edgefit-ddp-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
        cmd += ([f"--node-rank={node_rank}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
                if rdzv_endpoint else ["--standalone"])
        cmd += ["-m", "pipeline.train.distributed", str(spec_path)]
        log(f"launching {nproc * nnodes} training processes: {' '.join(cmd[1:4])} …")
        env = {**os.environ, CHILD_ENV: "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        if line.startswith(("epoch ", "removed ", "teacher ")) or "error" in line.lower():
            log(line)
    if proc.returncode != 0:
        tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-4:])
        raise DeployError(f"distributed training failed (torchrun exit {proc.returncode}): {tail[-600:]}")
    if node_rank != 0:
        return {"node_rank": node_rank, "note": "rank 0 (on node 0) writes the checkpoint and train.json"}
    return json.loads((out / TRAIN_JSON).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    """A worker started by torchrun: join the group, train with its shard, leave the group."""
    import torch.distributed as tdist

    from pipeline.core.scaling import Scale
    from pipeline.train.trainer import TrainOptions, train

    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    dist = DistContext.from_env()
    tdist.init_process_group(backend=dist.backend)
    try:
        say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if dist.is_main else None
        train(spec["family"], Scale.from_dict(spec["scale"]), spec["data"], out_dir=spec["out_dir"],
              options=TrainOptions(**spec["options"]), log=say, dist=dist)
    except DeployError as exc:
        print(f"error: rank {dist.rank}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        tdist.destroy_process_group()
    return 0


__all__ = ["CHILD_ENV", "DistContext", "SyncBatchNormCPU", "data_parallel", "launch", "main", "plain_batchnorm",
           "rank_seed", "shard", "sync_batchnorm"]


if __name__ == "__main__":  # started by torch.distributed.run
    sys.exit(main())
