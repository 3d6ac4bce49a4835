"""Predictor features: a :class:`~pipeline.cost.ops.Cost` summarised per op kind.

Latency on a CPU or GPU is roughly a sum over executed ops of (arithmetic at that op
kind's efficiency) + (bytes moved at that kind's bandwidth) + a fixed per-op dispatch
cost. Keeping dense, pointwise and depthwise convolutions apart is what lets one fit
generalise across families and across per-dimension scaling: a resolution-only change
moves bytes and MACs differently from a width-only change.

Convolution MACs are counted with channels rounded up to the runtime's vector block
(``channel_block``). ONNX Runtime's CPU convolutions work on channel blocks (NCHWc: 16
channels with AVX-512, 8 with AVX2), so a 56-channel layer costs what a 64-channel one
does. Which block a device uses is not guessed: the predictor picks it by held-out
error on the measured profile (:data:`CHANNEL_BLOCKS`). On this project's 2-core
AVX-512 host that took the leave-one-out p90 error from 10.0% (no padding) to 4.9%.
"""

from __future__ import annotations

from pipeline.cost.ops import Cost

_GROUPS = {
    "conv": "conv", "pwconv": "pwconv", "dwconv": "dwconv", "linear": "linear",
    "activation": "eltwise", "elementwise": "eltwise", "copy": "eltwise", "norm": "eltwise",
    "reduce": "reduce", "pool": "reduce",
}
LATENCY_FEATURES = (
    "conv_gmacs", "pwconv_gmacs", "dwconv_gmacs", "linear_gmacs",
    "conv_mb", "pwconv_mb", "dwconv_mb", "eltwise_mb", "reduce_mb",
    "ops", "const",
)
MEMORY_FEATURES = ("weights_mb", "activations_mb", "const")
CHANNEL_BLOCKS = (1, 8, 16, 32)  # candidates tried when fitting; 1 = no padding


def _padded(channels: int, block: int) -> float:
    """How much larger ``channels`` gets when rounded up to a multiple of ``block``."""
    return -(-channels // block) * block / channels if channels >= block else 1.0


def _conv_macs(op, block: int) -> float:
    if block <= 1 or op.kind not in ("conv", "pwconv", "dwconv") or len(op.out_shape) != 4:
        return float(op.macs)
    factor = _padded(op.out_shape[1], block)
    if op.kind != "dwconv":  # a depthwise conv's input channels are its output channels
        factor *= _padded(op.in_shapes[0][1], block)
    return op.macs * factor


def latency_features(cost: Cost, channel_block: int = 1) -> dict[str, float]:
    """Per-kind GMACs (channels padded to ``channel_block``), MB moved (activations in/out + fp32 weights), op count."""
    f = dict.fromkeys(LATENCY_FEATURES, 0.0)
    for op in cost.ops:
        group = _GROUPS.get(op.kind, "eltwise")
        moved = (op.in_bytes + op.out_bytes + op.params * 4) / 2**20
        if group in ("conv", "pwconv", "dwconv", "linear"):
            f[f"{group}_gmacs"] += _conv_macs(op, channel_block) / 1e9
        if group != "linear":
            f[f"{group}_mb"] += moved
    f["ops"] = float(len(cost.ops))
    f["const"] = 1.0
    return f


def memory_features(cost: Cost) -> dict[str, float]:
    return {
        "weights_mb": cost.weight_bytes["fp32"] / 2**20,
        "activations_mb": cost.activation_bytes / 2**20,
        "const": 1.0,
    }
