"""``deploy calibrate``: measure a calibration suite on this machine and write a profile.

The suite covers each family at several compound scales plus one-dimension-at-a-time
variations (resolution-only, width-only, depth-only), because a predictor fitted on
compound scaling alone cannot tell those effects apart. Every model is exported with the
same exporter as ``deploy fit``, timed with :mod:`pipeline.measure.timing` at an explicit thread
count, and its peak memory is measured in a child process.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import BackendUnavailable
from pipeline.core.scaling import CompoundScaling, Scale
from pipeline.measure.device import Device, LocalDevice
from pipeline.measure.node_profile import conv_grid, profile_graph
from pipeline.measure.settings import TimingSettings, timing
from pipeline.models.probe_suite import PROBE_NAMES, QUICK_PROBES
from pipeline.predict.nodes import ProfiledModel, node_times_path, save_node_times
from pipeline.predict.profile import SCHEMA_VERSION, Profile, now_iso, save_profile


@dataclass(frozen=True)
class SuiteEntry:
    family: str
    phi: float | None = None
    dims: tuple[float, float, float] | None = None  # (φ_d, φ_w, φ_r) in per-dimension mode
    probe: str | None = None  # family "probe": a calibration probe (pipeline.models.probes)

    def scale(self) -> Scale:
        s = CompoundScaling()
        return s.compound(self.phi) if self.dims is None else s.per_dimension(*self.dims)

    @property
    def label(self) -> str:
        if self.probe is not None:
            return f"probe {self.probe}"
        if self.dims is None:
            return f"{self.family} φ={self.phi:g}"
        return f"{self.family} φd={self.dims[0]:g} φw={self.dims[1]:g} φr={self.dims[2]:g}"


_ONE_DIM = [(0, 0, -2), (0, 0, 2), (0, -2, 0), (0, 2, 0), (-2, 0, 0), (2, 0, 0)]
FULL_SUITE: tuple[SuiteEntry, ...] = (
    *(SuiteEntry("efficientnet", p) for p in (-3, -2, -1, 0, 1, 2)),
    *(SuiteEntry("efficientnet-lite", p) for p in (-2, -1, 0, 1, 2)),
    *(SuiteEntry("mobilenetv2", p) for p in (-2, -1, 0, 1, 2)),
    *(SuiteEntry("resnet18", p) for p in (-3, -2, -1, 0, 1)),
    *(SuiteEntry("resnet50", p) for p in (-3, -2, -1, 0)),
    *(SuiteEntry(f, dims=d) for f in ("efficientnet", "mobilenetv2", "resnet18") for d in _ONE_DIM),
    *(SuiteEntry("probe", probe=name) for name in PROBE_NAMES),
)
QUICK_SUITE: tuple[SuiteEntry, ...] = (
    *(SuiteEntry(f, p) for f in ("efficientnet", "mobilenetv2", "resnet18") for p in (-2, 0)),
    SuiteEntry("resnet50", -2),
    # three Lite sizes: with fewer than three records of a family, its stated error is raised to the profile's
    # leave-one-family-out error, and at int8 that is large (families gain 1.1x to 3x from INT8 here)
    *(SuiteEntry("efficientnet-lite", p) for p in (-2, -1, 0)),
    SuiteEntry("efficientnet", dims=(0, 0, 2)),
    SuiteEntry("efficientnet", dims=(0, 2, 0)),
    SuiteEntry("efficientnet", dims=(2, 0, 0)),
    SuiteEntry("resnet18", dims=(0, -2, 1)),
    SuiteEntry("mobilenetv2", dims=(1, 1, -1)),
    *(SuiteEntry("probe", probe=name) for name in QUICK_PROBES),
)
# Single convolutions timed (twice) for the per-node model (pipeline.predict.nodes): about 3 s per 100, 1 thread.
NODE_GRID = {"quick": 500, "full": 2000}
NODE_RUNS = 6  # profiled runs per half, per suite model (and as many without the profiler)
GRID_SEED = 1
FULL_TIMING: TimingSettings = timing("calibrate")  # rows of the one settings table (pipeline.measure.settings)
QUICK_TIMING: TimingSettings = timing("calibrate-quick")


def export_entry(entry: SuiteEntry, path: Path, num_classes: int = 1000, precision: str = "fp32",
                 opset: int | None = None) -> dict:
    """Export one suite model to ``path`` (int8: quantized); its scale and static cost (a record without timings)."""
    from pipeline.cost.plan import scale_cost
    from pipeline.export.onnx import export_onnx
    from pipeline.models import build, initialize

    if entry.probe is not None:
        return _export_probe(entry.probe, path, precision, opset)
    scale = entry.scale()
    model = initialize(build(entry.family, scale, num_classes), seed=0)
    export_onnx(model, path, opset=opset, exporter=_exporter(opset))
    if precision == "int8":
        from pipeline.fit.steps import quantize_candidate

        quantize_candidate(path, path, family=entry.family)
    cost = scale_cost(entry.family, scale, num_classes)
    return {"kind": "model", "family": entry.family, "phi": scale.phi, "phi_depth": scale.phi_depth,
            "phi_width": scale.phi_width, "phi_resolution": scale.phi_resolution, "preset": None,
            "resolution": scale.resolution, "num_classes": num_classes, "params": cost.params, "macs": cost.macs}


def _exporter(opset: int | None) -> str | None:
    """The suite's exporter: the fast one fit uses for its candidates (the same graph once ORT optimizes it)."""
    from pipeline.export.onnx import DEFAULT_OPSET, fast_exporter

    return fast_exporter(opset or DEFAULT_OPSET)


