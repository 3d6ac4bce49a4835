import numpy as np
import pytest
import torch

from pipeline.core.errors import FamilyNotFound
from pipeline.core.scaling import CompoundScaling, preset
from pipeline.models import FAMILIES, build, initialize

PUBLISHED_PARAMS = {  # torchvision weight metadata, 1000 classes
    "b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232,
    "b4": 19_341_616, "b5": 30_389_784, "b6": 43_040_704, "b7": 66_347_960,
}
REFERENCE_PARAMS = {"mobilenetv2": 3_504_872, "resnet18": 11_689_512, "resnet50": 25_557_032}
# EfficientNet-Lite, 1000 classes. The reference builder (tensorflow/tpu
# models/official/efficientnet/lite/efficientnet_lite_builder.py) publishes 4.7/5.4/6.1/8.2/13.0 M in its
# README; PyTorch ports of that builder (d-li14/efficientnet-lite.pytorch: 4.652/5.417/6.092/8.197/13.007 M;
# timm's tf_efficientnet_lite*) give the exact counts below.
LITE_PARAMS = {"lite0": 4_652_008, "lite1": 5_416_680, "lite2": 6_092_072, "lite3": 8_197_096, "lite4": 13_006_568}
LITE_README_PARAMS_M = {"lite0": 4.7, "lite1": 5.4, "lite2": 6.1, "lite3": 8.2, "lite4": 13.0}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_presets_reproduce_published_parameter_counts(name):
    assert n_params(build("efficientnet", preset(name), device="meta")) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(LITE_PARAMS))
def test_lite_presets_reproduce_the_reference_builder(name):
    model = build("efficientnet-lite", preset(name), device="meta")
    assert n_params(model) == LITE_PARAMS[name]
    assert round(n_params(model) / 1e6, 1) == LITE_README_PARAMS_M[name]
    assert model.resolution == {"lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280, "lite4": 300}[name]


def test_lite_keeps_stem_head_and_end_stages_fixed_relu6_and_no_se():
    from torch import nn

    small, big = (build("efficientnet-lite", CompoundScaling().compound(p), device="meta") for p in (-3, 3))
    for m in (small, big):
        stem, plan, head = m.plan(m.scale)
        assert (stem, head) == (32, 1280) and plan[0][1] == 1 and plan[-1][1] == 1
        kinds = {type(x) for x in m.modules()}
        assert nn.ReLU6 in kinds and nn.SiLU not in kinds and nn.Sigmoid not in kinds
    assert [n for _, n in big.plan(big.scale)[1][1:-1]] > [n for _, n in small.plan(small.scale)[1][1:-1]]
    # EfficientNet scales its stem and head with width; Lite does not
    eff = build("efficientnet", CompoundScaling().compound(3), device="meta")
    assert eff.plan(eff.scale)[0] > 32 and eff.plan(eff.scale)[2] > 1280


@pytest.mark.parametrize("family", sorted(REFERENCE_PARAMS))
def test_phi_zero_is_the_reference_architecture(family):
    assert n_params(build(family, CompoundScaling().compound(0), device="meta")) == REFERENCE_PARAMS[family]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_forward_pass_at_small_scale(family):
    model = initialize(build(family, CompoundScaling().compound(-3), num_classes=7), seed=1)
    x = torch.randn(2, 3, model.resolution, model.resolution)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()
    # outputs must depend on the input, otherwise parity checks mean nothing
    assert (y[0] - y[1]).abs().max() > 1e-2 * y.abs().max()


def test_initialize_is_deterministic():
    a = initialize(build("efficientnet", CompoundScaling().compound(-3), num_classes=5), seed=3)
    b = initialize(build("efficientnet", CompoundScaling().compound(-3), num_classes=5), seed=3)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka


def test_stochastic_depth_only_in_training():
    model = initialize(build("efficientnet", CompoundScaling().compound(-2), num_classes=4), seed=0)
    x = torch.randn(1, 3, model.resolution, model.resolution)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    drops = [m.p for m in model.modules() if type(m).__name__ == "StochasticDepth"]
    assert drops and max(drops) <= 0.2 and min(drops) >= 0.0


def test_per_dimension_changes_only_its_dimension():
    base = build("resnet18", CompoundScaling().per_dimension(0, 0, 0), device="meta")
    deeper = build("resnet18", CompoundScaling().per_dimension(2, 0, 0), device="meta")
    wider = build("resnet18", CompoundScaling().per_dimension(0, 2, 0), device="meta")
    sharper = build("resnet18", CompoundScaling().per_dimension(0, 0, 2), device="meta")
    assert [s.blocks for s in deeper.stage_specs] > [s.blocks for s in base.stage_specs]
    assert [s.channels for s in deeper.stage_specs] == [s.channels for s in base.stage_specs]
    assert [s.channels for s in wider.stage_specs] > [s.channels for s in base.stage_specs]
    assert [s.blocks for s in wider.stage_specs] == [s.blocks for s in base.stage_specs]
    assert n_params(sharper) == n_params(base) and sharper.resolution > base.resolution


def test_unknown_family_lists_known():
    known = "efficientnet, efficientnet-lite, mobilenetv2, resnet18, resnet34, resnet50"
    with pytest.raises(FamilyNotFound, match=known):
        build("vgg", CompoundScaling().compound(0))


def test_no_same_padding_or_custom_ops():
    model = build("efficientnet", preset("b0"), device="meta")
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.padding == ((m.kernel_size[0] - 1) // 2,) * 2
    assert not any(isinstance(m, torch.autograd.Function) for m in model.modules())
    assert np.all([type(m).__module__.startswith(("torch.nn", "pipeline.models")) for m in model.modules()])
