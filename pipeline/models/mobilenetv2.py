"""MobileNetV2 (Sandler et al., 2018) with compound width/depth scaling."""

from __future__ import annotations

from torch import nn

from pipeline.core.scaling import Scale
from pipeline.models.base import ScalableNet, StageSpec
from pipeline.models.blocks import InvertedResidual, conv_bn_act
from pipeline.models.plans import MOBILENETV2_STAGES as BASE_STAGES
from pipeline.models.plans import mobilenetv2_plan

DROPOUT = 0.2


class MobileNetV2(ScalableNet):
    family = "mobilenetv2"

    @staticmethod
    def plan(scale: Scale) -> tuple[int, tuple[tuple[int, int], ...], int]:
        """(stem channels, ((channels, blocks) per stage), head channels): the architecture, unbuilt."""
        return mobilenetv2_plan(scale)

    def __init__(self, scale: Scale, num_classes: int = 1000):
        stem_ch, plan, last_ch = self.plan(scale)
        specs = [StageSpec("stem", 1, stem_ch, 2)]
        stages, cin = [], stem_ch
        for i, ((t, _, _, s), (cout, n)) in enumerate(zip(BASE_STAGES, plan)):
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(cin, cout, s if j == 0 else 1, t))
                cin = cout
            stages.append(nn.Sequential(*blocks))
            specs.append(StageSpec(f"stage{i + 1}", n, cout, s))
        specs.append(StageSpec("head", 1, last_ch, 1))
        super().__init__(scale, num_classes, conv_bn_act(3, stem_ch, 3, 2, act=nn.ReLU6), stages,
                         conv_bn_act(cin, last_ch, 1, act=nn.ReLU6), last_ch, DROPOUT, specs)
