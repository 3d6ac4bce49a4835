"""Data-parallel training with PyTorch's own tools: ``torch.distributed.run`` (torchrun) and DDP.

``deploy train --nproc N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]`` (and ``deploy fit
--train-epochs E --nproc N``) does not schedule anything itself. :func:`launch` writes the training
request to a JSON file and runs ``python -m torch.distributed.run`` on this module; torchrun starts
the N worker processes on this node (and meets the other nodes at the rendezvous endpoint), and
each worker runs :func:`main`: join the process group (gloo on CPU, NCCL on GPUs), then the same
:func:`pipeline.train.trainer.train` as a single process, with a :class:`~pipeline.train.ddp.DistContext`
(the step's pieces live in :mod:`pipeline.train.ddp`).

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
from dataclasses import asdict
from pathlib import Path

from pipeline.core.errors import DeployError, UsageError
from pipeline.train.ddp import DistContext

CHILD_ENV = "EDGEFIT_DDP_CHILD"


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


__all__ = ["CHILD_ENV", "launch", "main"]


if __name__ == "__main__":  # started by torch.distributed.run
    sys.exit(main())
