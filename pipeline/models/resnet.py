"""ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks), torchvision layout, scalable.

ResNet-34 is its own family, not a depth-scaled ResNet-18: its stages repeat (3, 4, 6, 3) where
ResNet-18 repeats (2, 2, 2, 2), and no single depth multiplier maps one onto the other. It is here
because published device latencies exist for it, so a profile can learn from it.
"""

from __future__ import annotations

from torch import nn

from pipeline.core.scaling import Scale
from pipeline.models.base import ScalableNet, StageSpec
from pipeline.models.blocks import BasicBlock, Bottleneck, conv_bn_act
from pipeline.models.plans import RESNET_REPEATS, resnet_plan


class _ResNet(ScalableNet):
    block: type[BasicBlock] | type[Bottleneck]
    repeats: tuple[int, ...]

    @classmethod
    def plan(cls, scale: Scale) -> tuple[int, tuple[tuple[int, int], ...], int]:
        """(stem channels, ((planes, blocks) per stage), head channels): the architecture, unbuilt."""
        return resnet_plan(cls.family, scale)

    def __init__(self, scale: Scale, num_classes: int = 1000):
        stem_ch, plan, _ = self.plan(scale)
        stem = nn.Sequential(conv_bn_act(3, stem_ch, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1))
        specs = [StageSpec("stem", 1, stem_ch, 4)]
        stages, cin = [], stem_ch
        for i, (planes, n) in enumerate(plan):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(self.block(cin, planes, stride if j == 0 else 1))
                cin = blocks[-1].out_channels
            stages.append(nn.Sequential(*blocks))
            specs.append(StageSpec(f"stage{i + 1}", n, cin, stride))
        specs.append(StageSpec("head", 1, cin, 1))
        super().__init__(scale, num_classes, stem, stages, nn.Identity(), cin, 0.0, specs)


class ResNet18(_ResNet):
    family = "resnet18"
    block = BasicBlock
    repeats = RESNET_REPEATS["resnet18"]


class ResNet34(_ResNet):
    family = "resnet34"
    block = BasicBlock
    repeats = RESNET_REPEATS["resnet34"]


class ResNet50(_ResNet):
    family = "resnet50"
    block = Bottleneck
    repeats = RESNET_REPEATS["resnet50"]
