"""Static cost of a model: params, MACs, weight bytes, peak activations, per-op list.

Nothing here times anything. A model is traced once on the ``meta`` device (shapes
only, no arithmetic), every ATen op is recorded, and the raw trace is turned into the
op list that an inference runtime actually executes: BatchNorm and simple activations
folded into the preceding convolution, as ONNX Runtime does. ``onnx_ops`` produces the
same :class:`Op` records from an ONNX graph, so the predictor costs both in one place.
"""

from __future__ import annotations

import functools
import hashlib
import math
import pickle
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.core.scaling import Scale
from pipeline.models import FAMILIES, ScalableNet, build, check_family

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}
_TRACE_RESOLUTION = 224  # one trace per plan, at this resolution; others are derived
ACT_BYTES = 4  # activations are costed in fp32; precision-specific factors live in the predictor

# Op kinds shared by the torch and ONNX front ends. The predictor keys its features on these.
CONV_KINDS = ("conv", "pwconv", "dwconv")
KINDS = (*CONV_KINDS, "linear", "activation", "elementwise", "reduce", "pool", "norm", "copy")
FOLDABLE_ACTIVATIONS = {"relu", "relu6", "clip", "hardtanh", "sigmoid", "tanh", "leakyrelu", "hardsigmoid"}

_ATEN_KIND = {
    "convolution": "conv",
    "addmm": "linear", "mm": "linear", "bmm": "linear",
    "_native_batch_norm_legit_no_training": "norm", "native_batch_norm": "norm",
    "silu": "activation", "relu": "activation", "hardtanh": "activation", "sigmoid": "activation",
    "gelu": "activation", "tanh": "activation", "hardswish": "activation", "hardsigmoid": "activation",
    "add": "elementwise", "mul": "elementwise", "sub": "elementwise", "div": "elementwise",
    "mean": "reduce", "sum": "reduce", "_adaptive_avg_pool2d": "reduce", "avg_pool2d": "pool",
    "max_pool2d_with_indices": "pool", "max_pool2d": "pool",
    "clone": "copy", "cat": "copy", "_to_copy": "copy",
}


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


def _numel(shape: tuple[int, ...]) -> int:
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
        macs = _numel(out_shape) * cin_g * _numel(tuple(k))
        params += _numel(weight_shape)
        kind = conv_kind(in_shapes[0][1], groups, kernel)
    elif kind == "linear" and weight_shape is not None:
        k_dim = in_shapes[0][-1]
        macs = _numel(out_shape) * k_dim
        params += _numel(weight_shape)
    elif kind == "linear":  # activation x activation matmul
        macs = _numel(out_shape) * in_shapes[0][-1]
    in_bytes = sum(_numel(s) for s in in_shapes) * ACT_BYTES
    return Op(kind, name, stage, tuple(out_shape), tuple(tuple(s) for s in in_shapes), kernel, stride, groups,
              int(macs), int(params), int(in_bytes), _numel(out_shape) * ACT_BYTES, inputs, output)


class _Tracer(TorchDispatchMode):
    """Records ATen ops on meta tensors, tracking which tensors alias which buffers."""

    def __init__(self, weights: set[int]):
        super().__init__()
        self.weights = weights  # ids of parameter/buffer tensors and their views
        self.buffer: dict[int, int] = {}  # tensor id -> activation buffer id
        self.keep: list = []  # keep tensors alive so ids are never reused during the trace
        self.raw: list[tuple] = []
        self.stage = "stem"

    def register_input(self, t: torch.Tensor) -> int:
        self.keep.append(t)
        self.buffer[id(t)] = 0
        return 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ == "_native_batch_norm_legit_no_training":
            # torch's meta BatchNorm is a slow Python decomposition; the shape is the input's
            x = args[0]
            out = (torch.empty_like(x), x.new_empty((0,)), x.new_empty((0,)))
        else:
            out = func(*args, **(kwargs or {}))
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor)]
        self.keep.extend(outs)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if args and isinstance(args[0], (list, tuple)):  # cat
            tensors = [a for a in args[0] if isinstance(a, torch.Tensor)]
        acts = [t for t in tensors if id(t) in self.buffer]
        in_ids = tuple(self.buffer[id(t)] for t in acts)
        if func.is_view or _mutates_first(func):
            src = tensors[0] if tensors else None
            for o in outs:
                if src is not None and id(src) in self.buffer:
                    self.buffer[id(o)] = self.buffer[id(src)]
                elif src is not None and id(src) in self.weights:
                    self.weights.add(id(o))
            if func.is_view:
                return out
        base = func.overloadpacket.__name__.rstrip("_")
        if not acts or not outs:
            for o in outs:  # constants derived from weights stay weights
                self.weights.add(id(o))
            return out
        # In-place ops get a fresh buffer id too: the op list is SSA, as in an ONNX graph.
        new_id = len(self.raw) + 1
        self.buffer[id(outs[0])] = new_id
        weights = [t for t in tensors if id(t) not in self.buffer]
        self.raw.append((base, args, acts, in_ids, outs[0], weights, new_id, self.stage))
        return out


