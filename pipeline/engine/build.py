"""``deploy build RUN_DIR``: turn a fit run's ONNX model into a TensorRT engine, here or on the device.

An engine only runs on the GPU model and TensorRT version it was built with, so it is
built where it will run:

* Here, when this machine can build for the run's target: TensorRT-RTX for the desktop
  ``rtx-*`` targets (its ahead-of-time build needs no GPU), or TensorRT with the target's
  own GPU present. The result is ``RUN_DIR/model.engine`` plus its sidecar
  ``model.engine.json`` (:mod:`pipeline.runtimes.tensorrt`).
* Otherwise, or with ``--on-device``: ``RUN_DIR/build_on_device.sh``, a POSIX shell script
  that needs nothing but the device's JetPack/TensorRT image. It runs ``trtexec`` (from
  ``/usr/src/tensorrt/bin`` or PATH) to build the engine with the target's precision,
  workspace limit and a timing cache, times it, and writes the timings as JSON
  (``--exportTimes``, read back by :func:`pipeline.engine.trtexec.record_trtexec_times`), a
  per-layer profile (``--exportProfile``), the log, and the engine's sidecar.

ONNX opset: each target declares the highest opset its TensorRT parses
(``max_onnx_opset``; 13 for the Jetson Nano's TensorRT 8.2). When the run's
``model.onnx`` is newer, the model is re-exported from the run (same architecture, the
run's weights) at that opset with the TorchScript exporter into
``model.opset<N>.onnx``, checked against torch *and* against ``model.onnx`` in ONNX
Runtime, and the engine is built from that file. A model that cannot be expressed at
that opset is an :class:`ExportError`.

The outcome is recorded in ``fit.json`` under ``engine`` (written atomically).
"""

from __future__ import annotations

import shlex
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import DeployError, ExportError, ModelInvalid, UsageError
from pipeline.measure.settings import TIMING

SCRIPT_NAME = "build_on_device.sh"
ENGINE_NAME = "model.engine"
TIMES_FILE = "trtexec_times.json"
PROFILE_FILE = "trtexec_profile.json"
LOG_FILE = "trtexec.log"
TIMING_CACHE_FILE = "timing.cache"
CALIBRATION_CACHE = "calibration.cache"
INT8_TRT_ONNX = "model.int8.trt.onnx"
# trtexec timing: --warmUp ms, then at least --iterations queries and --duration seconds.
TRTEXEC_TIMING = TIMING["trtexec"].trtexec()  # the trtexec row of the one settings table
# What the CUDA driver reports for each built-in GPU target: (compute capability, name pattern).
TARGET_GPUS = {
    "jetson-nano": ("5.3", "tegra x1|nano"),
    "jetson-orin-nano": ("8.7", "orin"),
    "jetson-agx-orin": ("8.7", "orin"),
    "rtx-3060": ("8.6", "3060"),
    "rtx-4090": ("8.9", "4090"),
}


# --- the ONNX model the target can parse ------------------------------------------------------------------------


def onnx_opset(path: str | Path) -> int:
    """The default-domain opset an ONNX file declares."""
    from pipeline.export.onnx import load_onnx_checked

    proto = load_onnx_checked(path)
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelInvalid(f"{path} declares no ai.onnx opset.")


def rebuild_model(run_dir: str | Path, fit: dict, num_classes: int, resolution: int | None = None):
    """The run's torch model: from its checkpoint, its weights file, or the deterministic initialisation (seed 0).

    Architecture from fit.json (``phi`` with the default compound constants when that
    reproduces the recorded multipliers, else the recorded depth/width/resolution);
    ``resolution`` (the ONNX input size) wins over the nominal one.
    """
    from pipeline.core.scaling import CompoundScaling, Scale
    from pipeline.models import build, initialize

    run_dir = Path(run_dir)
    ckpt = fit.get("checkpoint") or (run_dir / "checkpoint.pt" if (run_dir / "checkpoint.pt").is_file() else None)
    if ckpt:
        from pipeline.train.trainer import load_checkpoint

        model = load_checkpoint(ckpt).model()
        return model
    scale = None
    if isinstance(fit.get("scale"), dict):
        scale = Scale.from_dict(fit["scale"])
    elif fit.get("phi") is not None:
        s = CompoundScaling().compound(float(fit["phi"]))
        if (abs(s.depth - float(fit.get("depth_multiplier", s.depth))) < 1e-5
                and abs(s.width - float(fit.get("width_multiplier", s.width))) < 1e-5):
            scale = s
    if scale is None:
        try:
            scale = Scale(depth=float(fit["depth_multiplier"]), width=float(fit["width_multiplier"]),
                          resolution=int(fit["resolution"]))
        except (KeyError, TypeError, ValueError):
            raise DeployError(f"{run_dir}/fit.json lacks phi / depth_multiplier / width_multiplier / resolution; "
                              "cannot rebuild the model to re-export it.") from None
    if resolution and scale.resolution != resolution:
        scale = scale.with_resolution(int(resolution))
    model = initialize(build(fit["family"], scale, num_classes), seed=0)
    weights = fit.get("weights")
    if isinstance(weights, str) and weights and Path(weights).is_file():
        from pipeline.models.weights import load_weights

        load_weights(model, Path(weights), hint="(the run's weights do not fit its recorded architecture)")
    return model


