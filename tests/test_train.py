"""Training: checkpoints (preprocess round-trip), weight inheritance, distillation loss, tiny real runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.core.errors import ModelInvalid, UsageError
from pipeline.core.scaling import CompoundScaling, resolve_scale
from pipeline.data.datasets import Preprocess, load_dataset
from pipeline.models import build
from pipeline.train.trainer import (
    TrainOptions,
    distillation_loss,
    inherit_weights,
    init_for_training,
    load_checkpoint,
    save_checkpoint,
    train,
)

REQUIRED_KEYS = {"val_accuracy", "epochs", "checkpoint", "params", "seconds"}
TINY = resolve_scale(phi=-4)


@pytest.fixture(scope="module")
def digits_small(tmp_path_factory):
    """300 digits (30 per class) as an .npz: real data, a fraction of the cost."""
    ds = load_dataset("builtin:digits")
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:30] for c in range(10)])
    path = tmp_path_factory.mktemp("data") / "digits300.npz"
    np.savez(path, x=ds.images(idx)[..., 0].astype(np.uint8), y=ds.labels[idx])
    return path


# --- distillation loss ---------------------------------------------------------------------------


def test_distillation_loss_matches_hand_computation():
    s, t, label, temp, a = [1.0, 0.0, -1.0], [0.0, 1.0, 0.0], 0, 2.0, 0.5
    ce = math.log(sum(math.exp(v) for v in s)) - s[label]  # 0.407606

    def soft(z):
        e = [math.exp(v / temp) for v in z]
        return [v / sum(e) for v in e]

    ps, pt = soft(s), soft(t)
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))  # KL(teacher ‖ student) = 0.111824
    expected = (1 - a) * ce + a * temp**2 * kl
    assert expected == pytest.approx(0.427451, abs=1e-5)
    got = distillation_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([label]), temp, a)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_distillation_loss_limits():
    s = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.3, -0.2]])
    y = torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert distillation_loss(s, torch.randn(2, 3), y, 3.0, 0.0).item() == pytest.approx(ce.item())
    assert distillation_loss(s, s.clone(), y, 3.0, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(UsageError, match="temperature"):
        distillation_loss(s, s, y, 0.0, 0.5)
    with pytest.raises(UsageError, match="alpha_kd"):
        distillation_loss(s, s, y, 1.0, 1.5)


# --- weight inheritance --------------------------------------------------------------------------


def test_inherit_identical_scale_copies_everything():
    src = init_for_training(build("efficientnet", TINY, 10), 1)
    dst = init_for_training(build("efficientnet", TINY, 10), 2)
    report = inherit_weights(dst, src.state_dict())
    assert report.inherited_params == report.total_params and report.share == 1.0
    assert report.sliced_tensors == 0 and report.new_blocks == 0
    for (k, a), b in zip(dst.state_dict().items(), src.state_dict().values()):
        assert torch.equal(a, b), k


def test_inherit_larger_into_smaller_slices_channels():
    big_scale, small_scale = resolve_scale(phi=-1), resolve_scale(phi=-2)
    src = init_for_training(build("efficientnet", big_scale, 10), 1)
    dst = init_for_training(build("efficientnet", small_scale, 10), 2)
    report = inherit_weights(dst, src.state_dict(), source="phi-1")
    total = sum(p.numel() for p in dst.parameters())
    assert report.total_params == total
    # shrinking: every destination element comes from the (larger) source, most of them sliced
    assert report.inherited_params == total and report.share == 1.0
    assert report.sliced_tensors > 0 and report.exact_tensors > 0 and report.new_blocks == 0
    assert 0 < report.exact_params < total
    src_total = sum(p.numel() for p in src.parameters())
    assert report.source_params == src_total and report.source_share_used == pytest.approx(total / src_total)
    # the stem conv has fewer channels in φ=-2: it is the leading slice of the source's
    w_dst, w_src = dst.state_dict()["stem.0.weight"], src.state_dict()["stem.0.weight"]
    assert w_dst.shape[0] < w_src.shape[0]
    assert torch.equal(w_dst, w_src[: w_dst.shape[0], : w_dst.shape[1]])
    # a stage with fewer blocks in the destination takes the source's first blocks
    key = next(k for k in dst.state_dict() if k.startswith("stages.5.1."))
    s = src.state_dict()[key]
    d = dst.state_dict()[key]
    assert torch.equal(d, s[tuple(slice(0, n) for n in d.shape)])
    # inherited count, independently: the overlap of every parameter
    src_sd = src.state_dict()
    overlap = sum(math.prod(min(a, b) for a, b in zip(p.shape, src_sd[k].shape))
                  for k, p in dst.named_parameters() if k in src_sd)
    assert report.inherited_params == overlap


def test_inherit_smaller_into_larger_pads_and_zero_inits_new_blocks():
    src = init_for_training(build("efficientnet", resolve_scale(phi=-2), 10), 1)
    dst = init_for_training(build("efficientnet", resolve_scale(phi=-1), 10), 2)
    fresh = {k: v.clone() for k, v in dst.state_dict().items()}
    report = inherit_weights(dst, src.state_dict())
    assert report.new_blocks > 0 and 0 < report.share < 1 and report.source_share_used == 1.0
    w, ws = dst.state_dict()["stem.0.weight"], src.state_dict()["stem.0.weight"]
    n = ws.shape[0]
    assert torch.equal(w[:n], ws) and torch.equal(w[n:], fresh["stem.0.weight"][n:])  # extra channels keep init
    # a block the source lacks, with a residual connection, starts as the identity
    block = next(b for stage in dst.stages for j, b in enumerate(stage)
                 if j >= len(src.stages[list(dst.stages).index(stage)]) and b.residual)
    block.eval()
    x = torch.randn(2, block.block[0][0].in_channels, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), x)


def test_inherit_resnet_kernels_and_classifier_choice():
    src = init_for_training(build("resnet18", CompoundScaling().per_dimension(0, -2, -4), 5), 1)
    dst = init_for_training(build("resnet18", CompoundScaling().per_dimension(-2, -4, -4), 7), 2)
    fresh = dst.classifier.weight.clone()
    report = inherit_weights(dst, src.state_dict(), copy_classifier=False)
    assert report.classifier.startswith("fresh") and torch.equal(dst.classifier.weight, fresh)
    assert 0 < report.share < 1


# --- checkpoints ---------------------------------------------------------------------------------


def test_checkpoint_round_trips_preprocess_and_weights(tmp_path):
    model = init_for_training(build("mobilenetv2", TINY.with_resolution(24), 3), 0).eval()
    pp = Preprocess(resolution=24, color="gray", input_max=16.0, mean=(0.3,) * 3, std=(0.2,) * 3, resize="bicubic")
    path = save_checkpoint(tmp_path / "run" / "checkpoint.pt", model, pp, ["a", "b", "c"], 0.75, epoch=3)
    ck = load_checkpoint(tmp_path / "run")  # a run directory works too
    assert ck.preprocess == pp and ck.classes == ("a", "b", "c") and ck.val_accuracy == 0.75
    assert ck.family == "mobilenetv2" and ck.scale == model.scale and ck.meta["epoch"] == 3
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(ck.model()(x), model(x))
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp file


def test_bad_checkpoints_are_named(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelInvalid, match="cannot read checkpoint .*junk.pt"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ModelInvalid, match="not an edgefit checkpoint"):
        load_checkpoint(other)
    with pytest.raises(ModelInvalid, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


# --- real training runs --------------------------------------------------------------------------


def test_cli_train_json_and_checkpoint(tmp_path, digits_small):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"exported from an older checkpoint")
    res = CliRunner().invoke(cli, ["train", "--family", "efficientnet", "--phi", "-4", "--data", str(digits_small),
                                   "--epochs", "1", "--resolution", "16", "--batch-size", "32", "--out", str(out),
                                   "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert REQUIRED_KEYS <= set(data)
    assert 0.0 <= data["val_accuracy"] <= 1.0 and data["epochs"] == 1 and data["params"] > 0
    assert data["resolution"] == 16 and data["nominal_resolution"] == TINY.resolution
    assert data["checkpoint"] == str(out / "checkpoint.pt") and (out / "checkpoint.pt").is_file()
    assert json.loads((out / "train.json").read_text())["val_accuracy"] == data["val_accuracy"]
    assert not (out / "model.onnx").exists()  # stale: it described the previous checkpoint
    ck = load_checkpoint(out)
    assert ck.preprocess.resolution == 16 and ck.scale.resolution == 16 and len(ck.classes) == 10
    assert ck.meta["dataset"]["split"]["val"] == 60


def test_train_is_deterministic_and_transfers(tmp_path, digits_small):
    kw = dict(epochs=1, resolution=16, batch_size=32, seed=5)
    a = train("efficientnet", TINY, digits_small, out_dir=tmp_path / "a", options=TrainOptions(**kw))
    b = train("efficientnet", TINY, digits_small, out_dir=tmp_path / "b", options=TrainOptions(**kw))
    sa, sb = load_checkpoint(a.checkpoint).state_dict, load_checkpoint(b.checkpoint).state_dict
    assert a.val_accuracy == b.val_accuracy and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = train("efficientnet", resolve_scale(phi=-5), digits_small, out_dir=tmp_path / "c",
              options=TrainOptions(init_from=tmp_path / "a", **kw))
    assert c.transfer and 0 < c.transfer["share"] <= 1 and c.transfer["classifier"] == "inherited"
    with pytest.raises(UsageError, match="same family"):
        train("mobilenetv2", TINY, digits_small, out_dir=tmp_path / "d", options=TrainOptions(init_from=tmp_path / "a",
                                                                                              **kw))


def test_train_with_teacher(tmp_path, digits_small):
    kw = dict(epochs=1, resolution=16, batch_size=32)
    t = train("efficientnet", TINY, digits_small, out_dir=tmp_path / "t", options=TrainOptions(**kw))
    s = train("mobilenetv2", resolve_scale(phi=-5), digits_small, out_dir=tmp_path / "s",
              options=TrainOptions(teacher=t.checkpoint, temperature=2.0, alpha_kd=0.7, **kw))
    assert s.teacher["family"] == "efficientnet" and s.teacher["alpha_kd"] == 0.7
    assert s.teacher["val_accuracy"] == pytest.approx(t.val_accuracy)
