"""Architectures edgefit did not build: the held-out set for ``deploy predict --onnx``.

None of these is in the calibration suite, and none is built from edgefit's families or from
its calibration probes (:mod:`pipeline.predict.probes`). They are written freely in torch, the
way a user's own model would be, and are costed only through their ONNX export, exactly as
``deploy predict --onnx FILE`` costs a user's file. The set covers what the issue names (plain
VGG-style stacks without BatchNorm, 5×5 and 7×7 kernels, grouped convolutions, wide-and-shallow
and narrow-and-deep nets, other stems) and the classic small nets a user is likely to bring
(AlexNet, SqueezeNet, ShuffleNet, DenseNet, Inception, MobileNetV3, ConvNeXt, RegNet shapes).

Widths are cut so that each model runs 1-80 ms at one thread on a laptop-class core.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, bn: bool = True,
         act: type[nn.Module] | None = nn.ReLU, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=not bn, dilation=dilation)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _Net(nn.Module):
    """features -> global average pool -> linear, with the resolution the exporter needs."""

    def __init__(self, features: nn.Module, channels: int, resolution: int, classes: int = 1000,
                 head: nn.Module | None = None):
        super().__init__()
        self.features, self.resolution = features, resolution
        self.head = head or nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# -- plain stacks -------------------------------------------------------------------------------------------------


def vgg_plain(widths=(32, 64, 128, 256, 256), convs=(1, 1, 2, 2, 2), res: int = 160, fc: int = 0) -> _Net:
    """VGG without BatchNorm: conv+ReLU stacks and max-pools; ``fc``: VGG's flatten + hidden FC head."""
    layers, cin = [], 3
    for w, n in zip(widths, convs):
        for _ in range(n):
            layers.append(_cbr(cin, w, bn=False))
            cin = w
        layers.append(nn.MaxPool2d(2))
    head = None
    if fc:
        side = res // 2 ** len(widths)
        head = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, fc), nn.ReLU(), nn.Linear(fc, 1000))
    return _Net(nn.Sequential(*layers), cin, res, head=head)


def kernel_stack(k: int, widths=(24, 48, 96, 160), res: int = 160, bn: bool = True) -> _Net:
    """Every conv k×k (5 or 7), stride 2 at each stage's first conv, two convs per stage."""
    layers, cin = [_cbr(3, widths[0], k, 2, bn=bn)], widths[0]
    for i, w in enumerate(widths):
        layers += [_cbr(cin, w, k, 2 if i else 1, bn=bn), _cbr(w, w, k, bn=bn)]
        cin = w
    return _Net(nn.Sequential(*layers), cin, res)


def wide_shallow(res: int = 112) -> _Net:
    """Four wide layers: few ops, large GEMMs."""
    f = nn.Sequential(_cbr(3, 128, 3, 2), _cbr(128, 384, 3, 2), _cbr(384, 512, 3, 2), _cbr(512, 768, 1))
    return _Net(f, 768, res)


