"""`deploy similarity` between two tiny trained scales of EfficientNet on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli.app import cli
from pipeline.core.scaling import resolve_scale
from pipeline.data.datasets import load_dataset
from pipeline.models import build
from pipeline.train.trainer import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Checkpoints of φ=−6 and φ=−4 (seeded PyTorch init, 16 px) and 200 digits: what a run holds, in a second.

    Training is not what is under test here (tests/test_train.py covers it), and untrained weights
    still give distinct, structured representations."""
    root = tmp_path_factory.mktemp("sim")
    ds = load_dataset("builtin:digits")
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:20] for c in range(10)])
    data = root / "digits200.npz"
    np.savez(data, x=ds.images(idx)[..., 0].astype(np.uint8), y=ds.labels[idx])
    pre = load_dataset(data).default_preprocess(16)
    for phi in (-6, -4):
        torch.manual_seed(phi + 10)
        model = build("efficientnet", resolve_scale(phi=phi), num_classes=10)
        save_checkpoint(root / f"phi{phi}" / "checkpoint.pt", model, pre, [str(c) for c in range(10)], None)
    return root, data


def invoke(*args):
    return CliRunner().invoke(cli, ["similarity", *map(str, args)])


def test_similarity_between_scales_writes_matrix_heatmap_report(runs):
    root, data = runs
    out = root / "out"
    res = invoke(root / "phi-6", root / "phi-4", "--data", data, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    n_stages = 9  # stem, 7 stages, head
    assert d["rows"] == d["columns"] and len(d["rows"]) == n_stages and d["rows"][0] == "stem"
    m = np.asarray(d["matrix"])
    assert m.shape == (n_stages, n_stages) and np.all(m <= 1 + 1e-9) and np.all(m > -1)
    assert [x["layer"] for x in d["matched"]] == d["rows"]
    assert d["pooling"] == "global-average" and d["samples"] == 40  # the val split of 200 images
    assert d["a"]["layers"][-1]["channels"] < d["b"]["layers"][-1]["channels"]  # φ=−6 is narrower
    assert (out / "similarity.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "similarity.json").read_text())["matrix"] == d["matrix"]
    assert "similarity.png" in (out / "report.md").read_text()
    # a run compared with itself: 1 on the diagonal
    same = json.loads(invoke(root / "phi-6", root / "phi-6", "--data", data, "--out", root / "same",
                             "--method", "debiased-cka", "--json").stdout)
    assert all(abs(x["value"] - 1) < 1e-6 for x in same["matched"])


def test_similarity_errors(runs):
    root, data = runs
    res = invoke(root / "phi-6", root / "phi-4", "--data", data, "--out", root / "e1", "--layers", "stem,nope")
    assert res.exit_code == 1 and "no module named 'nope'" in res.output
    res = invoke(root / "phi-6", root / "phi-4", "--data", data, "--out", root / "e2", "--method", "pwcca")
    assert res.exit_code == 1 and "needs at least" in res.output and "40 validation images" in res.output
    res = invoke(root / "phi-6", root / "phi-4", "--data", data, "--method", "cosine")
    assert res.exit_code == 2
    # named modules work, and CCA on narrow layers with enough samples
    res = invoke(root / "phi-6", root / "phi-4", "--data", data, "--out", root / "ok", "--layers", "stem",
                 "--method", "svcca", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"] == ["stem"]