def _ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    from pipeline.runtimes.onnxruntime import OnnxRuntime

    return OnnxRuntime(1).load(path).predict(x)


def onnx_for_target(run_dir: str | Path, fit: dict, target, source: str | Path | None = None,
                    log=lambda _: None) -> tuple[Path, dict]:
    """``(path, info)`` of an ONNX file of the run that the target's TensorRT can parse (opset <= max_onnx_opset).

    The run's ``model.onnx`` when its opset is low enough; otherwise a re-export at the
    target's opset (``model.opset<N>.onnx``), checked for parity against torch and against
    ``model.onnx`` in ONNX Runtime. Raises :class:`ExportError` when the model cannot be
    expressed at that opset or the re-export does not reproduce the run's model.
    """
    from pipeline.export.onnx import export_onnx, onnx_io, parity

    run_dir = Path(run_dir)
    src = Path(source) if source else run_dir / (fit.get("artifacts") or {}).get("onnx", "model.onnx")
    if not src.is_file():
        raise ModelInvalid(f"the run's ONNX model {src} does not exist.")
    opset, cap = onnx_opset(src), int(target.max_onnx_opset)
    if opset <= cap:
        return src, {"onnx": src.name, "opset": opset, "max_onnx_opset": cap, "reexported": False}
    from pipeline.runtimes.convert import is_quantized

    if is_quantized(src):
        raise ExportError(f"{src.name} is a quantized (QDQ) model at opset {opset}, above the {cap} that "
                          f"{target.name}'s TensorRT parses; quantize an opset-{cap} export instead "
                          f"(export_onnx(..., opset={cap}) then quantize_onnx).")
    log(f"{src.name} has ONNX opset {opset}; {target.name} parses at most {cap}: re-exporting at opset {cap}")
    input_name, shape, _ = onnx_io(src)
    num_classes = int(_ort_logits(src, np.zeros((1, *shape[1:]), np.float32)).shape[1])
    model = rebuild_model(run_dir, fit, num_classes, resolution=shape[-1] if isinstance(shape[-1], int) else None)
    dest = run_dir / f"{src.stem}.opset{cap}.onnx"
    dynamic = not (isinstance(shape[0], int) and shape[0] > 0)
    try:
        result = export_onnx(model, dest, opset=cap, dynamic_batch=dynamic, input_name=input_name,
                             resolution=shape[-1] if isinstance(shape[-1], int) else None)
    except ExportError as exc:
        raise ExportError(f"{fit['family']} cannot be exported at ONNX opset {cap}, the highest {target.name}'s "
                          f"TensorRT parses: {exc}") from None
    par = parity(model, dest, n=8, seed=0)
    if not par:
        dest.unlink(missing_ok=True)
        raise ExportError(f"the opset-{cap} export differs from PyTorch: {', '.join(par.failures)}.")
    x = np.random.default_rng(1).standard_normal((4, *shape[1:]), dtype=np.float32)
    a, b = _ort_logits(src, x), _ort_logits(dest, x)
    max_abs = float(np.abs(a - b).max())
    same_top1 = bool((a.argmax(1) == b.argmax(1)).all())
    if max_abs > 1e-3 or not same_top1:
        dest.unlink(missing_ok=True)
        raise ExportError(f"the model rebuilt for the opset-{cap} export does not reproduce {src.name} (max |Δlogit| "
                          f"{max_abs:.3g}); the run's weights are not available here. Re-run `deploy fit` with "
                          "--weights, or keep the checkpoint in the run directory.")
    return dest, {"onnx": dest.name, "opset": cap, "max_onnx_opset": cap, "reexported": True,
                  "source_onnx": src.name, "source_opset": opset, "exporter": result.exporter,
                  "sha256": result.sha256, "parity": {"torch": par.to_dict(),
                                                      "vs_source_max_abs": max_abs, "vs_source_top1": same_top1}}


