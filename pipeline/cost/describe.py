"""``deploy describe``: what a scaled model looks like and what it costs, statically."""

from __future__ import annotations

from pipeline.core.scaling import CompoundScaling, Scale, family_for, resolve_scale
from pipeline.cost.plan import scale_cost
from pipeline.models import build, check_family


def describe_scale(family: str, scale: Scale, num_classes: int = 1000) -> dict:
    """The describe record (DESIGN keys) for ``family`` at ``scale``."""
    model = build(check_family(family), scale, num_classes, device="meta")  # for its stage table; nothing runs
    cost = scale_cost(family, scale, num_classes)
    by_stage = {row["stage"]: row for row in cost.stage_table()}
    stages = [
        {"stage": s.name, "blocks": s.blocks, "channels": s.channels,
         "resolution": by_stage.get(s.name, {}).get("resolution"), "macs": by_stage.get(s.name, {}).get("macs", 0)}
        for s in model.stage_specs
    ]
    return {
        "family": family,
        "preset": scale.preset,
        "phi": scale.phi,
        "phi_depth": scale.phi_depth,
        "phi_width": scale.phi_width,
        "phi_resolution": scale.phi_resolution,
        "depth_multiplier": scale.depth,
        "width_multiplier": scale.width,
        "resolution": scale.resolution,
        "num_classes": num_classes,
        "params": cost.params,
        "macs": cost.macs,
        "weight_bytes": cost.weight_bytes,
        "activation_bytes": cost.activation_bytes,
        "stages": stages,
    }


def describe(family: str | None = None, phi: float | None = None, phi_depth: float | None = None,
             phi_width: float | None = None, phi_resolution: float | None = None, preset: str | None = None,
             num_classes: int = 1000, scaling: CompoundScaling | None = None) -> dict:
    """Describe a model named by φ, per-dimension φ, or a preset; ``family`` defaults to the preset's own."""
    family = check_family(family_for(family, preset))
    scale = resolve_scale(phi, phi_depth, phi_width, phi_resolution, preset, scaling)
    return describe_scale(family, scale, num_classes)


__all__ = ["describe", "describe_scale"]
