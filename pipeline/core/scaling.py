"""Compound scaling (Tan & Le, 2019) and the reference rounding rules.

A :class:`Scale` is the single description of "how big" a model is: every model
family is built from one, the cost model and the search key on it, and it
round-trips through JSON. All constants (α, β, γ, rounding divisors, the B0–B7
and lite0–lite4 tables) live in the tables at the top of this module so they are changed in one
place.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from pipeline.core.errors import InvalidScale, PresetNotFound

# --- the one table of scaling constants -------------------------------------------------
DEFAULTS = {
    "alpha": 1.2,  # depth base
    "beta": 1.1,  # width base
    "gamma": 1.15,  # resolution base
    "base_resolution": 224,
    "channel_divisor": 8,  # make_divisible(c * w, 8)
    "resolution_divisor": 8,
    "min_resolution": 32,
    "max_abs_phi": 12.0,  # beyond this a model is absurd (B7 is φ≈6)
    "dropout": 0.2,
}

# Reference (α, β, γ) that every grid search includes and that `--scaling NAME` knows without a user config.
# "efficientnet": Tan & Le 2019, Sec. 3.3, found by a small grid search at φ=1 on ImageNet (α·β²·γ² ≈ 2).
# "dollar-fast": Dollár, Singh & Girshick 2021 ("Fast and Accurate Model Scaling"), fast compound scaling
#   d = s^0.1, w = s^0.4, r = s^0.05 for a FLOPs factor s; activations grow about O(√s) where uniform
#   scaling grows them O(s). As constants per unit of φ: α = R^0.1, β = R^0.4, γ = R^0.05 with R the FLOPs
#   ratio per unit of φ (2, as EfficientNet's; a grid with --flops-ratio R uses its R).
EFFICIENTNET_CONSTANTS = (DEFAULTS["alpha"], DEFAULTS["beta"], DEFAULTS["gamma"])
DOLLAR_FAST_EXPONENTS = (0.1, 0.4, 0.05)
REFERENCE_SCALINGS = {
    "efficientnet": "Tan & Le 2019 (EfficientNet), grid search at φ=1 on ImageNet: α=1.2, β=1.1, γ=1.15",
    "dollar-fast": "Dollár et al. 2021 (Fast and Accurate Model Scaling): d=s^0.1, w=s^0.4, r=s^0.05",
}
DEFAULT_FLOPS_RATIO = 2.0

# Published EfficientNet table: (width, depth, resolution, dropout). Tan & Le 2019, Table/Code;
# the parameter counts these reproduce are torchvision's weight metadata.
PRESETS: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
    # EfficientNet-Lite (family "efficientnet-lite"), the reference builder's table: tensorflow/tpu
    # models/official/efficientnet/lite/efficientnet_lite_builder.py, efficientnet_lite_params().
    # Its README (same folder) gives 4.7 M / 5.4 M / 6.1 M / 8.2 M / 13.0 M parameters; the model
    # here reproduces 4,652,008 / 5,416,680 / 6,092,072 / 8,197,096 / 13,006,568 (tests/test_models.py).
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}
# The family each preset was published for: what `--preset` builds when no --family is given.
# A preset applied to another family is just its multipliers (e.g. ResNet-18 at B3's).
PRESET_FAMILIES: dict[str, str] = {
    **{f"b{i}": "efficientnet" for i in range(8)},
    **{f"lite{i}": "efficientnet-lite" for i in range(5)},
}
DEFAULT_FAMILY = "efficientnet"


def make_divisible(value: float, divisor: int = DEFAULTS["channel_divisor"], min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90% of it.

    This is the reference rule (TF EfficientNet / torchvision ``_make_divisible``);
    keeping it identical is what makes the presets reproduce published parameter counts.
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks in a stage: ``ceil(n * d)``, at least one."""
    return max(1, int(math.ceil(repeats * depth - 1e-9)))


def round_resolution(
    resolution: float,
    divisor: int = DEFAULTS["resolution_divisor"],
    minimum: int = DEFAULTS["min_resolution"],
) -> int:
    """Input side length: nearest multiple of ``divisor`` (ties up), at least ``minimum``."""
    return max(minimum, int(math.floor(resolution / divisor + 0.5)) * divisor)


@dataclass(frozen=True)
class Scale:
    """Multipliers of one scaled model, plus the φ values that produced them.

    ``phi`` is set in compound mode and ``None`` in per-dimension mode; ``preset`` is
    set when the multipliers come from the published table rather than the formula.
    """

    depth: float
    width: float
    resolution: int
    dropout: float = DEFAULTS["dropout"]
    phi: float | None = None
    phi_depth: float | None = None
    phi_width: float | None = None
    phi_resolution: float | None = None
    preset: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scale:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def with_resolution(self, resolution: int) -> Scale:
        return replace(self, resolution=resolution)


