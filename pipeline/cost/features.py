"""Predictor features: a :class:`~pipeline.cost.ops.Cost` summarised per op kind and execution path.

Latency on a CPU or GPU is roughly a sum over executed ops of (arithmetic at that op
kind's efficiency) + (bytes moved at that kind's bandwidth) + a fixed per-op dispatch
cost. Keeping dense, pointwise and depthwise convolutions apart is what lets one fit
generalise across families and across per-dimension scaling: a resolution-only change
moves bytes and MACs differently from a width-only change.

**Channel blocks and the blocked layout.** ONNX Runtime's CPU provider rewrites most
convolutions into a channel-blocked layout (NCHWc: 16 channels with AVX-512, 8 with AVX2;
``onnxruntime/core/optimizer/nchwc_transformer.cc``). Such a convolution costs what its
channels rounded up to the block cost, and it is fast. A convolution the rewrite cannot take
runs im2col + GEMM in the plain layout, several times slower per MAC, and the layout changes
around it cost a copy each (``ReorderInput``/``ReorderOutput``). Which one a layer gets follows
from its shape and its neighbours (:func:`blocked_layout`): a grouped convolution that is not
depthwise gets it only when its channels per group, in and out, are multiples of the block; a
dense or depthwise one when its input channels are a multiple of 4, or (dense) fewer than the
block, as a stem's are. Our own families are almost all blocked; models users bring (ShuffleNet's
58-channel branches, ResNeXt's groups) often are not, which is why a predictor fitted without
this split missed them by 30-60%.

Which block a device uses is not guessed where it can be read: for an ONNX Runtime profile it is
the CPU's MLAS block (``nchwc_block`` in the profile's device facts: 16 with AVX-512F, 8 with
AVX). A profile without it (an agent's device) picks one of :data:`CHANNEL_BLOCKS` by held-out
error; block 1 means no padding and no layout split, what a GPU or an unknown runtime gets.
"""

from __future__ import annotations

from collections import OrderedDict

from pipeline.cost.ops import ACT_BYTES, CONV_KINDS, Cost, Op, numel

LATENCY_FEATURES = (
    "conv_gmacs", "conv_edge_gmacs", "pwconv_gmacs", "dwconv_gmacs", "plain_conv_gmacs", "linear_gmacs", "gemm_gmacs",
    "conv_mb", "dwconv_mb", "eltwise_mb", "reduce_mb", "reorder_mb",
    "ops", "const",
)
MEMORY_FEATURES = ("weights_mb", "activations_mb", "const")
CHANNEL_BLOCKS = (1, 8, 16)  # MLAS blocks (8: AVX/AVX2/NEON, 16: AVX-512), tried when fitting; 1 = no layout split

# Ops that keep the blocked layout when every activation input has it (ORT converts them to NCHWc).
_BLOCKED_FOLLOWERS = {"pool", "activation", "norm"}
_BLOCKED_BINARY = {"add", "sum", "mul", "relu"}


