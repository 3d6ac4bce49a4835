"""``deploy fit``: one line per step — predict, search, export, measure, verify, report.

Everything is written into a temporary sibling of the run directory and moved into
place only at the end, so a failed run never leaves a half-written directory nor destroys
an earlier good one (``--force`` replaces it only once the new run is complete).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pipeline.core.errors import (
    BackendUnavailable,
    DeployError,
    ModelInvalid,
    ProfileMissing,
    UsageError,
    VerificationFailed,
)
from pipeline.cost.trace import scale_cost
from pipeline.fit.search import DEFAULT_PHI_RANGE, Budget, enumerate_architectures, search
from pipeline.fit.steps import (
    DataOptions,
    make_int8,
    num_classes_of,
    precision_table,
    quantize_candidate,
    verify_accuracy_step,
    weights_for,
)
from pipeline.measure.loop import Measurement, closed_loop, measured_fits, measured_limits, remove_unchosen
from pipeline.record.rundir import parse_record, write_record
from pipeline.record.verdict import judge_record

PERCENTILES = (50, 90, 99)
UNKNOWN_ERROR_MARGIN_PCT = 25.0  # margin when a profile cannot say how wrong it is
TIMING = {"warmup": 10, "min_repeats": 20, "min_time_s": 0.5, "rounds": 3}  # per round


def _run_dir(out: str | Path | None, target: str, force: bool) -> Path:
    path = Path(out) if out else Path("runs") / f"{target}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
        raise DeployError(f"{path} exists and is not empty; pass --force to replace it (only once the new run "
                          "succeeds), or choose another --out.")
    return path


def _publish(tmp: Path, final: Path) -> None:
    """Move the finished run into place; an earlier run there is removed only after that."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _predictor(target, precision: str, threads: int | None, log: Callable[[str], None], progress):
    from pipeline.fit.calibrate import calibrate
    from pipeline.predict.predictor import load_predictor

    try:
        return load_predictor(target, precision, threads)
    except ProfileMissing:
        if not target.measurable:
            raise
        log(f"no {precision} profile for this machine at {threads} threads: calibrating first with the quick "
            "suite (about a minute for fp32, two for int8; run `deploy calibrate --target host` for the full one).")
        calibrate(target, precision, threads, quick=True, progress=progress)
        return load_predictor(target, precision, threads)


def _load_weights(model, weights: str | Path) -> None:
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ModelInvalid(f"cannot read weights {weights}: {exc}") from None
    state = state.get("state_dict", state.get("weights", state)) if isinstance(state, dict) else state
    mine = model.state_dict()
    bad = [k for k, v in state.items() if k not in mine or mine[k].shape != v.shape]
    missing = [k for k in mine if k not in state]
    if bad or missing:
        raise ModelInvalid(f"weights {weights} do not match the chosen architecture: {len(bad)} mismatched and "
                           f"{len(missing)} missing tensors (e.g. {(bad or missing)[0]}). Train this architecture "
                           "or pass --phi-min/--phi-max so the search picks the one the weights are for.")
    model.load_state_dict(state)


