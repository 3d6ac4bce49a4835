"""The static-cost vocabulary: :class:`Op` and :class:`Cost`, op folding, liveness, rescaling. No torch.

Both front ends produce these records: tracing a torch model (:mod:`pipeline.cost.trace`, the
oracle) and walking a family's plan (:mod:`pipeline.cost.plan`, what the search uses), as does the
ONNX reader (:mod:`pipeline.cost.onnx`), so the predictor costs all of them in one place.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}
ACT_BYTES = 4  # activations are costed in fp32; precision-specific factors live in the predictor

# Op kinds shared by the torch and ONNX front ends. The predictor keys its features on these.
CONV_KINDS = ("conv", "pwconv", "dwconv")
KINDS = (*CONV_KINDS, "linear", "activation", "elementwise", "reduce", "pool", "norm", "copy")
FOLDABLE_ACTIVATIONS = {"relu", "relu6", "clip", "hardtanh", "sigmoid", "tanh", "leakyrelu", "hardsigmoid"}

@dataclass(frozen=True)
class Op:
    """One executed operator with everything a latency model may key on.

    ``inputs``/``output`` are activation buffer ids (weights are not buffers), used by
    the liveness walk; ``fused`` lists operators folded into this one.
    """

    kind: str
    name: str
    stage: str
    out_shape: tuple[int, ...]
    in_shapes: tuple[tuple[int, ...], ...] = ()
    kernel: int = 0
    stride: int = 1
    groups: int = 1
    macs: int = 0
    params: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    inputs: tuple[int, ...] = ()
    output: int = -1
    fused: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("inputs"), d.pop("output")
        return d

    def to_record(self) -> list:
        """Every field, in order, as JSON-ready lists: how a profile stores a probe's op list."""
        return [list(v) if isinstance(v, tuple) else v for v in (getattr(self, f) for f in _OP_FIELDS)]

    @classmethod
    def from_record(cls, row: list) -> Op:
        """The inverse of :meth:`to_record` (nested lists back to tuples)."""
        if len(row) != len(_OP_FIELDS):
            raise ValueError(f"an op record has {len(row)} fields, expected {len(_OP_FIELDS)}")
        values = {f: _tuple(v) if isinstance(v, list) else v for f, v in zip(_OP_FIELDS, row)}
        return cls(**values)


_OP_FIELDS = tuple(Op.__dataclass_fields__)


def _tuple(v):
    return tuple(_tuple(x) if isinstance(x, list) else x for x in v)


@dataclass(frozen=True)
class Cost:
    """Static cost of one model at one input resolution (batch 1)."""

    resolution: int
    params: int
    macs: int
    weight_bytes: dict[str, int]
    activation_bytes: int
    input_bytes: int
    ops: tuple[Op, ...] = field(repr=False)

    def stage_table(self) -> list[dict]:
        """MACs and output resolution per stage, in execution order."""
        rows: dict[str, dict] = {}
        for op in self.ops:
            row = rows.setdefault(op.stage, {"stage": op.stage, "macs": 0, "resolution": None})
            row["macs"] += op.macs
            if len(op.out_shape) == 4:
                row["resolution"] = op.out_shape[-1]
        return list(rows.values())

    def to_dict(self, ops: bool = False) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "ops"}
        if ops:
            d["ops"] = [op.to_dict() for op in self.ops]
        return d


def numel(shape: tuple[int, ...]) -> int:
    """Elements of a tensor of ``shape``."""
    return int(math.prod(shape))


def conv_kind(cin: int, groups: int, kernel: int) -> str:
    """Depthwise, pointwise (1x1) or dense: they have very different arithmetic intensity."""
    if groups > 1 and groups == cin:
        return "dwconv"
    return "pwconv" if kernel == 1 else "conv"


def make_op(kind: str, name: str, stage: str, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...],
            inputs: tuple[int, ...], output: int, weight_shape: tuple[int, ...] | None = None,
            stride: int = 1, groups: int = 1, bias: int = 0) -> Op:
    """Build an :class:`Op` and compute its MACs and bytes. The one place ops are costed."""
    macs, params, kernel = 0, bias, 0
    if kind == "conv" and weight_shape is not None:
        cout, cin_g, *k = weight_shape
        kernel = k[0] if k else 1
        macs = numel(out_shape) * cin_g * numel(tuple(k))
        params += numel(weight_shape)
        kind = conv_kind(in_shapes[0][1], groups, kernel)
    elif kind == "linear" and weight_shape is not None:
        k_dim = in_shapes[0][-1]
        macs = numel(out_shape) * k_dim
        params += numel(weight_shape)
    elif kind == "linear":  # activation x activation matmul
        macs = numel(out_shape) * in_shapes[0][-1]
    in_bytes = sum(numel(s) for s in in_shapes) * ACT_BYTES
    return Op(kind, name, stage, tuple(out_shape), tuple(tuple(s) for s in in_shapes), kernel, stride, groups,
              int(macs), int(params), int(in_bytes), numel(out_shape) * ACT_BYTES, inputs, output)


