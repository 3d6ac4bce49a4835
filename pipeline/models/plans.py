"""Every family's architecture as data: stage tables and ``plan(family, scale)``, without torch.

A plan is (stem channels, ((channels, blocks) per stage), head channels); with the stage tables
below (kernel, stride, expansion, block type) and the input resolution it fixes every layer. The
torch modules (``pipeline.models.efficientnet`` …) are built from these tables, and the static cost
(``pipeline.cost.plan``) is computed from them directly, so searching, costing and predicting never
need to import torch. A test keeps the two in step (tests/test_cost_plan.py).
"""

from __future__ import annotations

from pipeline.core.errors import FamilyNotFound
from pipeline.core.names import FAMILY_NAMES
from pipeline.core.scaling import Scale, make_divisible, round_repeats

# EfficientNet-B0 (Tan & Le 2019, Table 1): expand, kernel, stride, in channels, out channels, repeats
EFFICIENTNET_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
EFFICIENTNET_HEAD_EXPANSION = 4  # head channels = 4 x last stage channels (1280 for B0)
STOCHASTIC_DEPTH = 0.2
# EfficientNet-Lite (tensorflow/tpu efficientnet_lite_builder.py: fix_head_stem=True): stem and head not scaled
LITE_STEM, LITE_HEAD = 32, 1280
# MobileNetV2 (Sandler et al. 2018, Table 2): expand t, channels c, repeats n, stride s
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))
MOBILENETV2_STEM, MOBILENETV2_LAST = 32, 1280
# ResNet (torchvision layout): planes per stage, stem channels, repeats and block expansion per family
RESNET_PLANES, RESNET_STEM = (64, 128, 256, 512), 64
RESNET_REPEATS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}
RESNET_EXPANSION = {"resnet18": 1, "resnet34": 1, "resnet50": 4}

Plan = tuple[int, tuple[tuple[int, int], ...], int]


def efficientnet_plan(scale: Scale) -> Plan:
    stages = tuple((make_divisible(c * scale.width), round_repeats(n, scale.depth))
                   for *_, c, n in EFFICIENTNET_STAGES)
    return (make_divisible(EFFICIENTNET_STAGES[0][3] * scale.width), stages,
            EFFICIENTNET_HEAD_EXPANSION * stages[-1][0])


def efficientnet_lite_plan(scale: Scale) -> Plan:
    """Stem, head and the first and last stages' repeats fixed; the rest as EfficientNet."""
    last = len(EFFICIENTNET_STAGES) - 1
    stages = tuple((make_divisible(c * scale.width), n if i in (0, last) else round_repeats(n, scale.depth))
                   for i, (*_, c, n) in enumerate(EFFICIENTNET_STAGES))
    return LITE_STEM, stages, LITE_HEAD


def mobilenetv2_plan(scale: Scale) -> Plan:
    stages = tuple((make_divisible(c * scale.width), round_repeats(n, scale.depth))
                   for _, c, n, _ in MOBILENETV2_STAGES)
    # the reference never shrinks the head below 1280
    return (make_divisible(MOBILENETV2_STEM * scale.width), stages,
            make_divisible(MOBILENETV2_LAST * max(1.0, scale.width)))


def resnet_plan(family: str, scale: Scale) -> Plan:
    stages = tuple((make_divisible(p * scale.width), round_repeats(n, scale.depth))
                   for p, n in zip(RESNET_PLANES, RESNET_REPEATS[family]))
    return make_divisible(RESNET_STEM * scale.width), stages, stages[-1][0] * RESNET_EXPANSION[family]


def check_family(family: str) -> str:
    if family not in FAMILY_NAMES:
        raise FamilyNotFound("family", family, list(FAMILY_NAMES))
    return family


def plan(family: str, scale: Scale) -> Plan:
    """(stem channels, ((channels, blocks) per stage), head channels) of ``family`` at ``scale``, unbuilt."""
    check_family(family)
    if family == "efficientnet":
        return efficientnet_plan(scale)
    if family == "efficientnet-lite":
        return efficientnet_lite_plan(scale)
    if family == "mobilenetv2":
        return mobilenetv2_plan(scale)
    return resnet_plan(family, scale)


def signature(family: str, scale: Scale) -> tuple:
    """What makes two scales the same network: the channel/block plan and the resolution.

    Distinct φ values often round to the same architecture; the search works on these keys.
    """
    return plan(family, scale), scale.resolution


__all__ = ["EFFICIENTNET_STAGES", "MOBILENETV2_STAGES", "RESNET_PLANES", "RESNET_REPEATS", "check_family", "plan",
           "signature"]