# --- int8 inputs -------------------------------------------------------------------------------------------------


def is_trt_qdq(path: str | Path) -> bool:
    """A QDQ model TensorRT consumes: every QuantizeLinear has a zero (or no) int8 zero point (symmetric s8)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in proto.graph.initializer}
    consts = {o: n for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    qs = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    if not qs:
        return False
    for q in qs:
        if len(q.input) < 3 or not q.input[2]:
            continue  # no zero point: int8, zero
        name = q.input[2]
        if name in inits:
            zp = numpy_helper.to_array(inits[name])
        elif name in consts:
            zp = numpy_helper.to_array(next(a.t for a in consts[name].attribute if a.name == "value"))
        else:
            return False
        if zp.dtype != np.int8 or np.any(zp != 0):
            return False
    return True


def _int8_inputs(run_dir: Path, fit: dict) -> dict:
    """Where int8 comes from: an explicit QDQ model (symmetric s8/s8) or an fp32 model plus a calibration cache."""
    from pipeline.runtimes.convert import is_quantized

    artifacts = fit.get("artifacts") or {}
    qdq = artifacts.get("onnx_int8_tensorrt")
    model = run_dir / artifacts.get("onnx", "model.onnx")
    for cand in ([run_dir / qdq] if qdq else []) + [run_dir / INT8_TRT_ONNX]:
        if cand.is_file():
            return {"mode": "explicit", "onnx": cand}
    if model.is_file() and is_quantized(model) and is_trt_qdq(model):
        return {"mode": "explicit", "onnx": model}
    cache = run_dir / artifacts.get("calibration_cache", CALIBRATION_CACHE)
    fp32 = next((p for p in (run_dir / "model.fp32.onnx", model) if p.is_file() and not is_quantized(p)), None)
    if cache.is_file() and fp32 is not None:
        return {"mode": "calibration-cache", "onnx": fp32, "cache": cache}
    raise UsageError(
        f"int8 for TensorRT needs calibration, and {run_dir} has none: write a symmetric s8 QDQ model to "
        f"{run_dir / INT8_TRT_ONNX} (quantize_onnx(..., runtime='tensorrt')), or a TensorRT "
        f"calibration cache to {run_dir / CALIBRATION_CACHE} (make_entropy_calibrator) next to "
        "the fp32 model.")


# --- on-device script ----------------------------------------------------------------------------------------------


def trtexec_args(onnx: str, precision: str, workspace_mb: int, *, engine: str = ENGINE_NAME,
                 calibration_cache: str | None = None, timing: dict | None = None) -> list[str]:
    """trtexec's arguments (the workspace flag is chosen at run time by the script, see :func:`render_script`)."""
    t = {**TRTEXEC_TIMING, **(timing or {})}
    args = [f"--onnx={onnx}", f"--saveEngine={engine}"]
    if precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":
        args.append("--int8")
        if calibration_cache:
            args.append(f"--calib={calibration_cache}")
    args += [f"--timingCacheFile={TIMING_CACHE_FILE}",
             f"--warmUp={t['warmup_ms']}", f"--iterations={t['iterations']}", f"--duration={t['duration_s']}",
             f"--avgRuns={t['avg_runs']}", "--useSpinWait",
             f"--exportTimes={TIMES_FILE}", f"--exportProfile={PROFILE_FILE}", "--separateProfileRun"]
    return args


