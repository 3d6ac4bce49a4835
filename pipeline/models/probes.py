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


class _Decoder(nn.Module):
    """A small U-Net: pools down, transposed convolutions and resizes up, skip connections concatenated."""

    def __init__(self):
        super().__init__()
        self.stem, self.e1 = _conv(3, 16, 3, 2), _conv(16, 32)
        self.e2, self.e3 = _conv(32, 64), _conv(64, 128)
        self.up2, self.d2 = nn.ConvTranspose2d(128, 64, 2, 2), _conv(128, 64, 1)
        self.d1 = _conv(64 + 32, 32)
        self.up0, self.d0 = nn.ConvTranspose2d(32, 16, 4, 2, 1), _conv(16, 16)
        self.up_out = nn.ConvTranspose2d(16, 16, 3, 2, 1, output_padding=1)

    def forward(self, x):
        f = nn.functional
        s1 = self.e1(self.stem(x))                                                    # 48²
        s2 = self.e2(f.max_pool2d(s1, 2))                                             # 24²
        y = self.e3(f.avg_pool2d(s2, 2))                                              # 12²
        y = self.d2(torch.cat([s2, self.up2(y)], 1))                                  # 24²
        y = self.d1(torch.cat([s1, f.interpolate(y, scale_factor=2.0, mode="bilinear")], 1))  # 48²
        y = self.d0(self.up0(y))                                                      # 96²
        y = f.interpolate(y, scale_factor=0.5, mode="nearest")                        # 48²
        y = f.interpolate(self.up_out(y), scale_factor=0.25, mode="bilinear")         # 96² → 24²
        return f.interpolate(y, scale_factor=0.5, mode="nearest")                     # 12²


def decoder(res: int) -> Probe:
    """A segmentation-style encoder-decoder: ConvTranspose, Resize, Concat and pools at several sizes."""
    return Probe(_Decoder(), 16, res)


class _Attention(nn.Module):
    """A transformer block on a token map: multi-head self-attention and a GELU MLP, both residual.

    Pre-norm (ViT) normalises each branch's input; post-norm (BERT, PyTorch's default encoder layer) the sum,
    which ONNX Runtime fuses into SkipLayerNormalization: the probe has both.
    """

    def __init__(self, c: int, heads: int, post_norm: bool = False):
        super().__init__()
        self.heads, self.post_norm = heads, post_norm
        self.norm1, self.qkv, self.proj = nn.LayerNorm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(c), nn.Linear(c, 2 * c), nn.Linear(2 * c, c)

    def _attend(self, t):
        b, n, c = t.shape
        q, k, v = self.qkv(t).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))

    def forward(self, t):
        mlp = lambda u: self.fc2(nn.functional.gelu(self.fc1(u)))  # noqa: E731
        if self.post_norm:
            t = self.norm1(t + self._attend(t))
            return self.norm2(t + mlp(t))
        t = t + self._attend(self.norm1(t))
        return t + mlp(self.norm2(t))


class _Tokenized(nn.Module):
    """Patch stem, a pre-norm and a post-norm block on 16² tokens, a 2×2 patch merge, the same on 8² tokens."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.stem, self.merge = nn.Conv2d(3, c, 4, 4), nn.Conv2d(c, 2 * c, 2, 2)
        self.stage1 = nn.Sequential(_Attention(c, heads), _Attention(c, heads, post_norm=True))
        self.stage2 = nn.Sequential(_Attention(2 * c, 2 * heads), _Attention(2 * c, 2 * heads, post_norm=True))

    def forward(self, x):
        y = self.stem(x)
        b, c, h, w = y.shape
        t = self.stage1(y.flatten(2).transpose(1, 2))
        y = self.merge(t.transpose(1, 2).reshape(b, c, h, w))
        t = self.stage2(y.flatten(2).transpose(1, 2))
        return t.transpose(1, 2).reshape(b, 2 * c, h // 2, w // 2)


def attention(c: int, heads: int, res: int) -> Probe:
    """Self-attention (batched MatMul, Softmax, LayerNorm) and token MLPs at two token counts and widths."""
    return Probe(_Tokenized(c, heads), 2 * c, res)


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
    "decoder": lambda: decoder(96),
    "attention": lambda: attention(64, 2, 64),
}


def build_probe(name: str, seed: int = 0) -> nn.Module:
    """One probe in eval mode with seeded weights (biases nonzero, so nothing is folded away)."""
    if name not in PROBES:
        raise KeyError(f"unknown probe {name!r}; known: {', '.join(PROBES)}")
    torch.manual_seed(seed)
    return PROBES[name]().eval()


__all__ = ["PROBES", "Probe", "build_probe"]
