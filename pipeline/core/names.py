"""The names a user may type for a model family or a precision, as plain constants.

``pipeline.models.FAMILIES`` maps these names to torch classes, so reading it imports torch;
the CLI needs only the names (for ``click.Choice``) and must start fast, so they live here too.
A test keeps ``FAMILY_NAMES`` equal to ``tuple(pipeline.models.FAMILIES)``.
"""

from __future__ import annotations

FAMILY_NAMES: tuple[str, ...] = ("efficientnet", "efficientnet-lite", "mobilenetv2", "resnet18", "resnet34", "resnet50")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

# Families that share their building blocks. A profile's held-out error for one family says
# something about another family only across groups: ResNet-18 predicting ResNet-50 is no
# evidence about a depthwise network (pipeline.predict.heldout).
FAMILY_GROUPS: dict[str, str] = {
    # EfficientNet-Lite shares EfficientNet's stage plan but none of the ops that make EfficientNet
    # costly on a device (swish, squeeze-and-excitation): one timing says little about the other.
    "efficientnet": "efficientnet", "efficientnet-lite": "efficientnet-lite", "mobilenetv2": "mobilenetv2",
    "resnet18": "resnet", "resnet34": "resnet", "resnet50": "resnet",
}


def family_group(family: str) -> str:
    """The group of ``family`` (its own name when it has none)."""
    return FAMILY_GROUPS.get(family, family)

__all__ = ["FAMILY_GROUPS", "FAMILY_NAMES", "PRECISIONS", "family_group"]