def render_script(*, target, precision: str, onnx: str, onnx_sha256: str, workspace_mb: int, run_name: str,
                  calibration_cache: str | None = None, timing: dict | None = None, reason: str = "") -> str:
    """The text of ``build_on_device.sh`` (POSIX sh; needs only trtexec, sed, date; sha256sum if present)."""
    from pipeline import __version__

    args = trtexec_args(onnx, precision, workspace_mb, calibration_cache=calibration_cache, timing=timing)
    t = {**TRTEXEC_TIMING, **(timing or {})}
    lines_args = " \\\n    ".join(shlex.quote(a) for a in args)
    files = [onnx] + ([calibration_cache] if calibration_cache else [])
    q = shlex.quote
    return f"""#!/bin/sh
# build_on_device.sh: generated by edgefit {__version__} on {datetime.now().astimezone().isoformat(timespec='seconds')}
# Run: {run_name}  target: {target.name} ({target.description})  precision: {precision}
{('# Why on the device: ' + reason) if reason else ''}
#
# Builds {ENGINE_NAME} ON THE DEVICE with trtexec and times it. Needs nothing but the
# JetPack/TensorRT image (trtexec, sh, sed, date): no Python packages, no edgefit.
#   1. copy this script and {', '.join(files)} to the device (one folder), then: sh {SCRIPT_NAME}
#   2. copy back {TIMES_FILE}, {LOG_FILE}, {PROFILE_FILE}, {ENGINE_NAME} and {ENGINE_NAME}.json, then run
#      deploy verify <run dir> --trtexec-times <run dir>/{TIMES_FILE}
# Timings: --exportTimes writes one record per inference; edgefit reads 'latencyMs'
# (H2D + GPU compute + D2H) and drops warm-up records (startComputeMs < {t['warmup_ms']} ms).
set -eu
cd "$(dirname "$0")"

ONNX={q(onnx)}
ONNX_SHA256={q(onnx_sha256)}
ENGINE={q(ENGINE_NAME)}

TRTEXEC="${{TRTEXEC:-}}"
if [ -z "$TRTEXEC" ]; then
    if [ -x /usr/src/tensorrt/bin/trtexec ]; then
        TRTEXEC=/usr/src/tensorrt/bin/trtexec
    elif command -v trtexec >/dev/null 2>&1; then
        TRTEXEC="$(command -v trtexec)"
    else
        echo "{SCRIPT_NAME}: trtexec not found in /usr/src/tensorrt/bin or on PATH; set TRTEXEC=/path/to/trtexec" >&2
        exit 127
    fi
fi
if [ ! -f "$ONNX" ]; then
    echo "{SCRIPT_NAME}: $ONNX is missing; copy it next to this script" >&2
    exit 1
fi
if command -v sha256sum >/dev/null 2>&1; then
    if [ "$(sha256sum "$ONNX" | cut -d ' ' -f 1)" != "$ONNX_SHA256" ]; then
        echo "{SCRIPT_NAME}: $ONNX is not the file edgefit wrote (sha256 differs); copy it again" >&2
        exit 1
    fi
fi

# The workspace limit ({workspace_mb} MiB, from the target file): TensorRT >= 8.4 takes --memPoolSize,
# TensorRT 8.2 (JetPack 4, Jetson Nano) only --workspace. Both are in MiB.
if "$TRTEXEC" --help 2>&1 | grep -q -e '--memPoolSize'; then
    WORKSPACE=--memPoolSize=workspace:{workspace_mb}
else
    WORKSPACE=--workspace={workspace_mb}
fi

echo "building $ENGINE from $ONNX with $TRTEXEC ({precision}, $WORKSPACE); log: {LOG_FILE}"
START=$(date +%s)
if ! "$TRTEXEC" \\
    {lines_args} \\
    "$WORKSPACE" > {LOG_FILE} 2>&1; then
    tail -n 30 {LOG_FILE} >&2
    echo "{SCRIPT_NAME}: trtexec failed; the full log is {LOG_FILE}" >&2
    exit 1
fi
END=$(date +%s)

TRT_VERSION=$(sed -n 's/.*TensorRT version: *\\([0-9.]*\\).*/\\1/p' {LOG_FILE} | head -n 1)
GPU_NAME=$(sed -n 's/.*Selected Device: *//p' {LOG_FILE} | head -n 1 | tr -d '"\\\\\\r')
GPU_CC=$(sed -n 's/.*Compute Capability: *\\([0-9.]*\\).*/\\1/p' {LOG_FILE} | head -n 1)
cat > "$ENGINE.json" <<EOF
{{
  "schema": 1,
  "runtime": "tensorrt",
  "tensorrt_version": "$TRT_VERSION",
  "gpu": {{"name": "$GPU_NAME", "compute_capability": "$GPU_CC"}},
  "built_without_gpu": false,
  "precision": "{precision}",
  "onnx": "$ONNX",
  "onnx_sha256": "$ONNX_SHA256",
  "build_seconds": $((END - START)),
  "build_seconds_includes_timing_run": true,
  "built_at": "$(date '+%Y-%m-%dT%H:%M:%S%z')",
  "built_by": "{SCRIPT_NAME} (trtexec)",
  "workspace_mb": {workspace_mb},
  "timing_cache": "{TIMING_CACHE_FILE}"
}}
EOF
echo "built $ENGINE with TensorRT $TRT_VERSION on $GPU_NAME (compute capability $GPU_CC) in $((END - START)) s"
echo "timings: {TIMES_FILE}; per-layer profile: {PROFILE_FILE}"
echo "next, on the machine with edgefit: deploy verify <run dir> --trtexec-times <run dir>/{TIMES_FILE}"
"""


