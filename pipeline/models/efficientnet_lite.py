"""EfficientNet-Lite (Google, 2020): EfficientNet made for INT8 edge devices.

Reference: tensorflow/tpu ``models/official/efficientnet/lite/efficientnet_lite_builder.py``
(``efficientnet_lite``: ``relu_fn=tf.nn.relu6``, ``use_se=False``, ``fix_head_stem=True``) and
``efficientnet_model.py`` (``Model._build``). Against EfficientNet-B0 it differs in three ways:

* every activation is ReLU6 instead of swish ("for easier post-quantization");
* no squeeze-and-excitation ("not well supported for some mobile accelerators");
* the stem (32 channels) and head (1280 channels) are not width-scaled, and the first and
  last stages keep their single block at every depth multiplier ("fix_head_stem").

All other stages scale exactly as EfficientNet's (the reference ``round_filters`` and
``round_repeats``), so the published lite0–lite4 presets (``pipeline.core.scaling.PRESETS``)
reproduce the reference parameter counts: lite0 4,652,008 (4.65 M).
"""

from __future__ import annotations

from torch import nn

from pipeline.core.scaling import Scale
from pipeline.models.base import ScalableNet, StageSpec
from pipeline.models.blocks import MBConv, conv_bn_act
from pipeline.models.plans import EFFICIENTNET_STAGES as BASE_STAGES
from pipeline.models.plans import STOCHASTIC_DEPTH, efficientnet_lite_plan


class EfficientNetLite(ScalableNet):
    family = "efficientnet-lite"

    @staticmethod
    def plan(scale: Scale) -> tuple[int, tuple[tuple[int, int], ...], int]:
        """(stem channels, ((channels, blocks) per stage), head channels): the architecture, unbuilt."""
        return efficientnet_lite_plan(scale)

    def __init__(self, scale: Scale, num_classes: int = 1000):
        stem_ch, plan, head_ch = self.plan(scale)
        total = sum(n for _, n in plan)
        specs = [StageSpec("stem", 1, stem_ch, 2)]
        stages, done, cin = [], 0, stem_ch
        for i, ((expand, kernel, stride, *_), (cout, n)) in enumerate(zip(BASE_STAGES, plan)):
            blocks = []
            for j in range(n):
                drop = STOCHASTIC_DEPTH * done / total
                blocks.append(MBConv(cin, cout, expand, kernel, stride if j == 0 else 1, drop, act=nn.ReLU6, se=False))
                cin, done = cout, done + 1
            stages.append(nn.Sequential(*blocks))
            specs.append(StageSpec(f"stage{i + 1}", n, cout, stride))
        specs.append(StageSpec("head", 1, head_ch, 1))
        super().__init__(scale, num_classes, conv_bn_act(3, stem_ch, 3, 2, act=nn.ReLU6), stages,
                         conv_bn_act(cin, head_ch, 1, act=nn.ReLU6), head_ch, scale.dropout, specs)
