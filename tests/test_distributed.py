"""Data-parallel training: two real gloo processes give the gradients of one process with the global batch."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from pipeline.cli import cli
from pipeline.core.scaling import resolve_scale
from pipeline.data.datasets import batches, load_dataset
from pipeline.models import build
from pipeline.train.ddp import DistContext, data_parallel, rank_seed, shard
from pipeline.train.trainer import init_for_training, load_checkpoint

PER_RANK = 8
WORLD = 2
RES = 16


def _model() -> nn.Module:
    model = init_for_training(build("resnet18", resolve_scale(phi=-4), 10), seed=0)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # dropout masks are per-rank random by design; the comparison is of everything else
    return model.train()


def _first_batch(indices: np.ndarray, size: int):
    ds = load_dataset("builtin:digits")
    return next(iter(batches(ds, indices, ds.default_preprocess(RES), size)))


def _epoch_order() -> np.ndarray:
    split = load_dataset("builtin:digits").split()
    return split.train[np.random.default_rng([0, 1]).permutation(len(split.train))]  # as the trainer, epoch 1


def _grads(model: nn.Module) -> dict[str, np.ndarray]:
    return {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()}


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        dist = DistContext(rank, WORLD, rank, "gloo")
        model = data_parallel(_model(), dist, torch.device("cpu"))
        _, x, y = _first_batch(shard(_epoch_order(), dist), PER_RANK)
        F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        if rank == 0:
            np.savez(out, **_grads(model.module))
    finally:
        tdist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_shards_of_one_step_are_the_global_batch():
    order = np.arange(100, 200)
    parts = [shard(order, DistContext(r, 3, r, "gloo")) for r in range(3)]
    assert [len(p) for p in parts] == [34, 34, 34]  # padded by wrapping, as DistributedSampler does
    first = sorted(np.concatenate([p[:4] for p in parts]))
    assert first == sorted(order[:12])  # step one of three ranks × 4 = the first 12 of the order
    assert shard(order, None) is order and rank_seed(7, 0) == 7 and rank_seed(7, 1) != rank_seed(7, 2)


def test_two_processes_give_the_gradients_of_one_with_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "grads.npz"
    # spawn, not fork: forking a process whose other threads (thread pools, test servers) hold locks can hang
    ctx = mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 300  # a hung collective fails the test instead of stalling the suite
    while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):  # False until every worker has exited
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two gloo workers did not finish within 300 s")
    ddp = dict(np.load(out))
    single = _model()
    _, x, y = _first_batch(_epoch_order(), PER_RANK * WORLD)
    F.cross_entropy(single(x), y, label_smoothing=0.1).backward()
    ref = _grads(single)
    assert set(ddp) == set(ref)
    worst = max(float(np.abs(ddp[k] - ref[k]).max()) for k in ref)
    assert worst < 1e-5, worst
    assert max(float(np.abs(v).max()) for v in ref.values()) > 1e-3  # real gradients, not all zeros


@pytest.mark.slow
def test_deploy_train_nproc_2_writes_one_checkpoint(tmp_path):
    out = tmp_path / "ddp"
    r = CliRunner().invoke(cli, ["train", "--family", "resnet18", "--phi", "-4", "--data", "builtin:digits",
                                 "--epochs", "1", "--resolution", str(RES), "--batch-size", "32", "--nproc", "2",
                                 "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["settings"]["world_size"] == 2 and d["settings"]["global_batch"] == 64
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "train.json"]
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck.model() is not None and ck.family == "resnet18"
