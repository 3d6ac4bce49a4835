"""EfficientNet (Tan & Le, 2019), layer for layer as the reference implementation.

Base configuration is B0; width and depth come from the :class:`Scale`. The rounding
is the reference one, which is why presets reproduce torchvision's parameter counts.
"""

from __future__ import annotations

from torch import nn

from pipeline.core.scaling import Scale, make_divisible, round_repeats
from pipeline.models.base import ScalableNet, StageSpec
from pipeline.models.blocks import MBConv, conv_bn_act

# expand, kernel, stride, in channels, out channels, repeats (B0)
BASE_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]
STOCHASTIC_DEPTH = 0.2
HEAD_EXPANSION = 4  # head channels = 4 x last stage channels (1280 for B0)


class EfficientNet(ScalableNet):
    family = "efficientnet"

    @staticmethod
    def plan(scale: Scale) -> tuple[int, tuple[tuple[int, int], ...], int]:
        """(stem channels, ((channels, blocks) per stage), head channels): the architecture, unbuilt."""
        stages = tuple((make_divisible(c * scale.width), round_repeats(n, scale.depth)) for *_, c, n in BASE_STAGES)
        return make_divisible(BASE_STAGES[0][3] * scale.width), stages, HEAD_EXPANSION * stages[-1][0]

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