def write_script(run_dir: str | Path, target, precision: str, onnx: Path, *, calibration_cache: Path | None = None,
                 timing: dict | None = None, reason: str = "") -> Path:
    from pipeline.core.io import atomic_write, sha256_file

    run_dir = Path(run_dir)
    text = render_script(target=target, precision=precision, onnx=onnx.name, onnx_sha256=sha256_file(onnx),
                         workspace_mb=int(target.trt_workspace_mb or 1024), run_name=run_dir.name,
                         calibration_cache=calibration_cache.name if calibration_cache else None, timing=timing,
                         reason=reason)
    path = atomic_write(run_dir / SCRIPT_NAME, text)
    path.chmod(0o755)
    return path


# --- choosing where to build ----------------------------------------------------------------------------------------


def gpu_matches_target(target, device: dict | None) -> bool:
    """Whether the visible GPU is the target's (compute capability and name), for the built-in GPU targets."""
    import re

    if device is None or target.name not in TARGET_GPUS:
        return False
    cc, pattern = TARGET_GPUS[target.name]
    return str(device.get("compute_capability")) == cc and re.search(pattern, str(device.get("name", "")),
                                                                     re.I) is not None


def local_builder(target, precision: str, int8_mode: str | None = None):
    """``(runtime, why)``: a TensorRT runtime that can build the target's engine here, or ``(None, why not)``."""
    from pipeline.runtimes.tensorrt import TensorRT

    reasons = []
    trt = TensorRT("tensorrt")
    ok, why = trt.can_build()
    if ok:
        dev = trt.device()
        if gpu_matches_target(target, dev):
            return trt, f"TensorRT {trt.version()} with the target's GPU ({dev['name']}) present"
        reasons.append(f"TensorRT is here but the GPU ({dev['name']}, {dev['compute_capability']}) is not "
                       f"{target.name}'s")
    else:
        reasons.append(why)
    if target.name.startswith("rtx-"):
        rtx = TensorRT("tensorrt-rtx")
        ok, why = rtx.can_build()
        if ok and int8_mode == "calibration-cache":
            reasons.append("TensorRT-RTX has no implicit INT8 calibration (needs a QDQ model)")
        elif ok:
            return rtx, f"TensorRT-RTX {rtx.version()} (ahead-of-time build, no GPU needed)"
        else:
            reasons.append(f"TensorRT-RTX: {why}")
    return None, "; ".join(reasons)


