"""MobileNetV2 (Sandler et al., 2018) with compound width/depth scaling."""

from __future__ import annotations

from torch import nn

from pipeline.core.scaling import Scale, make_divisible, round_repeats
from pipeline.models.base import ScalableNet, StageSpec
from pipeline.models.blocks import InvertedResidual, conv_bn_act

# expand t, channels c, repeats n, stride s (the paper's Table 2)
BASE_STAGES = [
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]
STEM, LAST = 32, 1280
DROPOUT = 0.2


class MobileNetV2(ScalableNet):
    family = "mobilenetv2"

    @staticmethod
    def plan(scale: Scale) -> tuple[int, tuple[tuple[int, int], ...], int]:
        """(stem channels, ((channels, blocks) per stage), head channels): the architecture, unbuilt."""
        stages = tuple((make_divisible(c * scale.width), round_repeats(n, scale.depth)) for _, c, n, _ in BASE_STAGES)
        # the reference never shrinks the head below 1280
        return make_divisible(STEM * scale.width), stages, make_divisible(LAST * max(1.0, scale.width))

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