def _mutates_first(func) -> bool:
    args = func._schema.arguments
    return bool(args) and args[0].alias_info is not None and args[0].alias_info.is_write


def _raw_to_ops(tracer: _Tracer) -> list[Op]:
    ops = []
    for base, args, acts, inputs, out, weights, out_id, stage in tracer.raw:
        kind = _ATEN_KIND.get(base, "elementwise" if out.dim() and acts else "copy")
        in_shapes = [tuple(a.shape) for a in acts]
        extra: dict = {}
        if base == "convolution":
            w, b = args[1], args[2]
            extra = dict(weight_shape=tuple(w.shape), stride=int(args[3][0]), groups=int(args[8]),
                         bias=_numel(tuple(b.shape)) if b is not None else 0)
        elif kind == "linear" and weights:
            w = max(weights, key=lambda t: t.dim())
            b = [t for t in weights if t is not w]
            extra = dict(weight_shape=tuple(w.shape), bias=sum(_numel(tuple(t.shape)) for t in b))
        elif kind == "norm":
            extra = dict(bias=2 * in_shapes[0][1])
        name = base
        if base == "hardtanh" and len(args) > 2 and float(args[1]) == 0.0 and float(args[2]) == 6.0:
            name = "relu6"
        ops.append(make_op(kind, name, stage, in_shapes, tuple(out.shape), inputs, out_id, **extra))
    return ops


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


def trace_ops(model: ScalableNet, resolution: int | None = None) -> list[Op]:
    """The fused op list of ``model`` at batch 1 (weights may live on the meta device)."""
    resolution = resolution or model.resolution
    weights = {id(t) for t in (*model.parameters(), *model.buffers())}
    tracer = _Tracer(weights)
    hooks = []
    for name, module in model.stage_modules():
        parts = module if isinstance(module, torch.nn.ModuleList) else [module]
        for part in parts:
            hooks.append(part.register_forward_pre_hook(lambda m, a, n=name: setattr(tracer, "stage", n)))
    device = next(model.parameters()).device
    x = torch.empty(1, 3, resolution, resolution, device=device)
    try:
        with torch.no_grad(), tracer:
            tracer.register_input(x)
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return fuse(_raw_to_ops(tracer))


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
            macs = _numel(o) * (ins[0][1] // op.groups) * op.kernel * op.kernel
        shape[op.output] = o
        out.append(replace(op, in_shapes=ins, out_shape=o, macs=int(macs),
                           in_bytes=sum(_numel(s) for s in ins) * ACT_BYTES, out_bytes=_numel(o) * ACT_BYTES))
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


def model_cost(model: ScalableNet, resolution: int | None = None) -> Cost:
    """Static cost of a built model (on any device; ``meta`` is fastest)."""
    resolution = resolution or model.resolution
    params = sum(p.numel() for p in model.parameters())
    return cost_from_ops(trace_ops(model, resolution), resolution, params)


_CACHE_VERSION = 1  # bump when Op or the tracer changes


@functools.lru_cache(maxsize=256)
def _topology_cost(family: str, plan: tuple, num_classes: int, scale: Scale) -> Cost:
    """Trace once per plan; kept in memory and under edgefit_home()/cache so later runs skip tracing."""
    from pipeline.core.io import atomic_write
    from pipeline.core.paths import edgefit_home

    key = hashlib.sha256(repr((_CACHE_VERSION, torch.__version__, family, plan, num_classes,
                               scale.resolution)).encode()).hexdigest()[:20]
    path = edgefit_home() / "cache" / "cost" / f"{family}-{key}.pkl"
    try:
        with open(path, "rb") as fh:
            cached = pickle.load(fh)
        if isinstance(cached, Cost):
            return cached
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        pass  # missing or stale cache entry: trace again
    cost = model_cost(build(family, scale, num_classes, device="meta"))
    try:  # each entry is written whole or not at all, so concurrent writers need no lock
        atomic_write(path, lambda fh: pickle.dump(cost, fh, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError:
        pass  # a read-only home only costs speed
    return cost


def scale_cost(family: str, scale: Scale, num_classes: int = 1000) -> Cost:
    """Static cost of ``family`` at ``scale``: no weights are allocated, nothing is timed.

    The model is traced once per channel/block plan (on the meta device); other
    resolutions of the same plan are derived by :func:`rescale_ops`.
    """
    plan = FAMILIES[check_family(family)].plan(scale)
    base = _topology_cost(family, plan, num_classes, scale.with_resolution(_TRACE_RESOLUTION))
    return cost_from_ops(rescale_ops(base.ops, scale.resolution), scale.resolution, base.params)
