"""Calibration probes: small networks that time what edgefit's own families never do.

The four families are blocked-layout convolutions, ReLU/ReLU6/SiLU and squeeze-excite. A
profile timed on them alone cannot say what a grouped convolution, a convolution ONNX Runtime
leaves in the plain layout, a per-pixel GEMM, a transpose, a layer norm or a 7×7 kernel costs,
so a model a user brings (``deploy predict --onnx``) that is built from those is guessed.
Each probe isolates one or two of those costs, stays around 1-5 ms at one thread, and is
costed through its ONNX export (:func:`pipeline.cost.onnx.onnx_cost`), the same route a
user's file takes. The profile stores each probe's op list, so a predictor can be fitted
from the profile alone.

The probes are not the held-out set: ``bench/foreign_models.py`` holds real architectures
(VGG, ResNeXt, ShuffleNet, ConvNeXt, ...) that no probe copies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

PROBE_CLASSES = 100  # a small head: the probes time their bodies, not a 1000-way classifier


def _conv(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups)]
    return nn.Sequential(*layers, nn.ReLU()) if act else nn.Sequential(*layers)


class Probe(nn.Module):
    """body -> global average pool -> linear; ``resolution`` for the exporter."""

    def __init__(self, body: nn.Module, channels: int, resolution: int):
        super().__init__()
        self.body, self.resolution = body, resolution
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, PROBE_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def grouped(group_width: int, widths: tuple[int, ...], res: int) -> Probe:
    """Grouped 3×3 convolutions of ``group_width`` channels per group, each followed by a 1×1."""
    layers, cin = [_conv(3, widths[0], 3, 2)], widths[0]
    for w in widths:
        layers += [_conv(cin, w, 3, 2 if w != cin else 1, groups=w // group_width), _conv(w, w, 1)]
        cin = w
    return Probe(nn.Sequential(*layers), cin, res)


def odd_channels(widths: tuple[int, ...], res: int, depthwise: bool = False) -> Probe:
    """Channel counts that are not multiples of 4: ONNX Runtime runs these convolutions in the plain layout."""
    layers, cin = [_conv(3, widths[0], 3, 2)], widths[0]
    for w in widths:
        layers.append(_conv(cin, w, 1 if depthwise else 3, 2 if w != cin else 1))
        if depthwise:
            layers.append(_conv(w, w, 3, 1, groups=w))
        cin = w
    return Probe(nn.Sequential(*layers), cin, res)


def kernels(k: int, widths: tuple[int, ...], res: int, act: bool = True) -> Probe:
    """Dense k×k convolutions, one stride-2 and one stride-1 per width."""
    layers, cin = [], 3
    for w in widths:
        layers += [_conv(cin, w, k, 2, act=act), _conv(w, w, k, act=act)]
        cin = w
    return Probe(nn.Sequential(*layers), cin, res)


class _Tokens(nn.Module):
    """A per-pixel MLP on a channels-last tensor: transpose, layer norm, GEMM, GELU, GEMM, transpose, residual."""

    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(c), nn.Linear(c, hidden), nn.Linear(hidden, c)

    def forward(self, x):
        y = x.permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


def tokens(c: int, hidden: int, blocks: int, res: int) -> Probe:
    """A 4×4 patch stem and per-pixel MLP blocks: GEMMs with many rows, transposes, element-wise ops."""
    body = nn.Sequential(nn.Conv2d(3, c, 4, 4), *(_Tokens(c, hidden) for _ in range(blocks)))
    return Probe(body, c, res)


class _SplitShuffle(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        half = c // 2
        self.f = nn.Sequential(_conv(half, half, 1), _conv(half, half, 3, groups=half, act=False), _conv(half, half, 1))

    def forward(self, x):
        a, b = x.chunk(2, 1)
        y = torch.cat([a, self.f(b)], 1)
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


def split_shuffle(c: int, blocks: int, res: int) -> Probe:
    """Channel split, a branch on half the channels, concat and channel shuffle (reshape + transpose)."""
    body = nn.Sequential(_conv(3, c, 3, 2), _conv(c, c, 3, 2), *(_SplitShuffle(c) for _ in range(blocks)))
    return Probe(body, c, res)


class _Excite(nn.Module):
    """Conv, hard-swish (not folded into the conv), squeeze-excite with a broadcast multiply, residual add."""

    def __init__(self, c: int):
        super().__init__()
        self.conv, self.act = nn.Conv2d(c, c, 3, 1, 1), nn.Hardswish()
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, c, 1),
                                nn.Hardsigmoid())

    def forward(self, x):
        y = self.act(self.conv(x))
        return x + y * self.se(y)


def excite(c: int, blocks: int, res: int) -> Probe:
    """Element-wise work between convolutions: unfused activations, squeeze-excite, residual adds."""
    body = nn.Sequential(_conv(3, c, 3, 2), *(_Excite(c) for _ in range(blocks)))
    return Probe(body, c, res)


class _Flat(nn.Module):
    def __init__(self, body: nn.Module, features: int, hidden: int, res: int):
        super().__init__()
        self.body, self.resolution = body, res
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(),
                                  nn.Linear(hidden, PROBE_CLASSES))

    def forward(self, x):
        return self.head(self.body(x))


def wide_head(hidden: int, res: int) -> _Flat:
    """VGG's head: a flattened feature map into a large fully connected layer (weight-bandwidth bound)."""
    body = nn.Sequential(_conv(3, 32, 3, 2), _conv(32, 64, 3, 2), nn.MaxPool2d(2))
    side = res // 8
    return _Flat(body, 64 * side * side, hidden, res)


PROBES: dict[str, Callable[[], nn.Module]] = {
    "grouped-gw4": lambda: grouped(4, (32, 64, 128), 96),
    "grouped-gw32": lambda: grouped(32, (64, 128, 256), 96),
    "odd-channels": lambda: odd_channels((30, 54, 102), 112),
    "odd-depthwise": lambda: odd_channels((42, 90, 186), 128, depthwise=True),
    "kernel7": lambda: kernels(7, (16, 48, 96), 96),
    "kernel5-linear": lambda: kernels(5, (32, 64, 128), 96, act=False),
    "tokens": lambda: tokens(64, 192, 3, 128),
    "split-shuffle": lambda: split_shuffle(96, 4, 128),
    "excite": lambda: excite(64, 4, 96),
    "wide-head": lambda: wide_head(1024, 64),
}


def build_probe(name: str, seed: int = 0) -> nn.Module:
    """One probe in eval mode with seeded weights (biases nonzero, so nothing is folded away)."""
    if name not in PROBES:
        raise KeyError(f"unknown probe {name!r}; known: {', '.join(PROBES)}")
    torch.manual_seed(seed)
    return PROBES[name]().eval()


__all__ = ["PROBES", "Probe", "build_probe"]
