"""Static cost of a built torch model by tracing it: the oracle for :mod:`pipeline.cost.plan`.

Nothing here times anything. A model is traced on the ``meta`` device (shapes only, no
arithmetic), every ATen op is recorded, and the raw trace is turned into the op list that an
inference runtime actually executes: BatchNorm and simple activations folded into the preceding
convolution, as ONNX Runtime does (:func:`pipeline.cost.ops.fuse`).

The search and the predictor cost architectures from their plans instead
(:func:`pipeline.cost.plan.scale_cost`, no torch, about a millisecond); tracing serves ``deploy
describe`` of any built model, families without a plan builder, and the test that keeps the plan
walk honest. The names of :mod:`pipeline.cost.ops` are re-exported here for older imports.
"""

from __future__ import annotations

import functools
import hashlib
import pickle

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.core.scaling import Scale
from pipeline.cost.ops import (  # noqa: F401 - re-exported
    ACT_BYTES,
    BYTES_PER_ELEMENT,
    CONV_KINDS,
    FOLDABLE_ACTIVATIONS,
    KINDS,
    Cost,
    Op,
    conv_kind,
    cost_from_ops,
    fuse,
    make_op,
    numel,
    peak_activation_bytes,
    rescale_ops,
)
from pipeline.models import FAMILIES, ScalableNet, build, check_family

_TRACE_RESOLUTION = 224  # one trace per plan, at this resolution; others are derived

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
                         bias=numel(tuple(b.shape)) if b is not None else 0)
        elif kind == "linear" and weights:
            w = max(weights, key=lambda t: t.dim())
            b = [t for t in weights if t is not w]
            extra = dict(weight_shape=tuple(w.shape), bias=sum(numel(tuple(t.shape)) for t in b))
        elif kind == "norm":
            extra = dict(bias=2 * in_shapes[0][1])
        name = base
        if base == "hardtanh" and len(args) > 2 and float(args[1]) == 0.0 and float(args[2]) == 6.0:
            name = "relu6"
        ops.append(make_op(kind, name, stage, in_shapes, tuple(out.shape), inputs, out_id, **extra))
    return ops


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


def traced_scale_cost(family: str, scale: Scale, num_classes: int = 1000) -> Cost:
    """Static cost of ``family`` at ``scale`` by tracing (meta device, once per channel/block plan; other
    resolutions of the same plan are derived by :func:`rescale_ops`)."""
    plan = FAMILIES[check_family(family)].plan(scale)
    base = _topology_cost(family, plan, num_classes, scale.with_resolution(_TRACE_RESOLUTION))
    return cost_from_ops(rescale_ops(base.ops, scale.resolution), scale.resolution, base.params)

