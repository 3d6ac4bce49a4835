"""``deploy fit``: one line per step — predict, search, export, measure, verify, report.

Everything is written into a temporary sibling of the run directory and moved into
place only at the end, so a failed run never leaves a half-written directory nor destroys
an earlier good one (``--force`` replaces it only once the new run is complete).

Latency is measured only through a :class:`~pipeline.measure.device.Device` (this machine
today, a remote device behind an agent tomorrow); the options come in as the dataclasses of
:mod:`pipeline.fit.options`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import DeployError, ProfileMissing, UsageError, VerificationFailed
from pipeline.core.io import publish_dir
from pipeline.cost.plan import scale_cost
from pipeline.fit.options import PERCENTILES, DataOptions, DeviceOptions, Int8Options, RunOptions, SearchOptions
from pipeline.fit.search import Architecture, Budget, SearchResult, enumerate_architectures, search
from pipeline.fit.steps import (
    WEIGHTS_HINT,
    make_int8,
    num_classes_of,
    precision_table,
    quantize_candidate,
    verify_accuracy_step,
    weights_for,
)
from pipeline.measure.device import Device, LocalDevice
from pipeline.measure.loop import (
    LoadCheck,
    Measurement,
    check_shipped,
    closed_loop,
    from_device,
    measured_limits,
    remove_unchosen,
)
from pipeline.measure.settings import TimingSettings, timing
from pipeline.models.weights import load_weights
from pipeline.predict.predictor import load_predictor  # at start-up: the search step's clock counts no imports
from pipeline.record.rundir import parse_record, write_record
from pipeline.record.verdict import judge_record

if TYPE_CHECKING:
    from pipeline.predict.predictor import Predictor
    from pipeline.predict.targets import Target

# The latency margin when the profile cannot say how wrong a prediction for this family may be (a family
# never timed on the target, and too few families to estimate cross-family error). It covers 12 of 13
# such held-out cases on the shipped published profiles (bench/results/predictor_published.md).
UNKNOWN_ERROR_MARGIN_PCT = 50.0
TIMING: TimingSettings = timing("fit")  # per measurement: warm-up, then rounds (pipeline.measure.settings)
RECHECK: TimingSettings = timing("fit-recheck")  # the load check of a contradicting re-measurement


@dataclass
class FitContext:
    """Everything one fit decided before exporting: target, options, predictor, the search and its device."""

    target: Target
    precision: str
    budget: Budget
    search: SearchOptions
    data: DataOptions
    int8: Int8Options
    run: RunOptions
    threads: int
    num_classes: int
    predictor: Predictor | None = None
    archs: list[Architecture] = field(default_factory=list)
    result: SearchResult | None = None
    device: Device | None = None
    measured_on: dict = field(default_factory=dict)  # architecture index -> its latest DeviceMeasurement
    per_dimension: dict | None = None  # the per-dimension fill's record (--search per-dimension)
    log: Callable[[str], None] = lambda _: None
    search_seconds: float | None = None  # the whole search step: predictor, enumeration, search
    family_choice: dict | None = None  # --family auto: every family's pick and the rule (pipeline.fit.auto)
    loop_notes: list[str] = field(default_factory=list)  # why the closed loop stopped short of a measured bracket
    train_progress: Callable | None = None  # (step, total, text) while training the chosen architecture

    @property
    def family(self) -> str:
        return self.search.family

    def predict_arch(self, i: int) -> tuple[float, float]:
        """(latency at the budget's percentile, memory) predicted for architecture ``i``."""
        p = self.predictor.predict(scale_cost(self.family, self.archs[i].scale, self.num_classes), self.family)
        return p.latency_at(self.budget.percentile), p.memory_mb


def _run_dir(out: str | Path | None, target: str, force: bool) -> Path:
    path = Path(out) if out else Path("runs") / f"{target}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
        raise DeployError(f"{path} exists and is not empty; pass --force to replace it (only once the new run "
                          "succeeds), or choose another --out.")
    return path


def _predictor(target, precision: str, threads: int | None, log: Callable[[str], None], progress):
    try:
        return load_predictor(target, precision, threads)
    except ProfileMissing:
        if not target.measurable:
            raise
        from pipeline.fit.calibrate import calibrate

        log(f"no {precision} profile for this machine at {threads} threads: calibrating first with the quick "
            "suite (about a minute for fp32, two for int8; run `deploy calibrate --target host` for the full one).")
        calibrate(target, precision, threads, quick=True, progress=progress)
        return load_predictor(target, precision, threads)


def fit_predictor(target, precision: str, threads: int | None, log: Callable[[str], None] = lambda _: None,
                  progress=None):
    """The predictor ``deploy fit`` searches with (calibrating ``host`` first when it has no profile)."""
    return _predictor(target, precision, threads, log, progress)


def check_budget(budget: Budget) -> Budget:
    """A budget ``deploy fit`` can work with, or a UsageError saying what to change."""
    if budget.latency_ms is None and budget.memory_mb is None:
        raise UsageError("give at least one budget: --latency (e.g. 20ms) and/or --memory (e.g. 256MB).")
    if not 0 <= budget.noise_margin_pct < 50:
        raise UsageError(f"--noise-margin must be in [0, 50) percent, not {budget.noise_margin_pct:g}.")
    if budget.percentile not in PERCENTILES:
        raise UsageError(f"--percentile must be one of {', '.join(map(str, PERCENTILES))}.")
    return budget


def _device(target, threads: int, options: DeviceOptions, log: Callable[[str], None] = lambda _: None
            ) -> Device | None:
    """Where candidates are measured: the agent (--agent), else this machine when it is the target, else nowhere.

    An agent is asked what it is first, and refused when that contradicts the target (unless
    --accept-device): timings from the wrong device would mislabel every decision made from them.
    """
    if options.agent is not None:
        from pipeline.measure.farm import agent_device

        return agent_device(options.agent, target, token_file=options.agent_token_file, threads=threads,
                            accept=options.accept_device, log=log)
    return LocalDevice(target, threads) if target.measurable else None


def fit(target: str, budget: Budget, *, search_options: SearchOptions | None = None, precision: str | None = None,
        data: DataOptions | None = None, int8: Int8Options | None = None, run: RunOptions | None = None,
        device: DeviceOptions | None = None, log: Callable[[str], None] = lambda _: None, progress=None,
        family_choice: dict | None = None, train_progress=None) -> dict:
    """Search, export, measure (when the target is measurable) and report. Returns fit.json's object.

    ``family_choice`` (from :func:`pipeline.fit.auto.choose_family`) is recorded as is; ``progress``
    reports a calibration, ``train_progress`` the training steps (``--train-epochs``).
    """
    from pipeline.models import check_family
    from pipeline.predict.targets import load_target

    started = time.perf_counter()
    budget, search_options = check_budget(budget), (search_options or SearchOptions()).check()
    data, int8 = (data or DataOptions()).check(), (int8 or Int8Options()).check()
    run, device = run or RunOptions(), device or DeviceOptions()
    check_family(search_options.family)
    tgt = load_target(target, device.targets_dir)
    threads = device.threads or tgt.threads
    ctx = FitContext(tgt, tgt.check_precision(precision), budget, search_options, data, int8, run, threads,
                     run.num_classes or num_classes_of(data.data), log=log)
    ctx.device = _device(tgt, threads, device, log)
    ctx.family_choice, ctx.train_progress = family_choice, train_progress
    run_dir = _run_dir(run.out, tgt.name, run.force)
    _search(ctx, progress)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.tmp-", dir=run_dir.parent if run_dir.parent.exists()
                                else None))
    try:
        record = _finish(ctx, tmp)
        record["search"]["seconds_total"] = round(time.perf_counter() - started, 2)
        record = _relative_paths(record, tmp)
        _write_json(tmp / "fit.json", record)
        from pipeline.fit.report import write_report

        write_report(record, tmp)
        publish_dir(tmp, run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    judgement = judge_record(parse_record(record, run_dir / "fit.json"))  # the verdicts written into fit.json
    record["run_dir"] = str(run_dir)
    judgement.raise_if_failed(see=run_dir / "report.md")
    return record


def _search(ctx: FitContext, progress) -> None:
    """Fit the predictor, enumerate the distinct architectures and pick the largest predicted to fit."""
    lo, hi = ctx.search.phi_range
    started = time.perf_counter()
    ctx.predictor = _predictor(ctx.target, ctx.precision, ctx.threads, ctx.log, progress)
    ctx.predictor.check_percentile(ctx.budget.percentile)
    error = ctx.predictor.error_for(ctx.family)
    margin = error.pct if error.pct is not None else UNKNOWN_ERROR_MARGIN_PCT
    if error.pct is None:
        ctx.log(f"predictor: error unknown for {ctx.family} ({error.detail}); "
                f"using the unknown-error margin of {UNKNOWN_ERROR_MARGIN_PCT:g}%")
    mem_err = ctx.predictor.memory_heldout_error_pct
    mem_margin = mem_err if mem_err is not None else UNKNOWN_ERROR_MARGIN_PCT
    ctx.archs = enumerate_architectures(ctx.family, lo, hi, ctx.search.compound_scaling())
    index = {id(a): i for i, a in enumerate(ctx.archs)}
    ctx.result = search(ctx.archs, lambda a: ctx.predict_arch(index[id(a)]), ctx.budget, margin,
                        ctx.target.memory_mb, ctx.num_classes, memory_margin_pct=mem_margin)
    ctx.search_seconds = round(time.perf_counter() - started, 3)
    named = ctx.search.named_scaling()
    if named.name != "efficientnet":
        ctx.log(f"scaling: α={named.alpha:g} β={named.beta:g} γ={named.gamma:g} ({named.name or named.source})")
    ctx.log(f"search: {ctx.result.architectures} distinct architectures in φ∈[{lo:g}, {hi:g}]; predictor picks "
            f"φ={ctx.result.chosen.phi:g} ({ctx.result.chosen.latency_ms:.2f} ms predicted, margin {margin:.1f}%); "
            f"search took {ctx.search_seconds:.2f} s")


def _relative_paths(data, run: Path):
    """Paths inside the temporary run folder, made relative: it is renamed to the run directory at the end."""
    prefix = str(run) + os.sep
    if isinstance(data, dict):
        return {k: _relative_paths(v, run) for k, v in data.items()}
    if isinstance(data, list):
        return [_relative_paths(v, run) for v in data]
    return data[len(prefix):] if isinstance(data, str) and data.startswith(prefix) else data


def _write_json(path: Path, data: dict) -> None:
    """fit.json, validated against the run record's schema (:mod:`pipeline.record.schema`) and written atomically."""
    write_record(path.parent, parse_record(data, path))


def _candidate(ctx: FitContext, run: Path, i: int, opset: int) -> Path:
    """The file that would ship for architecture i with deterministic weights (int8: quantized)."""
    from pipeline.export.onnx import export_onnx, fast_exporter
    from pipeline.models import build, initialize

    exporter = fast_exporter(opset)  # candidates are many; the one measured is the one that ships
    model = initialize(build(ctx.family, ctx.archs[i].scale, ctx.num_classes), seed=0)
    if ctx.run.weights is not None:
        load_weights(model, ctx.run.weights, hint=WEIGHTS_HINT)
    path = run / f"candidate-{i}.onnx"
    if ctx.precision == "int8":  # the fp32 export is kept: shipped untrained, it becomes model.fp32.onnx as is
        fp32 = export_onnx(model, candidate_fp32(path), dynamic_batch=ctx.run.dynamic_batch, opset=opset,
                           exporter=exporter).path
        quantize_candidate(Path(fp32), path, ctx.int8.calibration_method, ctx.family)
    else:
        export_onnx(model, path, dynamic_batch=ctx.run.dynamic_batch, opset=opset, exporter=exporter)
    return path


def candidate_fp32(path: Path) -> Path:
    """Where an int8 candidate keeps its fp32 export (``candidate-3.onnx`` -> ``candidate-3.fp32.onnx``)."""
    return path.with_suffix(".fp32.onnx")


def _finish(ctx: FitContext, run: Path) -> dict:
    from pipeline.export.onnx import DEFAULT_OPSET, export_onnx, fast_exporter, parity

    opset = min(DEFAULT_OPSET, ctx.target.max_onnx_opset)  # what the target's runtime can parse

    def measure(i: int, path: Path | None = None) -> Measurement:
        return _measure_file(ctx, path or _candidate(ctx, run, i, opset), i)

    measurements: list[Measurement] = []
    chosen = ctx.result.chosen.index
    if ctx.device is not None:
        chosen, measurements = closed_loop(len(ctx.archs), chosen, ctx.predict_arch, measure, ctx.budget, ctx.log,
                                           ctx.loop_notes)
    if ctx.search.mode == "per-dimension":  # raise resolution, then width, into the gap the compound step left
        from pipeline.fit.perdim import fill_gap

        chosen, measurements, ctx.per_dimension = fill_gap(ctx, chosen, measurements,
                                                           measure if ctx.device is not None else None)
    if ctx.device is not None:
        remove_unchosen(measurements, chosen)
    model, preprocess, training = weights_for(run, ctx.family, ctx.archs[chosen].scale, ctx.num_classes,
                                              ctx.run.weights, ctx.data, ctx.log, ctx.train_progress)
    fp32 = run / ("model.fp32.onnx" if ctx.precision == "int8" else "model.onnx")
    final = next((m for m in measurements if m.index == chosen), None)
    # the measured candidate has the weights that ship unless training gave new ones: its export is the one to ship
    timed_fp32 = None if final is None or training is not None else (
        candidate_fp32(Path(final.onnx)) if ctx.precision == "int8" else Path(final.onnx))
    if timed_fp32 is not None and timed_fp32.is_file():
        shutil.copyfile(timed_fp32, fp32)
    else:
        export_onnx(model, fp32, dynamic_batch=ctx.run.dynamic_batch, opset=opset, exporter=fast_exporter(opset))
    par = parity(model, fp32, n=8, precision="fp32")
    if not par:
        raise VerificationFailed(f"exported ONNX differs from PyTorch: {', '.join(par.failures)}.")
    int8 = None
    if ctx.precision == "int8":
        int8 = make_int8(run, fp32, ctx.archs[chosen].scale.resolution, preprocess, ctx.data, ctx.int8,
                         training is not None, ctx.log, ctx.family)
    check = None
    if final is not None:
        shipped, timed = run / "model.onnx", Path(final.onnx)
        if shipped.read_bytes() != timed.read_bytes():  # trained or recalibrated: time the file that ships
            earlier, final = final, measure(chosen, shipped)
            ctx.log(f"re-measured the shipped model: p{ctx.budget.percentile} "
                    f"{final.latency_at(ctx.budget.percentile):.2f} ms")
            final, check = check_shipped(earlier, final, lambda: _measure_file(ctx, shipped, chosen, RECHECK),
                                         ctx.budget, ctx.log)
        timed.unlink(missing_ok=True)
        candidate_fp32(timed).unlink(missing_ok=True)
        if final.memory_mb is None:
            mem, _ = ctx.device.peak_memory(shipped)
            final = dataclasses.replace(final, memory_mb=None if mem is None else round(mem, 2))
    accuracy = verify_accuracy_step(run, ctx.data, ctx.precision, ctx.threads)
    return _record(ctx, chosen, measurements, final,
                   {"parity": par.to_dict(), "int8": int8, "training": training, "accuracy": accuracy, "run": run,
                    "noise": _noise(measurements, final, check)})


def _measure_file(ctx: FitContext, path: Path, i: int, settings: TimingSettings = TIMING) -> Measurement:
    """Time ``path`` (architecture ``i``) on the fit's device (with the reference model where it can) and judge it
    against the budget."""
    arch = ctx.archs[i]
    # peak memory takes a child process (seconds): measured per candidate only when a memory budget needs it,
    # else once, for the model that ships (_finish)
    m = ctx.device.measure(path, settings, precision=ctx.precision, reference=ctx.device.supports_reference,
                           memory=ctx.budget.memory_mb is not None)
    ctx.measured_on[i] = m
    return from_device(m, i, arch.phi, arch.scale.resolution, ctx.predict_arch(i)[0], ctx.budget, path)


def _noise(measurements: list[Measurement], final: Measurement | None, check: LoadCheck | None) -> dict | None:
    """fit.json's ``noise``: the reference model's timings next to every measurement, their drift, the load check."""
    from pipeline.measure.reference import REFERENCE_NAME

    refs = [m.reference_ms for m in measurements if m.reference_ms is not None]
    if final is None or not refs:
        return None
    every = refs + ([final.reference_ms] if final.reference_ms is not None else [])
    return {"reference": REFERENCE_NAME, "reference_ms": {str(m.index): m.reference_ms for m in measurements},
            "shipped_reference_ms": final.reference_ms, "drift_pct": round(100 * (max(every) / min(every) - 1), 2),
            "check": None if check is None else check.to_dict()}


def _agent_fields(ctx: FitContext, i: int) -> dict:
    """What ``measured`` adds when an agent timed it: its URL, the bytes it measured and the device's facts."""
    m = ctx.measured_on[i]
    if m.agent is None:
        return {}
    return {"agent": m.agent, "model_sha256": m.model_sha256, "facts": m.facts}


def _measured_rejection(m: Measurement, budget: Budget) -> str:
    """Why a measured architecture was not taken, with the limits it was held to."""
    lat_limit, mem_limit = measured_limits(budget)
    stat = m.judged_latency(budget.percentile)
    parts = []
    if lat_limit is not None and stat > lat_limit:
        which = " (slowest round)" if budget.percentile == 50 and m.latency_ms_worst_round is not None else ""
        parts.append(f"measured p{budget.percentile} {stat:.2f} ms{which} > {lat_limit:.2f} ms = the "
                     f"{budget.latency_ms:g} ms budget less the {budget.noise_margin_pct:g}% noise margin")
    if mem_limit is not None and (m.memory_mb is None or m.memory_mb > mem_limit):
        parts.append(f"measured {m.memory_mb} MiB > {mem_limit:.1f} MiB (budget less the noise margin)")
    return f"φ={m.phi:g}: " + ("; ".join(parts) or "measured within the limits")


def _record(ctx: FitContext, chosen: int, measurements: list[Measurement], final: Measurement | None,
            extra: dict) -> dict:
    tgt, family, precision, threads, archs = ctx.target, ctx.family, ctx.precision, ctx.threads, ctx.archs
    result, predictor, budget, num_classes = ctx.result, ctx.predictor, ctx.budget, ctx.num_classes
    scale = archs[chosen].scale
    cost = scale_cost(family, scale, num_classes)
    pred = predictor.predict(cost, family)
    frontier = {c.index: c.to_dict() for c in result.frontier}
    for m in (m for m in measurements if m.index < result.architectures):  # per-dimension rungs: search.per_dimension
        frontier[m.index] = {**result.evaluate(m.index).to_dict(), "measured_ms": m.latency_ms,
                             "measured_fits": m.fits}
    measured = None if final is None else {
        "latency_ms": final.latency_ms, "latency_ms_p90": final.latency_ms_p90, "latency_ms_p99": final.latency_ms_p99,
        "memory_mb": final.memory_mb, "device": ctx.measured_on[chosen].device, "threads": threads,
        "method": f"{ctx.measured_on[chosen].method}; fits judged on the slowest round's p50",
        "latency_ms_worst_round": final.latency_ms_worst_round,
        "when": ctx.measured_on[chosen].when, "repeats": final.repeats, **_agent_fields(ctx, chosen)}
    nxt = next((m for m in measurements if m.index == chosen + 1), None)
    reason = (_measured_rejection(nxt, budget) if nxt is not None else
              f"φ={archs[chosen + 1].phi:g}: {ctx.loop_notes[-1]}" if ctx.loop_notes and chosen + 1 < len(archs) else
              result.reason_next_rejected)
    if chosen + 1 >= len(archs):
        reason = "no larger architecture in the φ range"
    if ctx.per_dimension is not None:
        reason = f"per-dimension fill: {ctx.per_dimension['reason_next_rejected'] or 'no larger rung fits'}"
    named = ctx.search.named_scaling()
    opts = ctx.data
    weights = ctx.run.weights
    record = parse_record({
        "target": tgt.name, "family": family, "precision": precision,
        "phi": archs[chosen].phi, "phi_max": archs[chosen].phi_max,
        "depth_multiplier": round(scale.depth, 6), "width_multiplier": round(scale.width, 6),
        "resolution": scale.resolution, "params": cost.params, "macs": cost.macs,
        "scale": scale.to_dict(),
        "scaling": {**named.to_dict(), "base_resolution": ctx.search.compound_scaling().base_resolution},
        "num_classes": num_classes,
        "budget": {"latency_ms": budget.latency_ms, "memory_mb": budget.memory_mb, "percentile": budget.percentile,
                   "noise_margin_pct": budget.noise_margin_pct},
        "predicted": {"latency_ms": pred.latency_ms, "latency_ms_at_percentile": round(pred.latency_at(
            budget.percentile), 4), "memory_mb": pred.memory_mb, "provenance": pred.provenance,
            "heldout_error_pct": pred.heldout_error_pct, "profile": pred.profile, "method": pred.method,
            "note": pred.note, "error_case": pred.error_case},
        "measured": measured,
        "verified": {"latency": None, "memory": None, "accuracy": None},  # decided below, from the record
        "accuracy": extra["accuracy"],
        "int8": extra["int8"],
        "precisions": precision_table(tgt, precision, threads, cost, extra["run"], family,
                                      {"measured": measured, "accuracy": extra["accuracy"], "int8": extra["int8"]}),
        "training": extra["training"],
        "artifacts": {"onnx": "model.onnx", "report": "report.md", "plot": "latency_vs_phi.png",
                      **({"onnx_fp32": "model.fp32.onnx"} if precision == "int8" else {}),
                      **({"checkpoint": "checkpoint.pt"} if extra["training"] else {})},
        "frontier": [frontier[k] for k in sorted(frontier)],
        "measurements": [m.to_dict() | {"onnx": None} for m in measurements],
        "search": {"architectures": result.architectures, "margin_pct": result.margin_pct,
                   "memory_margin_pct": result.memory_margin_pct,
                   "predictor_choice_phi": result.chosen.phi, "reason_next_rejected": reason,
                   "seconds": result.seconds, "step_seconds": ctx.search_seconds, "mode": ctx.search.mode,
                   **({"per_dimension": ctx.per_dimension} if ctx.per_dimension is not None else {})},
        "parity": extra["parity"],
        "noise": extra["noise"],
        "family_choice": ctx.family_choice,
        "weights": ("trained on " + opts.data if extra["training"] else str(weights) if weights else
                    "deterministic initialisation (seed 0): the accuracy check covers export fidelity only"),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
    }, "fit.json")
    record.verified = judge_record(record).verified
    return record.to_json_dict()
