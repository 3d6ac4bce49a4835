"""The plan walk (pipeline.cost.plan) against its oracle, tracing the torch model: the same fused op list,
params, MACs and peak activations for every family at many scales; and a search that never imports torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pipeline.core.names import FAMILY_NAMES
from pipeline.core.scaling import CompoundScaling, preset
from pipeline.cost.plan import plan_ops, scale_cost


def _renumbered(ops):
    """Buffer ids renumbered in order of appearance: tracing skips ids for the ops it folds away."""
    ids = {0: 0}
    out = []
    for op in ops:
        ids[op.output] = len(ids)
        out.append(dataclasses.replace(op, inputs=tuple(ids[i] for i in op.inputs), output=ids[op.output]))
    return out


def _agree(family, scale, num_classes=1000):
    from pipeline.cost.trace import model_cost
    from pipeline.models import build

    traced = model_cost(build(family, scale, num_classes, device="meta"))
    planned = scale_cost(family, scale, num_classes)
    assert (planned.params, planned.macs, planned.activation_bytes) == (
        traced.params, traced.macs, traced.activation_bytes)
    assert planned.weight_bytes == traced.weight_bytes and planned.input_bytes == traced.input_bytes
    assert _renumbered(planned.ops) == _renumbered(traced.ops)


S = CompoundScaling()
FAST_SCALES = [S.per_dimension(-3, -2, -5), S.compound(-2.3).with_resolution(40)]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_plan_agrees_with_the_trace(family):
    for scale in FAST_SCALES:
        _agree(family, scale, num_classes=10)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_plan_agrees_with_the_trace_over_the_whole_range(family):
    scales = [S.compound(p) for p in (-6, -4.5, -3, -1.7, -0.4, 0, 0.9, 2.2, 3.5)]
    scales += [S.per_dimension(*d) for d in ((2, -1, 0), (-1, 2, 1), (0, 0, 3), (1.3, -2, -1))]
    scales += [preset(p) for p in ("b0", "b3", "lite0", "lite4")]
    for scale in scales:
        _agree(family, scale)


def test_a_plan_walk_is_cheap_and_needs_no_torch():
    code = ("import sys, time\n"
            "from pipeline.core.scaling import CompoundScaling\n"
            "from pipeline.cost.plan import scale_cost\n"
            "t = time.perf_counter()\n"
            "for p in range(-40, 41):\n"
            "    scale_cost('efficientnet', CompoundScaling().compound(p / 10))\n"
            "print(time.perf_counter() - t, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False"
    assert float(out[0]) < 5  # 81 architectures; tracing took 0.2-0.5 s each


def test_lite_preset_ops_match_the_reference_macs():
    ops = plan_ops("efficientnet-lite", preset("lite0"))
    assert sum(op.macs for op in ops) == 385_187_552  # d-li14/efficientnet-lite.pytorch: 0.385 G
    assert {op.kind for op in ops} == {"conv", "pwconv", "dwconv", "elementwise", "reduce", "linear"}
