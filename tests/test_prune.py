"""Pruning to a measured latency: channels really removed, parity, the budget met, the from-scratch control."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_timing

from pipeline.analysis.prune import PruneOptions, conv_channels, judged_ms, prune_run
from pipeline.cli.app import cli
from pipeline.core.errors import DeployError
from pipeline.core.scaling import resolve_scale
from pipeline.data.datasets import load_dataset
from pipeline.export.onnx import export_onnx
from pipeline.measure.device import LocalDevice
from pipeline.models import build
from pipeline.predict.targets import load_target
from pipeline.train.trainer import save_checkpoint

RES = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    ds = load_dataset("builtin:digits")
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:8] for c in range(10)])
    data = root / "d.npz"
    np.savez(data, x=ds.images(idx)[..., 0].astype(np.uint8), y=ds.labels[idx])
    torch.manual_seed(0)
    model = build("efficientnet", resolve_scale(phi=-5), num_classes=10).eval()
    save_checkpoint(root / "run" / "checkpoint.pt", model, load_dataset(data).default_preprocess(RES),
                    [str(c) for c in range(10)], None, train={"epochs": 1})
    export_onnx(model, root / "base.onnx", resolution=RES, exporter="torchscript", opset=17)
    base = judged_ms(LocalDevice(load_target("host"), threads=1).measure(root / "base.onnx", tiny_timing(),
                                                                           memory=False))
    return root, data, base


def test_prune_to_a_measured_budget(run):
    root, data, base = run
    budget = 0.8 * base
    opts = PruneOptions(latency=budget, threads=1, finetune_epochs=1, step=0.2, timing=tiny_timing(), noise_margin=0.1,
                        opset=17)  # TorchScript exporter: the dynamo one is covered by tests/test_export.py
    r = prune_run(root / "run", data, options=opts, out_dir=root / "out")
    p = r["pruned"]
    assert r["channels_shrank"] and p["conv_channels"] < r["original"]["conv_channels"]
    assert p["macs"] < r["original"]["macs"] and p["params"] < r["original"]["params"]
    assert not p["parity"]["failures"] and p["fits"] and p["latency"]["judged_ms"] <= budget
    assert p["latency"]["source"] == "measured"
    assert all(c % 8 == 0 or c < 8 for c in p["conv_channels_per_layer"][:1])  # stem rounded to 8
    assert r["steps"][-1]["fits"] and not any(s["fits"] for s in r["steps"][:-1])
    assert conv_channels(root / "out" / "model.onnx") == p["conv_channels_per_layer"]
    # the classifier is kept whole
    pruned = torch.load(root / "out" / "pruned.pt", weights_only=False)
    assert pruned.classifier.out_features == 10
    assert r["scratch"]["epochs"] == 2 and len(r["scratch"]["history"]) == 3  # run's 1 epoch + 1 fine-tune
    scratch = torch.load(root / "out" / "scratch.pt", weights_only=False)
    assert [m.out_channels for m in scratch.modules() if isinstance(m, torch.nn.Conv2d)] == \
           [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    saved = json.loads((root / "out" / "compression.json").read_text())
    assert saved["pruned"]["conv_channels"] == p["conv_channels"]
    assert "from scratch" in (root / "out" / "report.md").read_text()


def test_prune_refusals(run):
    root, data, base = run
    with pytest.raises(DeployError, match="nothing to prune"):
        prune_run(root / "run", data, options=PruneOptions(latency=base * 100, threads=1, timing=tiny_timing()),
                  out_dir=root / "x")
    res = CliRunner().invoke(cli, ["compress", str(root / "run"), "--method", "prune", "--latency", "1ms",
                                   "--data", str(data), "--target", "jetson-nano", "--out", str(root / "y")])
    assert res.exit_code == 1 and "not measurable" in res.output
    res = CliRunner().invoke(cli, ["compress", str(root / "run"), "--method", "prune", "--latency", f"{base * 3}ms",
                                   "--noise-margin", "12", "--data", str(data), "--out", str(root / "z")])
    assert res.exit_code == 2 and "nothing to prune" in res.output and "12% noise margin" in res.output