def reference_constants(name: str, flops_ratio: float = DEFAULT_FLOPS_RATIO) -> tuple[float, float, float]:
    """(α, β, γ) of a reference scaling (:data:`REFERENCE_SCALINGS`); Dollár's depends on the FLOPs ratio per φ."""
    if name == "efficientnet":
        return EFFICIENTNET_CONSTANTS
    if name == "dollar-fast":
        if not (math.isfinite(flops_ratio) and flops_ratio > 1):
            raise InvalidScale(f"the FLOPs ratio per unit of φ must be above 1, got {flops_ratio}.")
        return tuple(round(flops_ratio**e, 6) for e in DOLLAR_FAST_EXPONENTS)
    raise PresetNotFound("reference scaling", name, list(REFERENCE_SCALINGS))


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """α·β²·γ²: how much one unit of compound φ multiplies FLOPs (depth linear, width and resolution squared)."""
    return alpha * beta**2 * gamma**2


def _check_phi(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidScale(f"{name} must be a number, got {value!r}.") from None
    if math.isnan(value) or math.isinf(value):
        raise InvalidScale(f"{name} must be a finite number, got {value}.")
    limit = DEFAULTS["max_abs_phi"]
    if abs(value) > limit:
        raise InvalidScale(f"{name}={value} is out of range: |φ| must be at most {limit:g} (B7 is about φ=6).")
    return value


@dataclass(frozen=True)
class CompoundScaling:
    """depth = α^φ_d, width = β^φ_w, resolution = γ^φ_r × base resolution."""

    alpha: float = DEFAULTS["alpha"]
    beta: float = DEFAULTS["beta"]
    gamma: float = DEFAULTS["gamma"]
    base_resolution: int = DEFAULTS["base_resolution"]
    resolution_divisor: int = DEFAULTS["resolution_divisor"]

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidScale(f"{name} must be a positive number, got {value!r}.")

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "base_resolution": self.base_resolution}

    def compound(self, phi: float) -> Scale:
        """One φ for all three dimensions (the EfficientNet rule)."""
        phi = _check_phi("phi", phi)
        return replace(self.per_dimension(phi, phi, phi), phi=phi)

    def per_dimension(self, phi_depth: float = 0.0, phi_width: float = 0.0, phi_resolution: float = 0.0) -> Scale:
        """Independent φ per dimension; ``Scale.phi`` stays ``None``."""
        pd = _check_phi("phi_depth", phi_depth)
        pw = _check_phi("phi_width", phi_width)
        pr = _check_phi("phi_resolution", phi_resolution)
        res = round_resolution(self.base_resolution * self.gamma**pr, self.resolution_divisor)
        return Scale(
            depth=self.alpha**pd,
            width=self.beta**pw,
            resolution=res,
            phi=None,
            phi_depth=pd,
            phi_width=pw,
            phi_resolution=pr,
        )


def family_for(family: str | None, preset_name: str | None = None) -> str:
    """The family a command works on: the one given, else the preset's own (lite0 → efficientnet-lite),
    else EfficientNet."""
    if family is not None:
        return family
    if preset_name is not None:
        return PRESET_FAMILIES.get(preset_name.lower(), DEFAULT_FAMILY)
    return DEFAULT_FAMILY


def preset(name: str) -> Scale:
    """The published multipliers, B0–B7 and lite0–lite4 (not the formula: B4–B7 are larger than α^φ)."""
    key = name.lower()
    if key not in PRESETS:
        raise PresetNotFound("preset", name, list(PRESETS))
    width, depth, resolution, dropout = PRESETS[key]
    return Scale(depth=depth, width=width, resolution=resolution, dropout=dropout, preset=key)


def resolve_scale(
    phi: float | None = None,
    phi_depth: float | None = None,
    phi_width: float | None = None,
    phi_resolution: float | None = None,
    preset_name: str | None = None,
    scaling: CompoundScaling | None = None,
) -> Scale:
    """Turn the three mutually exclusive ways of naming a scale into a :class:`Scale`."""
    scaling = scaling or CompoundScaling()
    per_dim = any(v is not None for v in (phi_depth, phi_width, phi_resolution))
    given = sum([phi is not None, per_dim, preset_name is not None])
    if given > 1:
        raise InvalidScale("give only one of --phi, --preset, or --phi-depth/--phi-width/--phi-resolution.")
    if preset_name is not None:
        return preset(preset_name)
    if per_dim:
        return scaling.per_dimension(phi_depth or 0.0, phi_width or 0.0, phi_resolution or 0.0)
    return scaling.compound(0.0 if phi is None else phi)
