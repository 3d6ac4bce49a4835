"""Static cost straight from a family's architecture plan: the fused op list, without torch.

The plan (``ScalableNet.plan(scale)`` plus each family's stage table) already says every layer's
channels, kernel, stride and groups, and the input resolution fixes every spatial size. This module
walks the same layers as each family's ``forward`` and emits the :class:`~pipeline.cost.ops.Op`
records that tracing the model would (after the same BatchNorm/activation folding), in the same
order, so the predictor, the liveness walk and every figure derived from them are unchanged.
Building a few hundred ops this way takes about a millisecond, where tracing took 0.2–0.5 s per
channel/block plan: this is what makes a cold search fast.

Tracing (:func:`pipeline.cost.trace.model_cost`) stays as the oracle: ``tests/test_cost_plan.py``
checks that both agree on the op list, params, MACs and peak activation bytes for every family at
many scales. A family without a builder here falls back to tracing
(:func:`pipeline.cost.trace.traced_scale_cost`). Nothing here imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

from pipeline.core.scaling import Scale
from pipeline.cost.ops import FOLDABLE_ACTIVATIONS, Cost, Op, conv_kind, cost_from_ops, make_op
from pipeline.models.plans import (
    EFFICIENTNET_STAGES,
    MOBILENETV2_STAGES,
    RESNET_EXPANSION,
    check_family,
    efficientnet_lite_plan,
    efficientnet_plan,
    mobilenetv2_plan,
    resnet_plan,
)

BN = "native_batch_norm"  # the name tracing gives a folded BatchNorm


@dataclass(frozen=True)
class T:
    """An activation tensor of the walk: its buffer id and shape."""

    id: int
    shape: tuple[int, ...]


class Graph:
    """Emits ops as tracing would see them, already folded (conv + BatchNorm + a foldable activation)."""

    def __init__(self, resolution: int):
        self.ops: list[Op] = []
        self.stage = "stem"
        self._next = 1
        self.input = T(0, (1, 3, resolution, resolution))

    def _emit(self, kind: str, name: str, ins: tuple[T, ...], out_shape: tuple[int, ...], **extra) -> T:
        out = T(self._next, out_shape)
        self._next += 1
        fused = extra.pop("fused", ())
        bn_params = extra.pop("bn_params", 0)
        op = make_op(kind, name, self.stage, [t.shape for t in ins], out_shape, tuple(t.id for t in ins), out.id,
                     **extra)
        if fused or bn_params:
            op = replace(op, fused=tuple(fused), params=op.params + bn_params)
        self.ops.append(op)
        return out

    def conv(self, x: T, cout: int, kernel: int, stride: int = 1, groups: int = 1, *, bias: bool = False,
             bn: bool = True, act: str | None = None) -> T:
        """Conv2d (symmetric padding), then BatchNorm and ``act`` folded as ONNX Runtime (and the tracer) fold them."""
        n, cin, h, w = x.shape
        pad = (kernel - 1) // 2
        oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        foldable = act is not None and act in FOLDABLE_ACTIVATIONS
        fused = ((BN,) if bn else ()) + ((act,) if foldable else ())
        y = self._emit("conv", "convolution", (x,), (n, cout, oh, ow),
                       weight_shape=(cout, cin // groups, kernel, kernel), stride=stride, groups=groups,
                       bias=cout if bias else 0, fused=fused, bn_params=2 * cout if bn else 0)
        assert conv_kind(cin, groups, kernel) == self.ops[-1].kind
        if act is not None and not foldable:
            y = self.activation(y, act)
        return y

    def activation(self, x: T, name: str) -> T:
        return self._emit("activation", name, (x,), x.shape)

    def add(self, a: T, b: T) -> T:
        return self._emit("elementwise", "add", (a, b), a.shape)

    def mul(self, a: T, b: T) -> T:
        return self._emit("elementwise", "mul", (a, b), a.shape)

    def mean(self, x: T, keepdim: bool) -> T:
        n, c = x.shape[:2]
        return self._emit("reduce", "mean", (x,), (n, c, 1, 1) if keepdim else (n, c))

    def maxpool(self, x: T) -> T:
        """3x3, stride 2, padding 1 (the ResNet stem)."""
        n, c, h, w = x.shape
        return self._emit("pool", "max_pool2d_with_indices", (x,), (n, c, (h - 1) // 2 + 1, (w - 1) // 2 + 1))

    def linear(self, x: T, out: int) -> T:
        return self._emit("linear", "addmm", (x,), (x.shape[0], out), weight_shape=(out, x.shape[-1]), bias=out)

    def classifier(self, x: T, num_classes: int) -> T:
        """ScalableNet's tail: global mean over H×W, (dropout: nothing at inference), linear."""
        return self.linear(self.mean(x, keepdim=False), num_classes)


# --- the families -----------------------------------------------------------------------------------------------