def _padded(channels: int, block: int) -> float:
    """How much larger ``channels`` gets when rounded up to a multiple of ``block``."""
    return -(-channels // block) * block / channels if channels >= block else 1.0


def _conv_macs(op: Op, block: int) -> float:
    if block <= 1 or op.kind not in CONV_KINDS or len(op.out_shape) != 4:
        return float(op.macs)
    factor = _padded(op.out_shape[1], block)
    if op.kind != "dwconv":  # a depthwise conv's input channels are its output channels
        factor *= _padded(op.in_shapes[0][1], block)
    return op.macs * factor


def _edge_fraction(op: Op) -> float:
    """Share of a k×k convolution's outputs whose window reaches into the zero padding.

    MLAS computes those border outputs with a separate, slower kernel, so a 7×7 layer on an
    8×8 map (most outputs on the border) runs at half the MAC rate of a 3×3 layer on 56×56.
    Padding is taken as (k-1)/2, none when stride equals kernel (a patchify stem).
    """
    if op.kernel <= 1 or len(op.out_shape) != 4 or not op.in_shapes or len(op.in_shapes[0]) != 4:
        return 0.0
    k, s = op.kernel, max(op.stride, 1)
    pad = 0 if s == k else (k - 1) // 2
    inner = 1.0
    for size, out in zip(op.in_shapes[0][2:], op.out_shape[2:]):
        first = -(-pad // s)
        last = (size - k + pad) // s
        inner *= max(0, min(out - 1, last) - first + 1) / out
    return 1.0 - inner


def _channels(op: Op) -> int:
    return op.in_shapes[0][1] if op.in_shapes and len(op.in_shapes[0]) == 4 else 0


def _conv_blocked(op: Op, block: int) -> bool:
    """ORT 1.2x-1.3x's NCHWc rule for one convolution (checked against its optimized graphs in the tests).

    Dense and depthwise: input channels a multiple of 4 (what its input reorder handles), or
    fewer than the block (the stem reads the plain input directly). Grouped: channels per
    group a multiple of the block, on both sides.
    """
    cin, cout = _channels(op), op.out_shape[1] if len(op.out_shape) == 4 else 0
    if op.groups > 1 and op.kind != "dwconv":
        return (cin // op.groups) % block == 0 and (cout // op.groups) % block == 0
    return cin % 4 == 0 or (op.kind != "dwconv" and cin < block)


def blocked_layout(ops: tuple[Op, ...], block: int) -> list[bool]:
    """For each op: does it run in ONNX Runtime's blocked (NCHWc) layout with channel block ``block``?

    A conservative reading of ORT's NCHWc transformer: convolutions decide (see the module
    docstring); pools, activations and same-shape binary element-wise ops follow their inputs;
    everything else (transposes, splits, GEMMs, layer norms, reductions) runs in the plain layout.
    """
    if block <= 1:
        return [op.kind in CONV_KINDS for op in ops]
    blocked_buf: dict[int, bool] = {0: False}
    out = []
    for op in ops:
        ins = [blocked_buf.get(i, False) for i in op.inputs]
        if op.kind in CONV_KINDS:
            flag = _conv_blocked(op, block)
        elif op.kind in _BLOCKED_FOLLOWERS or op.name in _BLOCKED_BINARY:
            same = len(set(op.in_shapes)) == 1
            flag = bool(ins) and all(ins) and same and len(op.out_shape) == 4
        elif op.name in ("concat", "cat"):
            flag = bool(ins) and all(ins) and all(len(s) == 4 and s[1] % block == 0 for s in op.in_shapes)
        elif op.name == "globalaveragepool":
            flag = bool(ins) and all(ins)
        else:
            flag = False
        blocked_buf[op.output] = flag
        out.append(flag)
    return out


def _reorder_mb(ops: tuple[Op, ...], layout: list[bool], block: int) -> float:
    """MB copied between layouts: each buffer crossing from blocked to plain (or back) once per direction."""
    if block <= 1:
        return 0.0
    producer_blocked = {0: False, **{op.output: flag for op, flag in zip(ops, layout)}}
    moved: set[tuple[int, bool]] = set()
    total = 0
    for op, flag in zip(ops, layout):
        for b, shape in zip(op.inputs, op.in_shapes):
            src = producer_blocked.get(b, False)
            if src == flag or (flag and op.kind in CONV_KINDS and _channels(op) < block):
                continue  # same layout, or a stem conv reading the plain input directly
            if (b, flag) not in moved:
                moved.add((b, flag))
                total += numel(shape) * ACT_BYTES
    return total / 2**20


def _gemm_rows(op: Op) -> int:
    """Rows of a linear layer's GEMM: 1 for a classifier on a pooled vector, H·W for a per-pixel MLP."""
    width = op.out_shape[-1] if op.out_shape else 1
    return numel(op.out_shape) // max(width, 1)


_FEATURE_MEMO: OrderedDict[tuple[int, int], tuple[Cost, dict[str, float]]] = OrderedDict()
_FEATURE_MEMO_SIZE = 4096


def latency_features(cost: Cost, channel_block: int = 1) -> dict[str, float]:
    """:func:`_latency_features`, remembered per cost object: a predictor's held-out check refits it once per
    record, and the search asks for every architecture, all on the same (cached) costs."""
    key = (id(cost), channel_block)
    hit = _FEATURE_MEMO.get(key)
    if hit is not None and hit[0] is cost:  # the cost is kept alive in the memo, so its id is not reused
        _FEATURE_MEMO.move_to_end(key)
        return dict(hit[1])
    f = _latency_features(cost, channel_block)
    _FEATURE_MEMO[key] = (cost, f)
    if len(_FEATURE_MEMO) > _FEATURE_MEMO_SIZE:
        _FEATURE_MEMO.popitem(last=False)
    return dict(f)


def _latency_features(cost: Cost, channel_block: int = 1) -> dict[str, float]:
    """Per-kind GMACs, MB moved, layout copies and op count: what the predictor's linear model weighs.

    Blocked convolutions count their MACs padded to ``channel_block``, split into interior and
    border outputs; convolutions ORT leaves in the plain layout count apart (im2col + GEMM);
    a linear layer is a GEMV on a pooled vector (``linear``) or a GEMM with many rows (``gemm``).
    """
    f = dict.fromkeys(LATENCY_FEATURES, 0.0)
    layout = blocked_layout(cost.ops, channel_block)
    for op, blocked in zip(cost.ops, layout):
        moved = (op.in_bytes + op.out_bytes + op.params * 4) / 2**20
        if op.kind in CONV_KINDS:
            f["dwconv_mb" if op.kind == "dwconv" else "conv_mb"] += moved
            if not blocked:
                f["plain_conv_gmacs"] += op.macs / 1e9
                continue
            macs = _conv_macs(op, channel_block) / 1e9
            edge = _edge_fraction(op) if op.kind == "conv" else 0.0
            f[f"{op.kind}_gmacs"] += macs * (1 - edge)
            f["conv_edge_gmacs"] += macs * edge
        elif op.kind == "linear":
            f["gemm_gmacs" if _gemm_rows(op) > 1 else "linear_gmacs"] += op.macs / 1e9
        elif op.kind in ("reduce", "pool"):
            f["reduce_mb"] += moved
        else:
            f["eltwise_mb"] += moved
    f["reorder_mb"] = _reorder_mb(cost.ops, layout, channel_block)
    f["ops"] = float(len(cost.ops))
    f["const"] = 1.0
    return f


def memory_features(cost: Cost) -> dict[str, float]:
    return {
        "weights_mb": cost.weight_bytes["fp32"] / 2**20,
        "activations_mb": cost.activation_bytes / 2**20,
        "const": 1.0,
    }
