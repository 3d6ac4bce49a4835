"""Predictor features: a :class:`~pipeline.cost.Cost` summarised per op kind.

Latency on a CPU or GPU is roughly a sum over executed ops of (arithmetic at that op
kind's efficiency) + (bytes moved at that kind's bandwidth) + a fixed per-op dispatch
cost. Keeping dense, pointwise and depthwise convolutions apart is what lets one fit
generalise across families and across per-dimension scaling: a resolution-only change
moves bytes and MACs differently from a width-only change.
"""

from __future__ import annotations

from .cost import Cost

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


def latency_features(cost: Cost) -> dict[str, float]:
    """Per-kind GMACs, MB moved (activations in/out + weights, fp32) and op count."""
    f = dict.fromkeys(LATENCY_FEATURES, 0.0)
    for op in cost.ops:
        group = _GROUPS.get(op.kind, "eltwise")
        moved = (op.in_bytes + op.out_bytes + op.params * 4) / 2**20
        if group in ("conv", "pwconv", "dwconv", "linear"):
            f[f"{group}_gmacs"] += op.macs / 1e9
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
