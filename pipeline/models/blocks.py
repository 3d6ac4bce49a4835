"""Building blocks shared by the model families.

Everything here is plain ``nn.Module`` composition with symmetric PyTorch padding
(``(k - 1) // 2``, never TF "same"), and no custom autograd functions, so every
family exports to ONNX with standard operators only.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_act(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                act: type[nn.Module] | None = nn.SiLU) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ activation): the unit ONNX Runtime fuses into one Conv."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.SiLU) else act())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """SE block as in EfficientNet: global pool -> 1x1 conv -> SiLU -> 1x1 conv -> sigmoid -> scale."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.SiLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class StochasticDepth(nn.Module):
    """Drop a residual branch per sample while training ("row" mode); identity in eval.

    Written with plain tensor ops so export (always in eval mode) sees nothing.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MBConv(nn.Module):
    """EfficientNet inverted bottleneck: expand 1x1, depthwise kxk, SE, project 1x1.

    ``act`` and ``se`` exist for EfficientNet-Lite, which uses ReLU6 and no SE (both
    quantize badly); the defaults are EfficientNet's SiLU with SE.
    """

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, drop: float,
                 act: type[nn.Module] = nn.SiLU, se: bool = True):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1, act=act))
        layers.append(conv_bn_act(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcitation(hidden, max(1, cin // 4)))
        layers.append(conv_bn_act(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.drop = StochasticDepth(drop) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + self.drop(out) if self.residual else out


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1 + ReLU6, depthwise 3x3 + ReLU6, linear project."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = int(round(cin * expand))
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1, act=nn.ReLU6))
        layers.append(conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6))
        layers.append(conv_bn_act(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class _ResBlock(nn.Module):
    """Residual add + ReLU around ``body``, with a 1x1 projection when shapes change."""

    def __init__(self, body: nn.Module, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = body
        self.downsample = conv_bn_act(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.body(x) + identity)


class BasicBlock(_ResBlock):
    """ResNet-18/34 block: two 3x3 convs."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        body = nn.Sequential(conv_bn_act(cin, planes, 3, stride, act=nn.ReLU), conv_bn_act(planes, planes, 3, act=None))
        super().__init__(body, cin, planes, stride)
        self.out_channels = planes


class Bottleneck(_ResBlock):
    """ResNet-50 block: 1x1 reduce, 3x3 (stride here, as torchvision's v1.5), 1x1 expand ×4."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        out = planes * self.expansion
        body = nn.Sequential(
            conv_bn_act(cin, planes, 1, act=nn.ReLU),
            conv_bn_act(planes, planes, 3, stride, act=nn.ReLU),
            conv_bn_act(planes, out, 1, act=None),
        )
        super().__init__(body, cin, out, stride)
        self.out_channels = out
