"""``deploy calibrate``: measure a calibration suite on this machine and write a profile.

The suite covers each family at several compound scales plus one-dimension-at-a-time
variations (resolution-only, width-only, depth-only), because a predictor fitted on
compound scaling alone cannot tell those effects apart. Every model is exported with the
same exporter as ``deploy fit``, timed with :mod:`pipeline.measure.timing` at an explicit thread
count, and its peak memory is measured in a child process.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import BackendUnavailable
from pipeline.core.paths import edgefit_home
from pipeline.core.scaling import CompoundScaling, Scale
from pipeline.measure.device import Device, LocalDevice
from pipeline.measure.settings import TimingSettings, timing
from pipeline.models import build, initialize
from pipeline.predict.profile import SCHEMA_VERSION, Profile, now_iso, save_profile


@dataclass(frozen=True)
class SuiteEntry:
    family: str
    phi: float | None = None
    dims: tuple[float, float, float] | None = None  # (φ_d, φ_w, φ_r) in per-dimension mode

    def scale(self) -> Scale:
        s = CompoundScaling()
        return s.compound(self.phi) if self.dims is None else s.per_dimension(*self.dims)

    @property
    def label(self) -> str:
        if self.dims is None:
            return f"{self.family} φ={self.phi:g}"
        return f"{self.family} φd={self.dims[0]:g} φw={self.dims[1]:g} φr={self.dims[2]:g}"


_ONE_DIM = [(0, 0, -2), (0, 0, 2), (0, -2, 0), (0, 2, 0), (-2, 0, 0), (2, 0, 0)]
FULL_SUITE: tuple[SuiteEntry, ...] = (
    *(SuiteEntry("efficientnet", p) for p in (-3, -2, -1, 0, 1, 2)),
    *(SuiteEntry("mobilenetv2", p) for p in (-2, -1, 0, 1, 2)),
    *(SuiteEntry("resnet18", p) for p in (-3, -2, -1, 0, 1)),
    *(SuiteEntry("resnet50", p) for p in (-3, -2, -1, 0)),
    *(SuiteEntry(f, dims=d) for f in ("efficientnet", "mobilenetv2", "resnet18") for d in _ONE_DIM),
)
QUICK_SUITE: tuple[SuiteEntry, ...] = (
    *(SuiteEntry(f, p) for f in ("efficientnet", "mobilenetv2", "resnet18") for p in (-2, 0)),
    SuiteEntry("resnet50", -2),
    SuiteEntry("efficientnet", dims=(0, 0, 2)),
    SuiteEntry("efficientnet", dims=(0, 2, 0)),
    SuiteEntry("efficientnet", dims=(2, 0, 0)),
    SuiteEntry("resnet18", dims=(0, -2, 1)),
    SuiteEntry("mobilenetv2", dims=(1, 1, -1)),
)
FULL_TIMING: TimingSettings = timing("calibrate")  # rows of the one settings table (pipeline.measure.settings)
QUICK_TIMING: TimingSettings = timing("calibrate-quick")


def measure_entry(entry: SuiteEntry, device: Device, settings: TimingSettings, workdir: Path,
                  num_classes: int = 1000, precision: str = "fp32") -> dict:
    """Export one suite model (int8: quantized), measure it on ``device``: one profile record."""
    from pipeline.cost.trace import model_cost
    from pipeline.export.onnx import export_onnx

    scale = entry.scale()
    model = initialize(build(entry.family, scale, num_classes), seed=0)
    path = workdir / "model.onnx"
    export_onnx(model, path)
    if precision == "int8":
        from pipeline.fit.steps import quantize_candidate

        quantize_candidate(path, path, "percentile")
    m = device.measure(path, settings, precision=precision)
    t = m.latency
    cost = model_cost(model)
    return {
        "kind": "model", "family": entry.family, "phi": scale.phi, "phi_depth": scale.phi_depth,
        "phi_width": scale.phi_width, "phi_resolution": scale.phi_resolution, "preset": None,
        "resolution": scale.resolution, "num_classes": num_classes,
        "latency_ms": {"p50": round(t.p50_ms, 4), "p90": round(t.p90_ms, 4), "p99": round(t.p99_ms, 4)},
        "peak_memory_mb": None if m.memory_mb is None else round(m.memory_mb, 2), "repeats": t.n,
        "spread": round(t.spread, 4), "params": cost.params, "macs": cost.macs,
    }


def calibrate(target, precision: str | None = None, threads: int | None = None, quick: bool = False,
              out: Path | None = None, progress: Callable[[int, int, str], None] | None = None,
              suite: tuple[SuiteEntry, ...] | None = None, settings: TimingSettings | None = None) -> Profile:
    """Measure the suite on this machine for ``target`` and save the profile (atomically).

    The profile goes to ``out``, or to the host profile location (host), or to
    ``edgefit_home()/profiles/<target>/`` when run on a real device.
    """
    from pipeline.predict.targets import host_profile_path

    precision = target.check_precision(precision)
    if target.runtime != "onnxruntime":
        raise BackendUnavailable(f"calibrating '{target.name}' needs its {target.runtime} runtime, which edgefit "
                                 "cannot drive yet; use its published profile or calibrate an onnxruntime target.")
    if precision == "fp16":
        raise BackendUnavailable(f"ONNX Runtime on CPU has no fast fp16 path; calibrate fp32 or int8 on {target.name}.")
    threads = threads or target.threads or 1
    suite = suite or (QUICK_SUITE if quick else FULL_SUITE)
    settings = settings or (QUICK_TIMING if quick else FULL_TIMING)
    device = LocalDevice(target, threads)
    records, started = [], time.time()
    with tempfile.TemporaryDirectory(prefix="edgefit-calibrate-") as tmp:
        for i, entry in enumerate(suite):
            if progress:
                progress(i, len(suite), entry.label)
            records.append(measure_entry(entry, device, settings, Path(tmp), precision=precision))
    if progress:
        progress(len(suite), len(suite), "done")
    profile = Profile(
        target=target.name,
        runtime={k: v for k, v in device.runtime_info().items() if k != "label"},
        precision=precision,
        provenance="measured",
        device=device.facts(),
        created=now_iso(),
        method={**settings.to_dict(), "suite": "quick" if quick else "full", "statistic": "p50 of per-call latency",
                "batch": 1, "memory": "child-process VmHWM above post-import baseline",
                "seconds": round(time.time() - started, 1)},
        records=tuple(records),
        schema_version=SCHEMA_VERSION,
    )
    if out is None:
        out = (host_profile_path(precision, threads, target.runtime) if target.measurable else
               edgefit_home() / "profiles" / target.name / f"{target.runtime}-{precision}-t{threads}.json")
    save_profile(profile, out)
    return Profile.from_dict(profile.to_dict(), out)
