"""The names a user may type for a model family or a precision, as plain constants.

``pipeline.models.FAMILIES`` maps these names to torch classes, so reading it imports torch;
the CLI needs only the names (for ``click.Choice``) and must start fast, so they live here too.
A test keeps ``FAMILY_NAMES`` equal to ``tuple(pipeline.models.FAMILIES)``.
"""

from __future__ import annotations

FAMILY_NAMES: tuple[str, ...] = ("efficientnet", "mobilenetv2", "resnet18", "resnet34", "resnet50")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

__all__ = ["FAMILY_NAMES", "PRECISIONS"]
