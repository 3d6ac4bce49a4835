"""``deploy fit``'s options as data: one frozen dataclass per concern, each checked where it is made.

The CLI builds these from its flags; library callers (benches, tests, a notebook) build them
directly. Grouping keeps every function's signature short and makes a run's settings a
value that can be printed, compared and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import UsageError

if TYPE_CHECKING:
    from pipeline.core.scalings import NamedScaling

DEFAULT_PHI_RANGE = (-4.0, 4.0)
PERCENTILES = (50, 90, 99)
CALIBRATION_METHODS = ("percentile", "entropy", "minmax")
SEARCH_MODES = ("compound", "per-dimension")


@dataclass(frozen=True)
class SearchOptions:
    """What to search: the family, the compound-φ range (``None``: the default range), the scaling and the mode.

    ``scaling``: the α, β, γ (``None``: EfficientNet's). ``mode``: ``compound`` (one φ) or
    ``per-dimension`` (after the compound pick, raise resolution, then width, within the budget).
    ``base_resolution``: the resolution of φ=0 (224; a grid on a small-image dataset uses its size).
    """

    family: str = "efficientnet"
    phi_min: float | None = None
    phi_max: float | None = None
    scaling: NamedScaling | None = None
    mode: str = "compound"
    base_resolution: int | None = None

    def named_scaling(self) -> NamedScaling:
        from pipeline.core.scalings import resolve

        return self.scaling or resolve()

    def compound_scaling(self):
        """The :class:`~pipeline.core.scaling.CompoundScaling` the architectures are enumerated with."""
        from pipeline.core.scaling import DEFAULTS

        return self.named_scaling().scaling(self.base_resolution or DEFAULTS["base_resolution"])

    def check(self) -> SearchOptions:
        if self.mode not in SEARCH_MODES:
            raise UsageError(f"--search must be one of {', '.join(SEARCH_MODES)}, not {self.mode!r}.")
        self.phi_range  # noqa: B018 - raises on an inverted range
        return self

    @property
    def phi_range(self) -> tuple[float, float]:
        lo = DEFAULT_PHI_RANGE[0] if self.phi_min is None else float(self.phi_min)
        hi = DEFAULT_PHI_RANGE[1] if self.phi_max is None else float(self.phi_max)
        if lo > hi:
            raise UsageError(f"--phi-min {lo:g} is above --phi-max {hi:g}.")
        return lo, hi


@dataclass(frozen=True)
class DataOptions:
    """Data and training: the labelled set, how long to train, where to start from, the accuracy floor."""

    data: str | None = None
    train_epochs: int | None = None
    teacher: str | None = None
    init_from: str | None = None
    min_accuracy: float | None = None  # a fraction in [0, 1]
    nproc: int = 1  # data-parallel training processes (torchrun + DDP; pipeline.train.distributed)

    @property
    def trains(self) -> bool:
        return bool(self.data and self.train_epochs)

    def check(self) -> DataOptions:
        if self.train_epochs and not self.data:
            raise UsageError("--train-epochs needs --data (a labelled set to train on).")
        if self.min_accuracy is not None and not self.trains:
            raise UsageError("--min-accuracy needs --data and --train-epochs: only a trained model has an accuracy.")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise UsageError(f"--min-accuracy is a fraction in [0, 1], not {self.min_accuracy:g}.")
        return self


@dataclass(frozen=True)
class Int8Options:
    """INT8: the calibration set and method, nodes kept in float, and the accuracy gate (percentage points)."""

    calibration_data: str | None = None
    calibration_method: str | None = None  # None: the family's tuned method (pipeline.export.quantize.INT8_TUNING)
    calibration_samples: int = 256
    exclude: tuple[str, ...] = ()
    max_drop_pp: float = 1.0

    def calibration_spec(self, data: DataOptions) -> str:
        """The set INT8 calibrates on: ``--calibration-data``, else ``--data``, else the built-in digits."""
        return self.calibration_data or data.data or "builtin:digits"

    def check(self) -> Int8Options:
        if self.calibration_method is not None and self.calibration_method not in CALIBRATION_METHODS:
            raise UsageError(f"--calibration-method must be one of {', '.join(CALIBRATION_METHODS)}.")
        if self.calibration_samples < 1 or self.max_drop_pp < 0:
            raise UsageError("--calibration-samples must be >= 1 and --int8-max-drop-pp >= 0.")
        return self


@dataclass(frozen=True)
class RunOptions:
    """Where the run goes and what it ships: output folder, replacement, given weights, export shape, classes."""

    out: str | Path | None = None
    force: bool = False
    weights: str | Path | None = None
    dynamic_batch: bool = False
    num_classes: int | None = None


@dataclass(frozen=True)
class DeviceOptions:
    """Where it is measured: runtime threads, a measurement agent, and extra target files."""

    threads: int | None = None
    agent: str | tuple[str, ...] | None = None  # one URL, several (a farm), or files of URLs
    targets_dir: str | Path | None = None
    agent_token_file: str | Path | None = None  # else $EDGEFIT_AGENT_TOKEN
    accept_device: bool = False  # measure on an agent whose facts contradict the target


__all__ = ["CALIBRATION_METHODS", "DEFAULT_PHI_RANGE", "PERCENTILES", "SEARCH_MODES", "DataOptions", "DeviceOptions",
           "Int8Options", "RunOptions", "SearchOptions"]
