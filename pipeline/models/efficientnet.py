"""EfficientNet (Tan & Le, 2019), layer for layer as the reference implementation.

Base configuration is B0; width and depth come from the :class:`Scale`. The rounding
is the reference one, which is why presets reproduce torchvision's parameter counts.
"""

from __future__ import annotations

from torch import nn

from pipeline.core.scaling import Scale
from pipeline.models.base import ScalableNet, StageSpec
from pipeline.models.blocks import MBConv, conv_bn_act
from pipeline.models.plans import EFFICIENTNET_STAGES as BASE_STAGES
from pipeline.models.plans import STOCHASTIC_DEPTH, efficientnet_plan


class EfficientNet(ScalableNet):
    family = "efficientnet"

    @staticmethod
    def plan(scale: Scale) -> tuple[int, tuple[tuple[int, int], ...], int]:
        """(stem channels, ((channels, blocks) per stage), head channels): the architecture, unbuilt."""
        return efficientnet_plan(scale)

    def __init__(self, scale: Scale, num_classes: int = 1000):
        stem_ch, plan, head_ch = self.plan(scale)
        total = sum(n for _, n in plan)
        specs = [StageSpec("stem", 1, stem_ch, 2)]
        stages, done, cin = [], 0, stem_ch
        for i, ((expand, kernel, stride, *_), (cout, n)) in enumerate(zip(BASE_STAGES, plan)):
            blocks = []
            for j in range(n):
                drop = STOCHASTIC_DEPTH * done / total
                blocks.append(MBConv(cin, cout, expand, kernel, stride if j == 0 else 1, drop))
                cin, done = cout, done + 1
            stages.append(nn.Sequential(*blocks))
            specs.append(StageSpec(f"stage{i + 1}", n, cout, stride))
        specs.append(StageSpec("head", 1, head_ch, 1))
        super().__init__(scale, num_classes, conv_bn_act(3, stem_ch, 3, 2), stages,
                         conv_bn_act(cin, head_ch, 1), head_ch, scale.dropout, specs)
