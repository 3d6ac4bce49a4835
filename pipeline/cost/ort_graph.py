"""The graph ONNX Runtime's CPU provider will execute for an ONNX file, with every tensor's shape.

Why: a model edgefit did not build reaches the CPU as ORT's *optimized* graph, not as the file.
ORT folds batch norms, fuses activations and residual adds into convolutions, rewrites most
convolutions into its channel-blocked NCHWc layout (channels padded to the MLAS block) and
inserts layout copies (``ReorderInput``/``ReorderOutput``) around the rest. A per-node latency
model (:mod:`pipeline.predict.nodes`) must see that graph: the executed node list, with the
padded shapes, is what the device's time is a sum over.

How: creating an inference session optimizes the graph (nothing runs) and, with
``optimized_model_filepath``, saves it. ORT keeps the shapes it inferred for plain-layout
tensors; the NCHWc ops are ORT's own (domain ``com.microsoft.nchwc``), so their output shapes are
derived here from the ops' attributes. Node names are the ones ORT's per-node profiler reports,
which is how calibration pairs a profiled node time with its node.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import helper

from pipeline.core.errors import ModelInvalid

NCHWC = "com.microsoft.nchwc"
_CONVS = {"Conv", "FusedConv"}
_POOLS = {"MaxPool", "AveragePool"}
_GLOBAL_POOLS = {"GlobalAveragePool", "GlobalMaxPool"}


@dataclass(frozen=True)
class Node:
    """One node ORT executes: its op, the shapes of its activation inputs and output, its weight's shape."""

    name: str
    op: str
    domain: str
    inputs: tuple[tuple[int, ...], ...]
    output: tuple[int, ...]
    weight: tuple[int, ...] | None = None
    attrs: dict = field(default_factory=dict, compare=False)

    @property
    def blocked(self) -> bool:
        return self.domain == NCHWC

    def to_record(self) -> list:
        """JSON-ready: how a profile stores a calibration model's executed graph."""
        return [self.name, self.op, self.domain, [list(s) for s in self.inputs], list(self.output),
                None if self.weight is None else list(self.weight), self.attrs]

    @classmethod
    def from_record(cls, row: list) -> Node:
        name, op, domain, inputs, output, weight, attrs = row
        return cls(name, op, domain, tuple(tuple(s) for s in inputs), tuple(output),
                   None if weight is None else tuple(weight), dict(attrs))


def executed_graph(path: str | Path, threads: int = 1, block: int | None = None) -> list[Node]:
    """ORT's optimized graph of ``path`` on this machine's CPU provider, in execution order, shapes filled in.

    ``block`` is the MLAS channel block ``ReorderInput`` pads to; by default, the one the
    graph's own blocked convolutions show (their weights' output channels are padded to it).
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgefit-ortgraph-") as tmp:
        saved = Path(tmp) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(saved)
        opts.log_severity_level = 3  # ORT warns that an NCHWc graph is specific to this CPU: we know
        try:
            ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelInvalid(f"ONNX Runtime cannot load {path}: {exc.__class__.__name__}: {exc}") from None
        return graph_from_saved(saved, block)


def graph_from_saved(saved: str | Path, block: int | None = None) -> list[Node]:
    """The executed node list of an optimized model ORT saved (``optimized_model_filepath``)."""
    model = onnx.load(str(saved))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    return _with_shapes(model.graph, block, opset)


def _dims(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim)  # a dynamic (batch) dim -> 1


def _with_shapes(graph: onnx.GraphProto, block: int | None, opset: int) -> list[Node]:
    """Shapes from the graph input forward, node by node.

    The value_info ORT saves is not used: tensors its NCHWc pass created can carry a stale
    shape there. Standard ops get ONNX's own shape inference, one node at a time (with the
    initializers they read, so a Reshape sees its target shape); ORT's own ops get :func:`_infer`.
    """
    inits = {i.name: i for i in graph.initializer}
    shapes: dict[str, tuple[int, ...]] = {name: tuple(t.dims) for name, t in inits.items()}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.value_info, *graph.output)}
    saved = {vi.name: _dims(vi) for vi in graph.value_info}  # a last resort: may be stale for NCHWc tensors
    for vi in graph.input:
        dims = _dims(vi)
        if dims is not None and vi.name not in inits:
            shapes[vi.name] = dims
    if block is None:
        block = _graph_block(graph, shapes)
    out: list[Node] = []
    for node in graph.node:  # ORT saves its graph in execution order
        missing = [i for i in node.input if i and i not in shapes]
        if missing:
            raise ModelInvalid(f"ORT's optimized graph uses {missing[0]} before it is made (node {node.name})")
        attrs = {a.name: _attr(a) for a in node.attribute}
        ins = [shapes[i] for i in node.input if i]
        if node.domain in ("", "ai.onnx"):
            outs = _onnx_infer(node, shapes, types, inits, opset)
            if outs is None and all(saved.get(o) for o in node.output if o):
                outs = [saved[o] for o in node.output if o]
            if outs is None:
                raise ModelInvalid(f"cannot infer the shape of ORT node {node.name} ({node.op_type})")
        else:
            outs = [_infer(node, attrs, ins, block)]
        for name, shape in zip(node.output, outs):
            if name:
                shapes[name] = shape
        acts = tuple(shapes[i] for i in node.input if i and i not in inits)
        weight = next((shapes[i] for i in node.input[1:] if i in inits and len(shapes[i]) >= 2), None)
        out.append(Node(node.name, node.op_type, node.domain, acts, shapes[node.output[0]], weight, attrs))
    return out


def _onnx_infer(node: onnx.NodeProto, shapes: dict, types: dict, inits: dict, opset: int
                ) -> list[tuple[int, ...]] | None:
    """ONNX shape inference on a one-node graph: the node's output shapes (None when it cannot tell)."""
    from onnx import TensorProto

    small = [inits[i] for i in node.input if i in inits and _numel(shapes[i]) <= 64]  # shape/axes operands
    known = {t.name for t in small}
    inputs = [helper.make_tensor_value_info(i, types.get(i) or TensorProto.FLOAT, list(shapes[i]))
              for i in dict.fromkeys(node.input) if i and i not in known]
    outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output if o]
    graph = helper.make_graph([node], "node", inputs, outputs, small)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception:  # onnx raises InferenceError and friends; the caller tries ORT's saved shapes next
        return None
    found = {vi.name: _dims(vi) for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    shapes_out = [found.get(o) for o in node.output if o]
    return None if any(s is None for s in shapes_out) else shapes_out


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


def _attr(a: onnx.AttributeProto):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, int, float, str)):
        return list(v) if isinstance(v, list) else v
    return None  # tensors and graphs: not needed for costing