def _export_probe(name: str, path: Path, precision: str, opset: int | None) -> dict:
    """Export a calibration probe; its record carries the op list costed from the fp32 export."""
    from pipeline.cost.onnx import onnx_cost
    from pipeline.export.onnx import export_onnx
    from pipeline.models.probes import PROBE_CLASSES, build_probe

    export_onnx(build_probe(name), path, opset=opset, exporter=_exporter(opset))
    cost = onnx_cost(path)
    if precision == "int8":
        from pipeline.fit.steps import quantize_candidate

        quantize_candidate(path, path)
    return {"kind": "model", "family": "probe", "probe": name, "phi": None, "phi_depth": None, "phi_width": None,
            "phi_resolution": None, "preset": None, "resolution": cost.resolution, "num_classes": PROBE_CLASSES,
            "params": cost.params, "macs": cost.macs, "ops": [op.to_record() for op in cost.ops]}


def timed_record(record: dict, latency_ms: dict, peak_memory_mb: float | None, repeats: int) -> dict:
    """A profile record: the suite model's ``record`` with what the device measured (``latency_ms``: p50/p90/p99)."""
    p50, p90 = float(latency_ms["p50"]), float(latency_ms["p90"])
    return {**record, "latency_ms": {k: round(float(latency_ms[k]), 4) for k in ("p50", "p90", "p99")},
            "peak_memory_mb": None if peak_memory_mb is None else round(float(peak_memory_mb), 2),
            "repeats": int(repeats), "spread": round(p90 / p50 - 1.0 if p50 > 0 else 0.0, 4)}


def measure_entry(entry: SuiteEntry, device: Device, settings: TimingSettings, workdir: Path,
                  num_classes: int = 1000, precision: str = "fp32", opset: int | None = None) -> dict:
    """Export one suite model (int8: quantized), measure it on ``device``: one profile record."""
    path = workdir / "model.onnx"
    record = export_entry(entry, path, num_classes, precision, opset)
    return time_exported(record, path, device, settings, precision)


