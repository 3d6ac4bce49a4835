"""ONNX front end of the cost model: an ONNX graph -> the same :class:`~pipeline.cost.ops.Op` list.

This lets ``deploy predict --onnx FILE`` cost any exported model through the exact code
path used for models built here: ops are made by :func:`pipeline.cost.ops.make_op`, fused by
:func:`pipeline.cost.ops.fuse`, and summarised by :func:`pipeline.cost.ops.cost_from_ops`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

from pipeline.core.errors import ModelInvalid
from pipeline.cost.ops import Cost, cost_from_ops, fuse, make_op

_KIND = {
    "Conv": "conv", "Gemm": "linear", "MatMul": "linear",
    "BatchNormalization": "norm",
    "Relu": "activation", "Clip": "activation", "Sigmoid": "activation", "Tanh": "activation",
    "LeakyRelu": "activation", "HardSigmoid": "activation", "HardSwish": "activation", "Gelu": "activation",
    "Add": "elementwise", "Mul": "elementwise", "Sub": "elementwise", "Div": "elementwise",
    "GlobalAveragePool": "reduce", "ReduceMean": "reduce", "MaxPool": "pool", "AveragePool": "pool",
    "Concat": "copy", "Transpose": "copy", "Split": "copy", "Slice": "copy", "DepthToSpace": "copy",
    "SpaceToDepth": "copy",
}
# Ops that only reinterpret a tensor (no data movement worth costing).
_VIEWS = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast"}
_SKIP = {"Constant", "Shape", "Gather", "ConstantOfShape", "Range"}


def _load(path: str | Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
        return shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for broken files
        raise ModelInvalid(f"cannot read ONNX file {path}: {exc.__class__.__name__}: {exc}".strip()) from None


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)  # dynamic batch -> 1
    return shapes


def onnx_cost(path: str | Path) -> Cost:
    """Static cost of an ONNX classifier file at its declared input shape (batch 1)."""
    model = _load(path)
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:  # weights may also arrive as Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            inits[node.output[0]] = tuple(node.attribute[0].t.dims)
    shapes = _shapes(model)
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    if not graph_inputs:
        raise ModelInvalid(f"{path}: the graph has no runtime input.")
    buffer: dict[str, int] = {graph_inputs[0].name: 0}
    params = 0
    bn_stats: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            bn_stats.update(node.input[3:5])
    params = sum(int(np.prod(dims)) for name, dims in inits.items() if name not in bn_stats)

    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ops, silu_done = [], set()
    for node in model.graph.node:
        if node.op_type in _SKIP or not node.output:
            continue
        acts = [n for n in node.input if n in buffer]
        if not acts:
            continue
        if node.op_type in _VIEWS:
            buffer[node.output[0]] = buffer[acts[0]]
            continue
        if node.name in silu_done:
            continue
        out = node.output[0]
        kind, name = _KIND.get(node.op_type, "elementwise"), node.op_type.lower()
        # x * sigmoid(x) is one SiLU, as in the torch trace (one activation, not two ops)
        if node.op_type == "Sigmoid":
            muls = [c for c in consumers.get(out, []) if c.op_type == "Mul" and node.input[0] in c.input]
            if len(muls) == 1 and len(consumers.get(out, [])) == 1:
                silu_done.add(muls[0].name)
                out, name = muls[0].output[0], "silu"
        buffer[out] = len(ops) + 1
        out_shape = shapes.get(out, ())
        if len(node.output) > 1:  # Split: every output is a buffer; together they are one write of the input's size
            for extra_out in node.output[1:]:
                buffer[extra_out] = len(ops) + 1
            out_shape = shapes.get(acts[0], out_shape)
        in_shapes = [shapes.get(n, ()) for n in acts]
        extra: dict = {}
        weights = [n for n in node.input[1:] if n in inits]
        if node.op_type == "Conv" and weights:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            extra = dict(weight_shape=inits[node.input[1]], stride=int(attrs.get("strides", [1])[0]),
                         groups=int(attrs.get("group", 1)), bias=sum(int(np.prod(inits[n])) for n in weights[1:]))
        elif kind == "linear" and weights:
            extra = dict(weight_shape=inits[weights[0]], bias=sum(int(np.prod(inits[n])) for n in weights[1:]))
        elif kind == "norm":
            extra = dict(bias=2 * in_shapes[0][1])
        ops.append(make_op(kind, name, "onnx", in_shapes, out_shape, tuple(buffer[n] for n in acts),
                           buffer[out], **extra))
    resolution = shapes[graph_inputs[0].name][-1]
    return cost_from_ops(fuse(ops), resolution, params)


def numpy_input(path: str | Path) -> np.ndarray:  # pragma: no cover - convenience for callers
    model = _load(path)
    inits = {i.name for i in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    shape = [d.dim_value if d.dim_value > 0 else 1 for d in first.type.tensor_type.shape.dim]
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


__all__ = ["onnx_cost"]