def _graph_block(graph: onnx.GraphProto, inits: dict[str, tuple[int, ...]]) -> int:
    """MLAS's channel block, read off the padded weights of the graph's blocked convolutions (1 when none)."""
    sizes = [inits[n.input[1]][0] for n in graph.node if n.domain == NCHWC and n.op_type == "Conv"
             and len(n.input) > 1 and n.input[1] in inits]
    for b in (16, 8, 4):
        if sizes and all(s % b == 0 for s in sizes):
            return b
    return 1


def _spatial(sizes, kernel, strides, pads, dilations, ceil_mode: int = 0, auto_pad: str = "NOTSET") -> list[int]:
    n = len(sizes)
    strides = strides or [1] * n
    dilations = dilations or [1] * n
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return [math.ceil(s / st) for s, st in zip(sizes, strides)]
    pads = pads if pads and auto_pad != "VALID" else [0] * (2 * n)
    rnd = math.ceil if ceil_mode else math.floor
    return [int(rnd((size + pads[i] + pads[i + n] - dilations[i] * (kernel[i] - 1) - 1) / strides[i])) + 1
            for i, size in enumerate(sizes)]


def _infer(node: onnx.NodeProto, attrs: dict, ins: list[tuple[int, ...]], block: int) -> tuple[int, ...]:
    """The output shape of a node ORT left without one: its NCHWc ops, and element-wise ops between them."""
    op = node.op_type
    if op in _CONVS:
        x, w = ins[0], ins[1]
        kernel = attrs.get("kernel_shape") or list(w[2:])
        return (x[0], w[0], *_spatial(x[2:], kernel, attrs.get("strides"), attrs.get("pads"),
                                      attrs.get("dilations"), 0, attrs.get("auto_pad", "NOTSET")))
    if op in _POOLS:
        x = ins[0]
        return (x[0], x[1], *_spatial(x[2:], attrs["kernel_shape"], attrs.get("strides"), attrs.get("pads"),
                                      attrs.get("dilations"), attrs.get("ceil_mode", 0),
                                      attrs.get("auto_pad", "NOTSET")))
    if op in _GLOBAL_POOLS:
        return (*ins[0][:2], *[1] * (len(ins[0]) - 2))
    if op == "ReorderInput":
        x = ins[0]
        if attrs.get("channels_last"):
            x = (x[0], x[-1], *x[1:-1])
        return (x[0], -(-x[1] // block) * block, *x[2:])
    if op == "ReorderOutput":
        x, c = ins[0], attrs.get("channels", ins[0][1])
        return (x[0], *x[2:], c) if attrs.get("channels_last") else (x[0], c, *x[2:])
    if op == "Upsample" and "scales" in attrs:
        x, s = ins[0], attrs["scales"]
        s = s[2:] if len(s) == len(x) else s  # NCHWc's Upsample gives a scale per axis, batch and channels included
        return (x[0], x[1], *[int(d * k) for d, k in zip(x[2:], s)])
    if op == "FusedGemm":
        a, b = ins[0], ins[1]
        m = a[1] if attrs.get("transA") else a[0]
        return (m, b[0] if attrs.get("transB") else b[1])
    if op == "FusedMatMul":
        a, b = ins[0], ins[1]
        # transBatch: the first axis moves behind the batch axes, to be the matrix's rows (ORT's contrib op spec)
        a = (*a[1:-1], a[0], a[-1]) if attrs.get("transBatchA") and len(a) > 2 else a
        b = (*b[1:-1], b[0], b[-1]) if attrs.get("transBatchB") and len(b) > 2 else b
        m = a[-1] if attrs.get("transA") else a[-2]
        n = b[-2] if attrs.get("transB") else b[-1]
        batch = a[:-2] if len(a) >= len(b) else b[:-2]
        return (*batch, m, n)
    if ins:  # element-wise (Add, Mul, Sum, activations): numpy broadcasting of the inputs
        rank = max(len(s) for s in ins)
        padded = [(1,) * (rank - len(s)) + tuple(s) for s in ins]
        return tuple(max(d) for d in zip(*padded))
    raise ModelInvalid(f"cannot infer the shape of ORT node {node.name} ({node.domain or 'ai.onnx'}.{op})")