def time_exported(record: dict, path: Path, device: Device, settings: TimingSettings, precision: str) -> dict:
    """Measure an exported suite model on ``device``; the record names the agent that timed it, if any."""
    m = device.measure(path, settings, precision=precision)
    t = m.latency
    record = timed_record(record, {"p50": t.p50_ms, "p90": t.p90_ms, "p99": t.p99_ms}, m.memory_mb, t.n)
    if m.agent is not None:
        record["agent"] = m.agent
    record["_runtime"] = m.runtime
    return record


def measure_spread(suite: Sequence[SuiteEntry], device: Device, settings: TimingSettings, workdir: Path, *,
                   precision: str, opset: int | None, progress: Callable[[int, int, str], None] | None) -> list[dict]:
    """The suite over a device with several slots (a farm): exported here one by one, timed in parallel.

    Exports stay in this thread (the exporter is not thread-safe, and it is what this machine
    does); as soon as a model is exported it is handed to the next free agent. Records come back
    in suite order.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=device.slots, thread_name_prefix="edgefit-farm") as pool:
        futures = {}
        for i, entry in enumerate(suite):
            path = workdir / f"suite-{i}.onnx"
            record = export_entry(entry, path, precision=precision, opset=opset)
            futures[pool.submit(time_exported, record, path, device, settings, precision)] = i
        records: list[dict | None] = [None] * len(suite)
        for n, future in enumerate(as_completed(futures), 1):
            records[futures[future]] = future.result()
            if progress:
                progress(n, len(suite), suite[futures[future]].label)
    return [r for r in records if r is not None]


def suite_opset(target) -> int:
    """The opset suite models are exported at: fit's, capped by what the target's runtime can parse."""
    from pipeline.export.onnx import DEFAULT_OPSET

    return min(DEFAULT_OPSET, target.max_onnx_opset)


def suite_settings(target, quick: bool) -> TimingSettings:
    """The timing row a suite is measured with: trtexec's on a TensorRT target, else calibrate's (quick or full)."""
    if target.runtime == "tensorrt":
        return timing("trtexec")
    return QUICK_TIMING if quick else FULL_TIMING


def calibrate(target, precision: str | None = None, threads: int | None = None, quick: bool = False,
              out: Path | None = None, progress: Callable[[int, int, str], None] | None = None,
              suite: tuple[SuiteEntry, ...] | None = None, settings: TimingSettings | None = None,
              device: Device | None = None, node_grid: int | None = None) -> Profile:
    """Measure the suite for ``target`` on ``device`` (default: this machine) and save the profile (atomically).

    The profile goes to ``out``, or to the host profile location (host), or to
    ``edgefit_home()/profiles/<target>/<runtime>-<precision>.json`` (a real device, e.g. through an
    agent), where ``load_predictor`` prefers it over the shipped profile.

    On this machine with ONNX Runtime at fp32, each suite model is also profiled node by node, and
    ``node_grid`` single convolutions are timed (default: :data:`NODE_GRID` for the quick or full
    suite, none for a custom one); they go beside the profile for ``deploy predict --onnx``
    (:mod:`pipeline.predict.nodes`).
    """
    from pipeline.predict.targets import device_profile_path, host_profile_path

    precision = target.check_precision(precision)
    if device is None:
        if target.runtime != "onnxruntime":
            raise BackendUnavailable(f"calibrating '{target.name}' needs its {target.runtime} runtime: run a "
                                     "measurement agent on the device and pass --agent URL, or use --bundle DIR.")
        if precision == "fp16":
            raise BackendUnavailable(f"ONNX Runtime on CPU has no fast fp16 path; calibrate fp32 or int8 on "
                                     f"{target.name}.")
    threads = threads or target.threads or (1 if target.runtime == "onnxruntime" else None)
    suite = suite or (QUICK_SUITE if quick else FULL_SUITE)
    settings = settings or suite_settings(target, quick)
    device = device or LocalDevice(target, threads)
    opset = suite_opset(target)
    if node_grid is None:
        node_grid = NODE_GRID["quick" if quick else "full"] if suite in (QUICK_SUITE, FULL_SUITE) else 0
    local = isinstance(device, LocalDevice) and device.slots == 1
    per_node = local and node_grid > 0 and precision == "fp32"
    node_runs: list[ProfiledModel] = []
    records, started = [], time.time()
    with tempfile.TemporaryDirectory(prefix="edgefit-calibrate-") as tmp:
        spread = device.slots > 1
        if spread:
            records = measure_spread(suite, device, settings, Path(tmp), precision=precision, opset=opset,
                                     progress=progress)
        for i, entry in enumerate(() if spread else suite):
            if progress:
                progress(i, len(suite), entry.label)
            records.append(measure_entry(entry, device, settings, Path(tmp), precision=precision, opset=opset))
            if i == 0 and local:
                shutil.copy(Path(tmp) / "model.onnx", Path(tmp) / "reference.onnx")
            if per_node:
                run = profile_graph(Path(tmp) / "model.onnx", threads, runs=NODE_RUNS)
                node_runs.append(ProfiledModel(entry.label, run.nodes, records[-1]["latency_ms"]["p50"],
                                               run.unprofiled_ms))
        if per_node and progress:
            progress(len(suite), len(suite), f"timing {node_grid} single convolutions")
        grid = conv_grid(node_grid, GRID_SEED, threads) if per_node else []
        drift = machine_drift(device, Path(tmp) / "reference.onnx", settings, suite[0].label,
                              records[0]["latency_ms"]["p50"]) if local and records else None
    if progress:
        progress(len(suite), len(suite), "done")
    runtime = {"version": None, **{k: v for k, v in records[-1]["_runtime"].items()
                                   if k in ("name", "version", "provider")}}
    for r in records:
        r.pop("_runtime", None)
    if out is None:
        out = (host_profile_path(precision, threads, target.runtime) if target.measurable else
               device_profile_path(target.name, target.runtime, precision))
    facts = device.facts()
    profile = Profile(
        target=target.name,
        runtime=runtime,
        precision=precision,
        provenance="measured",
        device={**facts, "threads": facts.get("threads", threads)},
        created=now_iso(),
        method={**settings.to_dict(), "suite": "quick" if quick else "full", "statistic": "p50 of per-call latency",
                "batch": 1, "memory": records_memory_method(device),
                "seconds": round(time.time() - started, 1),
                **({"node_times": node_times_path(out).name} if per_node else {}),
                **({"drift": drift} if drift else {}),
                **({"dropped_agents": device.dropped} if getattr(device, "dropped", None) else {})},
        records=tuple(records),
        schema_version=SCHEMA_VERSION,
    )
    if per_node:  # first: a profile never names node times that were not written
        save_node_times(node_times_path(out), profile.created, node_runs, grid, GRID_SEED, time.time() - started)
    save_profile(profile, out)
    return Profile.from_dict(profile.to_dict(), out)


DRIFT_WARN_PCT = 5.0  # the first suite model re-timed at the end differs by more: the machine was busy


def machine_drift(device: Device, reference: Path, settings: TimingSettings, label: str, start_ms: float) -> dict:
    """Re-time the first suite model after everything else: how far the machine's speed moved during calibration.

    Another process taking the CPU part of the time slows whatever is measured then; a profile
    records it so a user (and ``deploy calibrate``'s summary) can tell a quiet calibration from a busy one.
    """
    end_ms = device.measure(reference, settings).latency.p50_ms
    return {"reference": label, "start_ms": round(start_ms, 4), "end_ms": round(end_ms, 4),
            "drift_pct": round(100 * (end_ms / start_ms - 1), 1)}


def records_memory_method(device: Device) -> str:
    return ("child-process VmHWM above post-import baseline" if isinstance(device, LocalDevice) else
            "as reported by the device's runner (memory_method of its results)")