def build_run(run_dir: str | Path, precision: str | None = None, on_device: bool = False,
              targets_dir: str | Path | None = None, timing: dict | None = None, log=lambda _: None) -> dict:
    """Build the run's engine here, or write ``build_on_device.sh``; record the result in fit.json's ``engine``.

    Returns the ``engine`` record: ``status`` is ``"built"`` (with ``path``, ``sidecar``,
    runtime, version, layers, size, build time) or ``"script"`` (with ``script``, the ONNX
    it builds from and why it was not built here).
    """
    from pipeline.predict.targets import load_target
    from pipeline.record.rundir import read_record, write_record
    from pipeline.runtimes.tensorrt import read_sidecar

    run_dir = Path(run_dir)
    fit = read_record(run_dir).to_json_dict()  # validated; the helpers below read it as JSON
    target = load_target(fit["target"], targets_dir)
    if target.runtime != "tensorrt":
        raise UsageError(f"target '{target.name}' runs {target.runtime}, which runs the ONNX model directly: "
                         f"{run_dir / 'model.onnx'} is what gets deployed; there is no engine to build.")
    precision = target.check_precision(precision or fit["precision"])
    int8 = None
    if precision == "int8":
        int8 = _int8_inputs(run_dir, fit)
        source = int8["onnx"]
    else:
        fp32 = run_dir / "model.fp32.onnx"  # an int8 run keeps its fp32 export beside the quantized model.onnx
        source = fp32 if fp32.is_file() else None
    onnx, onnx_info = onnx_for_target(run_dir, fit, target, source=source, log=log)
    record: dict[str, Any] = {"precision": precision, "target": target.name, "onnx": onnx.name,
                              "onnx_opset": onnx_info["opset"], "max_onnx_opset": onnx_info["max_onnx_opset"],
                              "onnx_reexported": onnx_info["reexported"]}
    if onnx_info["reexported"]:
        record["onnx_export"] = {k: v for k, v in onnx_info.items() if k not in ("onnx", "opset", "max_onnx_opset",
                                                                                   "reexported")}
    if int8 is not None:
        record["int8"] = {"mode": int8["mode"], **({"calibration_cache": int8["cache"].name} if "cache" in int8
                                                     else {})}
    builder, why = (None, "--on-device was given") if on_device else local_builder(
        target, precision, int8["mode"] if int8 else None)
    if builder is not None:
        log(f"building {ENGINE_NAME} here with {why}")
        started = time.perf_counter()
        calibrator = None
        if int8 is not None and int8["mode"] == "calibration-cache":
            calibrator = _cache_only_calibrator(builder.flavour, int8["cache"])
        engine = builder.build(onnx, run_dir, precision, target, calibrator=calibrator)
        info = read_sidecar(engine)
        record.update({"status": "built", "path": engine.name, "sidecar": engine.name + ".json",
                       "runtime": info["runtime"], "tensorrt_version": info["tensorrt_version"],
                       "gpu": info.get("gpu"), "layers": info.get("layers"), "engine_bytes": info.get("engine_bytes"),
                       "build_seconds": info.get("build_seconds"), "why_here": why,
                       "seconds": round(time.perf_counter() - started, 3)})
        if info.get("compute_capabilities") or info.get("min_compute_capability"):
            record["runs_on_compute_capability"] = info.get("compute_capabilities") or \
                f">= {info['min_compute_capability']}"
    else:
        t = {**TRTEXEC_TIMING, **(timing or {})}
        cache = (int8 or {}).get("cache")
        workspace = int(target.trt_workspace_mb or 1024)
        script = write_script(run_dir, target, precision, onnx, calibration_cache=cache, timing=t, reason=why)
        log(f"wrote {script}: run it on the {target.name} ({why})")
        record.update({"status": "script", "script": script.name, "why_not_here": why,
                       "trtexec": {"args": trtexec_args(onnx.name, precision, workspace,
                                                        calibration_cache=cache.name if cache else None, timing=t),
                                   "workspace_mb": workspace, **t,
                                   "times_file": TIMES_FILE, "profile_file": PROFILE_FILE, "log_file": LOG_FILE},
                       "path": ENGINE_NAME, "sidecar": ENGINE_NAME + ".json"})
    record["when"] = datetime.now().astimezone().isoformat(timespec="seconds")
    run = read_record(run_dir)  # re-read: keep anything written meanwhile
    run.engine = record
    artifacts = run.artifacts.model_dump(exclude_unset=True)
    if record["status"] == "built":
        artifacts["engine"] = record["path"]
    else:
        artifacts["build_script"] = record["script"]
    if onnx_info["reexported"]:
        artifacts[f"onnx_opset{onnx_info['opset']}"] = onnx.name
    run.artifacts = artifacts
    write_record(run_dir, run)
    return record


def _cache_only_calibrator(flavour: str, cache: Path):
    """A calibrator that serves an existing calibration cache (TensorRT then needs no batches)."""
    from pipeline.export.quantize import make_entropy_calibrator

    return make_entropy_calibrator(np.zeros((1, 3, 8, 8), np.float32), cache, flavour=flavour, calibration_batches=0)


__all__ = ["CALIBRATION_CACHE", "ENGINE_NAME", "INT8_TRT_ONNX", "SCRIPT_NAME", "TIMES_FILE", "build_run",
           "gpu_matches_target", "is_trt_qdq", "local_builder", "onnx_for_target", "onnx_opset", "rebuild_model",
           "render_script", "trtexec_args", "write_script"]
