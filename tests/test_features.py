"""Predictor features for models edgefit did not build: ORT's blocked layout, split outputs, probes.

The layout rule is checked against what ONNX Runtime itself does: each small model is
optimized by a real session and its convolutions counted as NCHWc (``com.microsoft.nchwc``)
or plain.
"""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pipeline.cost.features import LATENCY_FEATURES, blocked_layout, latency_features
from pipeline.cost.onnx import onnx_cost
from pipeline.cost.ops import CONV_KINDS, Op
from pipeline.export.onnx import export_onnx
from pipeline.models.probe_suite import PROBE_NAMES, QUICK_PROBES


class _Seq(nn.Module):
    def __init__(self, *layers, res=32):
        super().__init__()
        self.f, self.resolution = nn.Sequential(*layers), res

    def forward(self, x):
        return self.f(x).mean((2, 3))


class _Split(nn.Module):
    """Channel split: both halves are used, the second through a conv ORT cannot block (29 channels)."""

    resolution = 32

    def __init__(self):
        super().__init__()
        self.stem, self.c = nn.Conv2d(3, 58, 3, 2, 1), nn.Conv2d(29, 29, 3, 1, 1)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, 1)
        return torch.cat([a, self.c(b)], 1).mean((2, 3))


def _ort_conv_layouts(path) -> list[bool]:
    so = ort.SessionOptions()
    so.optimized_model_filepath, so.log_severity_level = str(path) + ".opt", 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(path) + ".opt").graph
    return sorted(n.domain == "com.microsoft.nchwc" for n in graph.node if n.op_type in ("Conv", "FusedConv"))


CASES = {
    "dense aligned + odd": _Seq(nn.Conv2d(3, 32, 3, 2, 1), nn.Conv2d(32, 30, 3, 1, 1), nn.Conv2d(30, 30, 3, 1, 1)),
    "grouped 8/group + 16/group": _Seq(nn.Conv2d(3, 64, 3, 2, 1), nn.Conv2d(64, 64, 3, 1, 1, groups=8),
                                       nn.Conv2d(64, 64, 3, 1, 1, groups=4)),
    "depthwise odd + aligned": _Seq(nn.Conv2d(3, 58, 1), nn.Conv2d(58, 58, 3, 1, 1, groups=58),
                                    nn.Conv2d(58, 64, 1), nn.Conv2d(64, 64, 3, 1, 1, groups=64)),
    "split": _Split(),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_blocked_layout_rule_matches_what_onnx_runtime_does(tmp_path, name):
    path = tmp_path / "m.onnx"
    export_onnx(CASES[name].eval(), path)
    cost = onnx_cost(path)
    convs = [op for op in cost.ops if op.kind in CONV_KINDS]
    # the host's block (16 with AVX-512, 8 with AVX2) decides only grouped convs here
    ours = sorted(f for op, f in zip(cost.ops, blocked_layout(cost.ops, 16)) if op.kind in CONV_KINDS)
    ours8 = sorted(f for op, f in zip(cost.ops, blocked_layout(cost.ops, 8)) if op.kind in CONV_KINDS)
    assert len(convs) == len(_ort_conv_layouts(path))
    assert _ort_conv_layouts(path) in (ours, ours8)


def test_a_split_keeps_every_output_and_plain_convs_cost_reorders(tmp_path):
    path = tmp_path / "split.onnx"
    export_onnx(_Split().eval(), path)
    cost = onnx_cost(path)
    assert sum(op.kind in CONV_KINDS for op in cost.ops) == 2  # the conv on the second half is costed
    f = latency_features(cost, 16)
    assert f["plain_conv_gmacs"] > 0 and f["reorder_mb"] > 0
    assert latency_features(cost, 1)["plain_conv_gmacs"] == 0  # block 1: no layout split (GPU, unknown runtime)


def test_border_outputs_are_costed_apart_from_the_interior():
    from pipeline.cost.ops import make_op

    def conv(k, size):
        return make_op("conv", "conv", "t", [(1, 64, size, size)], (1, 64, size, size), (0,), 1,
                       weight_shape=(64, 64, k, k))

    from pipeline.cost.ops import cost_from_ops

    small = latency_features(cost_from_ops([conv(7, 8)], 8, 0), 16)
    large = latency_features(cost_from_ops([conv(3, 56)], 56, 0), 16)
    def edge_share(f):
        return f["conv_edge_gmacs"] / (f["conv_edge_gmacs"] + f["conv_gmacs"])

    # 7x7 on 8x8 (padding 3): 2 of 8 rows and columns are interior; 3x3 on 56x56: 54 of 56
    assert edge_share(small) == pytest.approx(1 - (2 / 8) ** 2)
    assert edge_share(large) == pytest.approx(1 - (54 / 56) ** 2)
    assert set(small) == set(LATENCY_FEATURES)


def test_an_op_list_survives_a_json_round_trip(tmp_path):
    path = tmp_path / "split.onnx"
    export_onnx(_Split().eval(), path)
    ops = onnx_cost(path).ops
    again = [Op.from_record(row) for row in json.loads(json.dumps([op.to_record() for op in ops]))]
    assert again == list(ops)
    with pytest.raises(ValueError, match="fields"):
        Op.from_record([1, 2])


def test_probe_names_match_the_probes_and_each_exports_and_costs(tmp_path):
    from pipeline.models.probes import PROBES, build_probe

    assert set(PROBE_NAMES) == set(PROBES) and set(QUICK_PROBES) <= set(PROBES)
    path = tmp_path / "p.onnx"
    export_onnx(build_probe("odd-channels"), path)
    f = latency_features(onnx_cost(path), 16)
    assert f["plain_conv_gmacs"] > 0 and f["conv_gmacs"] > 0  # 30/54/102 channels: plain; the stem is blocked
    with pytest.raises(KeyError, match="unknown probe"):
        build_probe("nope")