def fuse(ops: list[Op]) -> list[Op]:
    """Fold ops into the producing convolution the way ONNX Runtime's CPU graph optimiser does.

    Conv+BatchNorm always folds; a following Relu/Clip/Sigmoid/... folds when the conv
    output has no other consumer. The result is what actually runs.
    """
    consumers: dict[int, int] = defaultdict(int)
    for op in ops:
        for i in op.inputs:
            consumers[i] += 1
    out: list[Op] = []
    producer: dict[int, int] = {}
    for op in ops:
        src = producer.get(op.inputs[0]) if len(op.inputs) == 1 else None
        head = out[src] if src is not None else None
        foldable = op.kind == "norm" or (op.kind == "activation" and op.name in FOLDABLE_ACTIVATIONS)
        if head is not None and head.kind in CONV_KINDS and foldable and consumers[op.inputs[0]] == 1:
            out[src] = replace(head, output=op.output, fused=head.fused + (op.name,), params=head.params + op.params)
            producer[op.output] = src
            continue
        producer[op.output] = len(out)
        out.append(op)
    return out


def peak_activation_bytes(ops: list[Op], input_bytes: int) -> int:
    """Liveness walk: the largest sum of simultaneously live activation buffers.

    A buffer is live from the op that writes it to the last op that reads it. The
    network input (buffer 0) and the final output stay live throughout.
    """
    n = len(ops)
    size, born, last = {0: input_bytes}, {0: 0}, {0: n - 1}
    for i, op in enumerate(ops):
        for b in op.inputs:
            last[b] = max(last.get(b, i), i)
        if op.output not in size:
            size[op.output], born[op.output] = op.out_bytes, i
        last.setdefault(op.output, i)
    if ops:
        last[ops[-1].output] = n - 1
    events = [0] * (n + 1)
    for b, s in size.items():
        events[born[b]] += s
        events[min(last[b], n - 1) + 1] -= s
    peak = live = 0
    for delta in events[:n]:
        live += delta
        peak = max(peak, live)
    return peak


def _out_spatial(op: Op, h: int, w: int) -> tuple[int, int]:
    """Output spatial size of a conv/pool with the symmetric padding every family here uses."""
    k, st = op.kernel or 3, op.stride
    pad = (k - 1) // 2
    return (h + 2 * pad - k) // st + 1, (w + 2 * pad - k) // st + 1


def rescale_ops(ops: tuple[Op, ...], resolution: int) -> list[Op]:
    """The same op list at another input resolution, by propagating spatial sizes.

    Every family is fully convolutional, so only spatial sizes change with resolution;
    re-deriving them is ~100x cheaper than tracing the model again, which is what makes
    searching hundreds of architectures fast.
    """
    shape: dict[int, tuple[int, ...]] = {0: (1, 3, resolution, resolution)}
    out: list[Op] = []
    for op in ops:
        ins = tuple(shape[b] for b in op.inputs)
        o = op.out_shape
        if len(o) == 4 and op.kind != "reduce":
            h, w = max(s[2] for s in ins if len(s) == 4), max(s[3] for s in ins if len(s) == 4)
            if op.kind in CONV_KINDS or (op.kind == "pool" and op.kernel):
                h, w = _out_spatial(op, h, w)
            elif op.kind == "pool":
                h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # 3x3/2 max-pool, padding 1
            o = (o[0], o[1], h, w)
        macs = op.macs
        if op.kind in CONV_KINDS:
            macs = numel(o) * (ins[0][1] // op.groups) * op.kernel * op.kernel
        shape[op.output] = o
        out.append(replace(op, in_shapes=ins, out_shape=o, macs=int(macs),
                           in_bytes=sum(numel(s) for s in ins) * ACT_BYTES, out_bytes=numel(o) * ACT_BYTES))
    return out


def cost_from_ops(ops: list[Op], resolution: int, params: int) -> Cost:
    input_bytes = 3 * resolution * resolution * ACT_BYTES
    return Cost(
        resolution=resolution,
        params=params,
        macs=sum(op.macs for op in ops),
        weight_bytes={p: params * b for p, b in BYTES_PER_ELEMENT.items()},
        activation_bytes=peak_activation_bytes(ops, input_bytes),
        input_bytes=input_bytes,
        ops=tuple(ops),
    )




__all__ = ["ACT_BYTES", "BYTES_PER_ELEMENT", "CONV_KINDS", "FOLDABLE_ACTIVATIONS", "KINDS", "Cost", "Op", "conv_kind",
           "cost_from_ops", "fuse", "make_op", "numel", "peak_activation_bytes", "rescale_ops"]