def fit(target: str, latency: float | None = None, memory: float | None = None, family: str = "efficientnet",
        precision: str | None = None, percentile: int = 50, phi_min: float | None = None,
        phi_max: float | None = None, out: str | Path | None = None, force: bool = False,
        threads: int | None = None, weights: str | Path | None = None, dynamic_batch: bool = False,
        agent: str | None = None, targets_dir: str | Path | None = None, num_classes: int | None = None,
        data: DataOptions | None = None, log: Callable[[str], None] = lambda _: None, progress=None,
        noise_margin_pct: float = 2.0) -> dict:
    """Search, export, measure (when the target is measurable) and report. Returns fit.json's object."""
    from pipeline.models import check_family
    from pipeline.predict.targets import load_target

    started = time.perf_counter()
    if latency is None and memory is None:
        raise UsageError("give at least one budget: --latency (e.g. 20ms) and/or --memory (e.g. 256MB).")
    if not 0 <= noise_margin_pct < 50:
        raise UsageError(f"--noise-margin must be in [0, 50) percent, not {noise_margin_pct:g}.")
    if percentile not in PERCENTILES:
        raise UsageError(f"--percentile must be one of {', '.join(map(str, PERCENTILES))}.")
    if agent is not None:
        raise BackendUnavailable("the measurement agent (--agent) is not available yet; fit on 'host' or predict.")
    check_family(family)
    tgt = load_target(target, targets_dir)
    precision = tgt.check_precision(precision)
    opts = data or DataOptions()
    if opts.train_epochs and not opts.data:
        raise UsageError("--train-epochs needs --data (a labelled set to train on).")
    if opts.min_accuracy is not None and not (opts.data and opts.train_epochs):
        raise UsageError("--min-accuracy needs --data and --train-epochs: only a trained model has an accuracy.")
    num_classes = num_classes or num_classes_of(opts.data)
    threads = threads or tgt.threads
    run_dir = _run_dir(out, tgt.name, force)
    lo, hi = (DEFAULT_PHI_RANGE[0] if phi_min is None else phi_min), (DEFAULT_PHI_RANGE[1] if phi_max is None
                                                                        else phi_max)
    predictor = _predictor(tgt, precision, threads, log, progress)
    budget = Budget(latency, memory, percentile, noise_margin_pct)
    margin = predictor.heldout_error_pct if predictor.heldout_error_pct is not None else UNKNOWN_ERROR_MARGIN_PCT
    archs = enumerate_architectures(family, lo, hi)

    def predict_arch(i: int) -> tuple[float, float]:
        p = predictor.predict(scale_cost(family, archs[i].scale, num_classes))
        return p.latency_at(percentile), p.memory_mb

    index = {id(a): i for i, a in enumerate(archs)}
    result = search(archs, lambda a: predict_arch(index[id(a)]), budget, margin, tgt.memory_mb, num_classes)
    log(f"search: {result.architectures} distinct architectures in φ∈[{lo:g}, {hi:g}]; predictor picks "
        f"φ={result.chosen.phi:g} ({result.chosen.latency_ms:.2f} ms predicted, margin {margin:.1f}%)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.tmp-", dir=run_dir.parent if run_dir.parent.exists()
                                else None))
    try:
        record = _finish(tgt, family, precision, threads, archs, result, predictor, predict_arch, budget, tmp,
                         weights, dynamic_batch, num_classes, opts, log)
        record["search"]["seconds_total"] = round(time.perf_counter() - started, 2)
        record = _relative_paths(record, tmp)
        _write_json(tmp / "fit.json", record)
        from pipeline.fit.report import write_report

        write_report(record, tmp)
        _publish(tmp, run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    judgement = judge_record(parse_record(record, run_dir / "fit.json"))  # the verdicts written into fit.json
    record["run_dir"] = str(run_dir)
    judgement.raise_if_failed(see=run_dir / "report.md")
    return record


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


def _finish(tgt, family, precision, threads, archs, result, predictor, predict_arch, budget, run: Path,
            weights, dynamic_batch, num_classes, opts: DataOptions, log) -> dict:
    from pipeline.export.onnx import DEFAULT_OPSET, export_onnx, parity
    from pipeline.models import build, initialize

    opset = min(DEFAULT_OPSET, tgt.max_onnx_opset)  # what the target's runtime can parse

    def candidate(i: int) -> Path:
        """The file that would ship for architecture i with deterministic weights (int8: quantized)."""
        model = initialize(build(family, archs[i].scale, num_classes), seed=0)
        if weights is not None:
            _load_weights(model, weights)
        path = run / f"candidate-{i}.onnx"
        export_onnx(model, path, dynamic_batch=dynamic_batch, opset=opset)
        if precision == "int8":
            quantize_candidate(path, path, opts.calibration_method)
        return path

    def measure(i: int, path: Path | None = None) -> Measurement:
        return _measure_file(path or candidate(i), i, archs[i], predict_arch(i)[0], threads, budget)

    measurements: list[Measurement] = []
    chosen = result.chosen.index
    if tgt.measurable:
        chosen, measurements = closed_loop(len(archs), chosen, predict_arch, measure, budget, log)
        remove_unchosen(measurements, chosen)
    model, preprocess, training = weights_for(run, family, archs[chosen].scale, num_classes, weights, opts, log)
    fp32 = run / ("model.fp32.onnx" if precision == "int8" else "model.onnx")
    export_onnx(model, fp32, dynamic_batch=dynamic_batch, opset=opset)
    par = parity(model, fp32, n=8, precision="fp32")
    if not par:
        raise VerificationFailed(f"exported ONNX differs from PyTorch: {', '.join(par.failures)}.")
    int8 = None
    if precision == "int8":
        int8 = make_int8(run, fp32, archs[chosen].scale.resolution, preprocess, opts, training is not None, log)
    final = next((m for m in measurements if m.index == chosen), None)
    if final is not None:
        shipped, timed = run / "model.onnx", Path(final.onnx)
        if shipped.read_bytes() != timed.read_bytes():  # trained or recalibrated: time the file that ships
            final = measure(chosen, shipped)
            log(f"re-measured the shipped model: p{budget.percentile} {final.latency_at(budget.percentile):.2f} ms")
        timed.unlink(missing_ok=True)
    accuracy = verify_accuracy_step(run, opts, precision, threads)
    return _record(tgt, family, precision, threads, archs, result, predictor, budget, chosen, measurements, final,
                   {"parity": par.to_dict(), "weights": weights, "num_classes": num_classes, "int8": int8,
                    "training": training, "accuracy": accuracy, "opts": opts, "run": run})


def _measure_file(path: Path, i: int, arch, predicted: float, threads: int, budget: Budget) -> Measurement:
    from pipeline.measure.timing import peak_memory_onnx, time_onnx

    t = time_onnx(path, threads=threads, **TIMING)
    mem = peak_memory_onnx(path, threads=threads).peak_mb
    # p50 budgets are judged on the slowest round: what a re-timing a moment later may well see
    stat = {50: t.worst_round_p50_ms, 90: t.p90_ms, 99: t.p99_ms}[budget.percentile]
    return Measurement(i, arch.phi, arch.scale.resolution, round(predicted, 4), round(t.p50_ms, 4),
                       round(t.p90_ms, 4), round(t.p99_ms, 4), round(mem, 2), t.n, threads,
                       measured_fits(stat, mem, budget), round(100 * (t.p50_ms / predicted - 1), 2), str(path),
                       round(t.worst_round_p50_ms, 4))


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


def _record(tgt, family, precision, threads, archs, result, predictor, budget, chosen, measurements,
            final: Measurement | None, extra: dict) -> dict:
    from pipeline.predict.targets import host_machine

    scale, num_classes = archs[chosen].scale, extra["num_classes"]
    cost = scale_cost(family, scale, num_classes)
    pred = predictor.predict(cost)
    frontier = {c.index: c.to_dict() for c in result.frontier}
    for m in measurements:
        frontier[m.index] = {**result.evaluate(m.index).to_dict(), "measured_ms": m.latency_ms,
                             "measured_fits": m.fits}
    measured = None if final is None else {
        "latency_ms": final.latency_ms, "latency_ms_p90": final.latency_ms_p90, "latency_ms_p99": final.latency_ms_p99,
        "memory_mb": final.memory_mb, "device": f"{tgt.name}: {host_machine()['cpu_model']}", "threads": threads,
        "method": f"ONNX Runtime, {TIMING['warmup']} warm-up, then {TIMING['rounds']} rounds of "
                  f"≥{TIMING['min_repeats']} runs and ≥{TIMING['min_time_s']}s; fits judged on the slowest round's p50",
        "latency_ms_worst_round": final.latency_ms_worst_round,
        "when": datetime.now().astimezone().isoformat(timespec="seconds"), "repeats": final.repeats}
    nxt = next((m for m in measurements if m.index == chosen + 1), None)
    reason = _measured_rejection(nxt, budget) if nxt is not None else result.reason_next_rejected
    if chosen + 1 >= len(archs):
        reason = "no larger architecture in the φ range"
    opts: DataOptions = extra["opts"]
    weights = extra["weights"]
    record = parse_record({
        "target": tgt.name, "family": family, "precision": precision,
        "phi": archs[chosen].phi, "phi_max": archs[chosen].phi_max,
        "depth_multiplier": round(scale.depth, 6), "width_multiplier": round(scale.width, 6),
        "resolution": scale.resolution, "params": cost.params, "macs": cost.macs,
        "scale": scale.to_dict(), "num_classes": num_classes,
        "budget": {"latency_ms": budget.latency_ms, "memory_mb": budget.memory_mb, "percentile": budget.percentile,
                   "noise_margin_pct": budget.noise_margin_pct},
        "predicted": {"latency_ms": pred.latency_ms, "latency_ms_at_percentile": round(pred.latency_at(
            budget.percentile), 4), "memory_mb": pred.memory_mb, "provenance": pred.provenance,
            "heldout_error_pct": pred.heldout_error_pct, "profile": pred.profile, "method": pred.method,
            "note": pred.note},
        "measured": measured,
        "verified": {"latency": None, "memory": None, "accuracy": None},  # decided below, from the record
        "accuracy": extra["accuracy"],
        "int8": extra["int8"],
        "precisions": precision_table(tgt, family, scale, num_classes, threads, precision, extra["run"], measured,
                                      extra["accuracy"], extra["int8"]),
        "training": extra["training"],
        "artifacts": {"onnx": "model.onnx", "report": "report.md", "plot": "latency_vs_phi.png",
                      **({"onnx_fp32": "model.fp32.onnx"} if precision == "int8" else {}),
                      **({"checkpoint": "checkpoint.pt"} if extra["training"] else {})},
        "frontier": [frontier[k] for k in sorted(frontier)],
        "measurements": [m.to_dict() | {"onnx": None} for m in measurements],
        "search": {"architectures": result.architectures, "margin_pct": result.margin_pct,
                   "predictor_choice_phi": result.chosen.phi, "reason_next_rejected": reason,
                   "seconds": result.seconds},
        "parity": extra["parity"],
        "weights": ("trained on " + opts.data if extra["training"] else str(weights) if weights else
                    "deterministic initialisation (seed 0): the accuracy check covers export fidelity only"),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
    }, "fit.json")
    record.verified = judge_record(record).verified
    return record.to_json_dict()