class _Res(nn.Module):
    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.body, self.shortcut = body, shortcut or nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def narrow_deep(depth: int = 36, width: int = 24, res: int = 192) -> _Net:
    """Many thin residual 3×3 layers: latency dominated by per-op cost, not arithmetic."""
    layers: list[nn.Module] = [_cbr(3, width, 3, 2)]
    cin = width
    for i in range(depth // 2):
        stride = 2 if i in (depth // 8, depth // 4, 3 * depth // 8) else 1
        cout = cin * 2 if stride == 2 else cin
        short = _cbr(cin, cout, 1, stride, act=None) if stride == 2 else None
        layers.append(_Res(nn.Sequential(_cbr(cin, cout, 3, stride), _cbr(cout, cout, 3, act=None)), short))
        cin = cout
    return _Net(nn.Sequential(*layers), cin, res)


# -- grouped convolutions ---------------------------------------------------------------------------------------


def resnext_like(groups: int = 8, width: int = 128, res: int = 160) -> _Net:
    """Bottlenecks with a grouped 3×3 (ResNeXt)."""
    layers: list[nn.Module] = [_cbr(3, 32, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 32
    for stage, (w, n) in enumerate(zip((width, width * 2, width * 4), (2, 2, 2))):
        for i in range(n):
            stride = 2 if i == 0 and stage else 1
            out = w * 2
            body = nn.Sequential(_cbr(cin, w, 1), _cbr(w, w, 3, stride, groups=groups), _cbr(w, out, 1, act=None))
            short = _cbr(cin, out, 1, stride, act=None) if (stride != 1 or cin != out) else None
            layers.append(_Res(body, short))
            cin = out
    return _Net(nn.Sequential(*layers), cin, res)


def grouped_plain(groups: int = 4, widths=(32, 64, 128, 256), res: int = 192) -> _Net:
    """A plain stack of grouped 3×3 convolutions, with a 1×1 after each to mix groups."""
    layers, cin = [_cbr(3, widths[0], 3, 2)], widths[0]
    for w in widths:
        layers += [_cbr(cin, w, 3, 2, groups=groups), _cbr(w, w, 1)]
        cin = w
    return _Net(nn.Sequential(*layers), cin, res)


def regnet_like(group_width: int = 8, res: int = 192) -> _Net:
    """RegNetX-style stages: 1×1, grouped 3×3 with a fixed group width, 1×1."""
    layers: list[nn.Module] = [_cbr(3, 32, 3, 2)]
    cin = 32
    for w, n in ((48, 1), (96, 2), (240, 3), (528, 1)):
        for i in range(n):
            stride = 2 if i == 0 else 1
            body = nn.Sequential(_cbr(cin, w, 1), _cbr(w, w, 3, stride, groups=w // group_width),
                                 _cbr(w, w, 1, act=None))
            short = _cbr(cin, w, 1, stride, act=None) if (stride != 1 or cin != w) else None
            layers.append(_Res(body, short))
            cin = w
    return _Net(nn.Sequential(*layers), cin, res)


# -- other stems -----------------------------------------------------------------------------------------------


def _body(cin: int, widths=(64, 128, 256)) -> tuple[list[nn.Module], int]:
    layers = []
    for w in widths:
        layers += [_cbr(cin, w, 3, 2), _cbr(w, w, 3)]
        cin = w
    return layers, cin


def patchify_stem(res: int = 224) -> _Net:
    """A 4×4 stride-4 patchify stem (ViT/ConvNeXt) in front of a plain conv body."""
    body, c = _body(48)
    return _Net(nn.Sequential(_cbr(3, 48, 4, 4), *body), c, res)


class _SpaceToDepth(nn.Module):
    def forward(self, x):
        return nn.functional.pixel_unshuffle(x, 2)


def space_to_depth_stem(res: int = 224) -> _Net:
    """Space-to-depth (pixel unshuffle) stem: 3 -> 12 channels at half resolution, then convs."""
    body, c = _body(32, (48, 96, 192))
    return _Net(nn.Sequential(_SpaceToDepth(), _cbr(12, 32, 3), *body), c, res)


def deep_stem(res: int = 192) -> _Net:
    """Three stacked 3×3 convs as the stem (ResNet-C / Inception-v3)."""
    body, c = _body(64, (96, 192, 320))
    stem = [_cbr(3, 32, 3, 2), _cbr(32, 32, 3), _cbr(32, 64, 3), nn.MaxPool2d(3, 2, 1)]
    return _Net(nn.Sequential(*stem, *body), c, res)


def alexnet_like(res: int = 224) -> _Net:
    """AlexNet's 11×11 stride-4 stem, 5×5, three 3×3 convs, max-pools (narrowed), no BatchNorm."""
    f = nn.Sequential(
        nn.Conv2d(3, 48, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(48, 128, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(128, 192, 3, padding=1), nn.ReLU(), nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(),
        nn.Conv2d(192, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    return _Net(f, 128, res)


# -- classic small nets -------------------------------------------------------------------------------------------


class _Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.s = _cbr(cin, squeeze, 1, bn=False)
        self.e1, self.e3 = _cbr(squeeze, expand, 1, bn=False), _cbr(squeeze, expand, 3, bn=False)

    def forward(self, x):
        x = self.s(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


def squeezenet_like(res: int = 224) -> _Net:
    """SqueezeNet 1.1: fire modules (1×1 squeeze, 1×1 and 3×3 expand, concat), no BatchNorm."""
    f = nn.Sequential(
        _cbr(3, 64, 3, 2, bn=False), nn.MaxPool2d(3, 2, ceil_mode=True),
        _Fire(64, 16, 64), _Fire(128, 16, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
        _Fire(128, 32, 128), _Fire(256, 32, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
        _Fire(256, 48, 192), _Fire(384, 48, 192), _Fire(384, 64, 256), _Fire(512, 64, 256))
    head = nn.Sequential(nn.Conv2d(512, 1000, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return _Net(f, 512, res, head=head)


class _Shuffle(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 2:
            self.left = nn.Sequential(_cbr(cin, cin, 3, 2, groups=cin, act=None), _cbr(cin, half, 1))
            src = cin
        else:
            self.left, src = None, half
        self.right = nn.Sequential(_cbr(src, half, 1), _cbr(half, half, 3, stride, groups=half, act=None),
                                   _cbr(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, 1)
            out = torch.cat([a, self.right(b)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


def shufflenet_like(res: int = 224) -> _Net:
    """ShuffleNetV2 1.0×: channel split, depthwise 3×3, channel shuffle (reshape/transpose)."""
    layers: list[nn.Module] = [_cbr(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 24
    for cout, n in ((116, 4), (232, 8), (464, 4)):
        for i in range(n):
            layers.append(_Shuffle(cin, cout, 2 if i == 0 else 1))
            cin = cout
    layers.append(_cbr(cin, 1024, 1))
    return _Net(nn.Sequential(*layers), 1024, res)


class _Dense(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                               nn.BatchNorm2d(4 * growth), nn.ReLU(),
                               nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.f(x)], 1)


def densenet_like(growth: int = 16, blocks=(4, 8, 8), res: int = 160) -> _Net:
    """DenseNet: pre-activation BN-ReLU-conv, concatenation growth, transition 1×1 + average pool."""
    layers: list[nn.Module] = [_cbr(3, 2 * growth, 7, 2), nn.MaxPool2d(3, 2, 1)]
    c = 2 * growth
    for b, n in enumerate(blocks):
        for _ in range(n):
            layers.append(_Dense(c, growth))
            c += growth
        if b < len(blocks) - 1:
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU()]
    return _Net(nn.Sequential(*layers), c, res)


class _Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3: tuple[int, int], c5: tuple[int, int], cp: int):
        super().__init__()
        self.b1 = _cbr(cin, c1, 1)
        self.b3 = nn.Sequential(_cbr(cin, c3[0], 1), _cbr(c3[0], c3[1], 3))
        self.b5 = nn.Sequential(_cbr(cin, c5[0], 1), _cbr(c5[0], c5[1], 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), _cbr(cin, cp, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


def inception_like(res: int = 160) -> _Net:
    """GoogLeNet-style: four branches (1×1, 3×3, 5×5, pool) concatenated (narrowed)."""
    f = nn.Sequential(
        _cbr(3, 32, 7, 2), nn.MaxPool2d(3, 2, 1), _cbr(32, 96, 3), nn.MaxPool2d(3, 2, 1),
        _Inception(96, 32, (48, 64), (8, 16), 16), _Inception(128, 64, (64, 96), (16, 48), 32), nn.MaxPool2d(3, 2, 1),
        _Inception(240, 96, (48, 104), (8, 24), 32), _Inception(256, 80, (56, 112), (12, 32), 32),
        nn.MaxPool2d(3, 2, 1), _Inception(256, 128, (80, 160), (16, 64), 64))
    return _Net(f, 416, res)


class _SE(nn.Module):
    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.f = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // r, 1), nn.ReLU(), nn.Conv2d(c // r, c, 1),
                               nn.Hardsigmoid())

    def forward(self, x):
        return x * self.f(x)


class _MBv3(nn.Module):
    def __init__(self, cin: int, exp: int, cout: int, k: int, s: int, se: bool, act):
        super().__init__()
        self.res = s == 1 and cin == cout
        layers = [_cbr(cin, exp, 1, act=act)] if exp != cin else []
        layers += [_cbr(exp, exp, k, s, groups=exp, act=act)]
        if se:
            layers.append(_SE(exp))
        layers.append(_cbr(exp, cout, 1, act=None))
        self.f = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.f(x) if self.res else self.f(x)


def mobilenetv3_like(res: int = 224) -> _Net:
    """MobileNetV3-Large's layout: hard-swish, squeeze-excite with hard-sigmoid, 5×5 depthwise."""
    hs, re = nn.Hardswish, nn.ReLU
    cfg = [(16, 16, 3, 1, False, re), (64, 24, 3, 2, False, re), (72, 24, 3, 1, False, re), (72, 40, 5, 2, True, re),
           (120, 40, 5, 1, True, re), (240, 80, 3, 2, False, hs), (200, 80, 3, 1, False, hs),
           (480, 112, 3, 1, True, hs),
           (672, 160, 5, 2, True, hs), (960, 160, 5, 1, True, hs)]
    layers: list[nn.Module] = [_cbr(3, 16, 3, 2, act=hs)]
    cin = 16
    for exp, cout, k, s, se, act in cfg:
        layers.append(_MBv3(cin, exp, cout, k, s, se, act))
        cin = cout
    layers.append(_cbr(cin, 960, 1, act=hs))
    return _Net(nn.Sequential(*layers), 960, res)


class _ConvNeXtBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, 1, 3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(nn.functional.gelu(self.pw1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


def convnext_like(res: int = 160, widths=(32, 64, 128, 256), depths=(1, 1, 3, 1)) -> _Net:
    """ConvNeXt's block: 7×7 depthwise, LayerNorm, MLP with GELU as Linear layers on channels-last tensors."""
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, 4)]
    cin = widths[0]
    for i, (w, d) in enumerate(zip(widths, depths)):
        if i:
            layers.append(nn.Conv2d(cin, w, 2, 2))
        layers += [_ConvNeXtBlock(w) for _ in range(d)]
        cin = w
    return _Net(nn.Sequential(*layers), cin, res)


def dilated_net(res: int = 160) -> _Net:
    """Dilated 3×3 convolutions (DeepLab-style context module) after a strided stem."""
    f = nn.Sequential(_cbr(3, 32, 3, 2), _cbr(32, 64, 3, 2), _cbr(64, 96, 3, 2), _cbr(96, 96, 3, dilation=2),
                      _cbr(96, 96, 3, dilation=4), _cbr(96, 128, 3, dilation=8), _cbr(128, 128, 3, 2))
    return _Net(f, 128, res)


# -- beyond classifiers: a segmentation decoder and a vision transformer ---------------------------------------


class _UNet(nn.Module):
    """A U-Net: three levels down (max pool), transposed convolutions up, concatenated skips, per-pixel classes."""

    def __init__(self, widths=(32, 64, 128), classes: int = 8, res: int = 128):
        super().__init__()
        self.resolution = res
        a, b, c = widths
        self.e1, self.e2, self.e3 = _cbr(3, a), _cbr(a, b), _cbr(b, c)
        self.u2, self.d2 = nn.ConvTranspose2d(c, b, 2, 2), _cbr(2 * b, b)
        self.u1, self.d1 = nn.ConvTranspose2d(b, a, 2, 2), _cbr(2 * a, a)
        self.out = nn.Conv2d(a, classes, 1)

    def forward(self, x):
        s1 = self.e1(x)
        s2 = self.e2(nn.functional.max_pool2d(s1, 2))
        y = self.e3(nn.functional.max_pool2d(s2, 2))
        y = self.d2(torch.cat([s2, self.u2(y)], 1))
        return self.out(self.d1(torch.cat([s1, self.u1(y)], 1)))


class _ViT(nn.Module):
    """ViT-Tiny's shape, shallower: 16×16 patches, PyTorch's own post-norm encoder layers, mean-pooled tokens."""

    def __init__(self, dim: int = 192, heads: int = 3, layers: int = 4, res: int = 224):
        super().__init__()
        self.resolution = res
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(dim, heads, 4 * dim, batch_first=True), layers,
                                         enable_nested_tensor=False)
        self.head = nn.Linear(dim, 1000)

    def forward(self, x):
        return self.head(self.enc(self.patch(x).flatten(2).transpose(1, 2)).mean(1))


# Reported in their own section: the ±10% target is for image classifiers (the list).
BEYOND: dict[str, Callable[[], nn.Module]] = {
    "unet-like-128": _UNet,
    "unet-like-wide-96": lambda: _UNet((48, 96, 192), 8, 96),
    "vit-like-224": _ViT,
    "vit-like-narrow-160": lambda: _ViT(128, 2, 4, 160),
}


FOREIGN: dict[str, Callable[[], nn.Module]] = {
    "vgg-plain-160": vgg_plain,
    "vgg-plain-fc-192": lambda: vgg_plain((16, 32, 64, 128, 128), (1, 1, 2, 2, 2), 192, fc=512),
    "vgg-plain-narrow-224": lambda: vgg_plain((16, 32, 64, 96, 96), (2, 2, 3, 3, 3), 224),
    "kernel5-stack-160": lambda: kernel_stack(5),
    "kernel7-stack-128": lambda: kernel_stack(7, (16, 32, 64, 128), 128),
    "kernel5-nobn-192": lambda: kernel_stack(5, (16, 32, 48, 96), 192, bn=False),
    "wide-shallow-112": wide_shallow,
    "wide-shallow-64": lambda: wide_shallow(64),
    "narrow-deep-192": narrow_deep,
    "narrow-deep-w16-224": lambda: narrow_deep(48, 16, 224),
    "resnext-g8-160": resnext_like,
    "resnext-g32-128": lambda: resnext_like(32, 128, 128),
    "grouped-plain-g4-192": grouped_plain,
    "grouped-plain-g2-160": lambda: grouped_plain(2, (48, 96, 192, 384), 160),
    "regnet-gw8-192": regnet_like,
    "regnet-gw16-160": lambda: regnet_like(16, 160),
    "patchify-stem-224": patchify_stem,
    "space-to-depth-stem-224": space_to_depth_stem,
    "deep-stem-192": deep_stem,
    "alexnet-like-224": alexnet_like,
    "squeezenet-like-224": squeezenet_like,
    "shufflenet-like-224": shufflenet_like,
    "densenet-like-160": densenet_like,
    "inception-like-160": inception_like,
    "mobilenetv3-like-224": mobilenetv3_like,
    "convnext-like-160": convnext_like,
    "dilated-160": dilated_net,
}


def build_foreign(name: str, seed: int = 0) -> nn.Module:
    """One model of the set, in eval mode, with seeded weights (BatchNorm statistics randomised a little)."""
    torch.manual_seed(seed)
    model = {**FOREIGN, **BEYOND}[name]().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.9, 1.1)
    return model
