import numpy as np
import pytest

from pipeline.core.scaling import CompoundScaling, preset
from pipeline.cost.plan import scale_cost
from pipeline.cost.trace import BYTES_PER_ELEMENT, model_cost, peak_activation_bytes
from pipeline.models import FAMILIES, build, initialize

PHI_GRID = np.arange(-3.0, 6.01, 0.5)


def test_b0_macs_match_the_paper():
    cost = scale_cost("efficientnet", preset("b0"))
    assert abs(cost.macs - 0.39e9) / 0.39e9 < 0.03


def test_params_match_the_model_and_weight_bytes_per_precision():
    model = build("efficientnet", preset("b1"), device="meta")
    cost = model_cost(model)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.weight_bytes == {p: cost.params * b for p, b in BYTES_PER_ELEMENT.items()}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_params_and_macs_monotone_in_phi(family):
    scaling = CompoundScaling()
    costs = [scale_cost(family, scaling.compound(float(phi)), num_classes=1000) for phi in PHI_GRID]
    params = [c.params for c in costs]
    macs = [c.macs for c in costs]
    assert all(a <= b for a, b in zip(params, params[1:])), params
    assert all(a <= b for a, b in zip(macs, macs[1:])), macs
    assert macs[-1] > 20 * macs[0]


def test_resolution_only_scales_macs_quadratically_and_keeps_params():
    s = CompoundScaling()
    a, b = scale_cost("resnet18", s.per_dimension(0, 0, 0)), scale_cost("resnet18", s.per_dimension(0, 0, 5))
    assert a.params == b.params
    ratio = b.macs / a.macs
    assert ratio == pytest.approx((b.resolution / a.resolution) ** 2, rel=0.1)


def test_macs_counted_per_op_kind():
    cost = scale_cost("efficientnet", preset("b0"))
    kinds = {op.kind for op in cost.ops}
    assert {"conv", "pwconv", "dwconv", "linear", "activation", "elementwise", "reduce"} <= kinds
    assert sum(op.macs for op in cost.ops if op.kind in ("activation", "elementwise", "reduce")) == 0
    linear = [op for op in cost.ops if op.kind == "linear"]
    assert linear[0].macs == 1280 * 1000


def test_batchnorm_and_relu_are_fused_into_conv():
    cost = scale_cost("resnet18", CompoundScaling().compound(0))
    assert not [op for op in cost.ops if op.kind == "norm"]
    fused = [op.fused for op in cost.ops if op.kind == "conv"]
    assert ("native_batch_norm", "relu") in fused


def test_peak_activation_liveness_walk_on_a_known_chain():
    from pipeline.cost.trace import make_op

    # input(100 B) -> a(400 B) -> b(40 B); a and input are live together, then a and b.
    a = make_op("activation", "relu", "s", [(1, 25)], (1, 100), (0,), 1)
    b = make_op("activation", "relu", "s", [(1, 100)], (1, 10), (1,), 2)
    # input stays live (it is the network input), so peaks are 100+400 and 100+400+40
    assert peak_activation_bytes([a, b], input_bytes=100) == 100 + 400 + 40


def test_activation_bytes_grow_with_resolution():
    s = CompoundScaling()
    small = scale_cost("mobilenetv2", s.per_dimension(0, 0, -2))
    big = scale_cost("mobilenetv2", s.per_dimension(0, 0, 2))
    assert big.activation_bytes > 1.5 * small.activation_bytes


def test_cost_does_not_need_real_weights():
    model = initialize(build("resnet18", CompoundScaling().compound(-3), num_classes=10))
    real = model_cost(model)
    meta = scale_cost("resnet18", CompoundScaling().compound(-3), num_classes=10)
    assert (real.params, real.macs, real.activation_bytes) == (meta.params, meta.macs, meta.activation_bytes)


def test_stage_table_covers_all_macs():
    cost = scale_cost("resnet50", CompoundScaling().compound(0))
    rows = cost.stage_table()
    assert [r["stage"] for r in rows] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert sum(r["macs"] for r in rows) == cost.macs