def _mbconv_net(g: Graph, scale: Scale, num_classes: int, plan_of, act: str, se: bool) -> None:
    """EfficientNet and EfficientNet-Lite: stem, MBConv stages, 1x1 head (pipeline.models.efficientnet*)."""
    stem_ch, plan, head_ch = plan_of(scale)
    x = g.conv(g.input, stem_ch, 3, 2, act=act)
    cin = stem_ch
    for i, ((expand, kernel, stride, *_), (cout, n)) in enumerate(zip(EFFICIENTNET_STAGES, plan)):
        g.stage = f"stage{i + 1}"
        for j in range(n):
            s = stride if j == 0 else 1
            hidden = cin * expand
            h = g.conv(x, hidden, 1, act=act) if expand != 1 else x
            h = g.conv(h, hidden, kernel, s, groups=hidden, act=act)
            if se:
                gate = g.mean(h, keepdim=True)
                gate = g.conv(gate, max(1, cin // 4), 1, bias=True, bn=False, act="silu")
                gate = g.conv(gate, hidden, 1, bias=True, bn=False, act="sigmoid")
                h = g.mul(h, gate)
            h = g.conv(h, cout, 1)
            x = g.add(x, h) if s == 1 and cin == cout else h
            cin = cout
    g.stage = "head"
    g.classifier(g.conv(x, head_ch, 1, act=act), num_classes)


def _efficientnet(g: Graph, scale: Scale, num_classes: int) -> None:
    _mbconv_net(g, scale, num_classes, efficientnet_plan, "silu", se=True)


def _efficientnet_lite(g: Graph, scale: Scale, num_classes: int) -> None:
    _mbconv_net(g, scale, num_classes, efficientnet_lite_plan, "relu6", se=False)


def _mobilenetv2(g: Graph, scale: Scale, num_classes: int) -> None:
    stem_ch, plan, last_ch = mobilenetv2_plan(scale)
    x = g.conv(g.input, stem_ch, 3, 2, act="relu6")
    cin = stem_ch
    for i, ((t, _, _, stride), (cout, n)) in enumerate(zip(MOBILENETV2_STAGES, plan)):
        g.stage = f"stage{i + 1}"
        for j in range(n):
            s = stride if j == 0 else 1
            hidden = int(round(cin * t))
            h = g.conv(x, hidden, 1, act="relu6") if t != 1 else x
            h = g.conv(h, hidden, 3, s, groups=hidden, act="relu6")
            h = g.conv(h, cout, 1)
            x = g.add(x, h) if s == 1 and cin == cout else h
            cin = cout
    g.stage = "head"
    g.classifier(g.conv(x, last_ch, 1, act="relu6"), num_classes)


def _resnet(family: str) -> Callable[[Graph, Scale, int], None]:
    expansion = RESNET_EXPANSION[family]

    def build(g: Graph, scale: Scale, num_classes: int) -> None:
        stem_ch, plan, _ = resnet_plan(family, scale)
        x = g.maxpool(g.conv(g.input, stem_ch, 7, 2, act="relu"))
        cin = stem_ch
        bottleneck = expansion == 4
        for i, (planes, n) in enumerate(plan):
            g.stage = f"stage{i + 1}"
            for j in range(n):
                s = (1 if i == 0 else 2) if j == 0 else 1
                cout = planes * expansion
                identity = g.conv(x, cout, 1, s) if s != 1 or cin != cout else x
                if bottleneck:
                    h = g.conv(g.conv(x, planes, 1, act="relu"), planes, 3, s, act="relu")
                    h = g.conv(h, cout, 1)
                else:
                    h = g.conv(g.conv(x, planes, 3, s, act="relu"), planes, 3)
                x = g.activation(g.add(h, identity), "relu")
                cin = cout
        g.stage = "head"
        g.classifier(x, num_classes)

    return build


BUILDERS: dict[str, Callable[[Graph, Scale, int], None]] = {
    "efficientnet": _efficientnet, "efficientnet-lite": _efficientnet_lite, "mobilenetv2": _mobilenetv2,
    "resnet18": _resnet("resnet18"), "resnet34": _resnet("resnet34"), "resnet50": _resnet("resnet50"),
}


def plan_ops(family: str, scale: Scale, num_classes: int = 1000) -> list[Op]:
    """The fused op list of ``family`` at ``scale`` (batch 1), from its plan alone."""
    g = Graph(scale.resolution)
    BUILDERS[check_family(family)](g, scale, num_classes)
    return g.ops


@functools.lru_cache(maxsize=2048)
def scale_cost(family: str, scale: Scale, num_classes: int = 1000) -> Cost:
    """Static cost of ``family`` at ``scale``: params, MACs, weight bytes, peak activations and the fused op list.

    From the plan (no weights, no torch, nothing timed); a family without a builder is traced instead.
    """
    if check_family(family) not in BUILDERS:
        from pipeline.cost.trace import traced_scale_cost

        return traced_scale_cost(family, scale, num_classes)
    ops = plan_ops(family, scale, num_classes)
    return cost_from_ops(ops, scale.resolution, sum(op.params for op in ops))


__all__ = ["BUILDERS", "Graph", "plan_ops", "scale_cost"]
