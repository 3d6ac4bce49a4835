"""What a finished run directory says about its model: the file, the preprocessing, the labels, the numbers.

A package is made from a ``deploy fit`` run (``fit.json``) or a ``deploy train`` run
(``train.json``); both must hold the ``model.onnx`` that was exported and checked. The
preprocessing and class names come from where ``deploy verify`` takes them, the run's
``checkpoint.pt``, so the package feeds the model exactly the tensor verification fed it. A run
that was never trained has no checkpoint: its preprocessing is the default one (ImageNet
mean/std, RGB, 8-bit) at the model's resolution, and the manifest says so.

The latency, memory and accuracy figures are copied from the run record with their provenance
(:func:`latency_entry`, :func:`memory_entry`, :func:`accuracy_entry`); nothing is re-measured or
re-predicted here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import DeployError
from pipeline.data.datasets import Preprocess

MODEL_NAME = "model.onnx"
TRAIN_JSON = "train.json"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class RunSource:
    """A run directory's model and everything a package says about it."""

    run_dir: Path
    kind: str  # "fit" or "train"
    model_path: Path
    precision: str  # of the model file: int8 (QDQ), fp16 (half weights) or fp32
    run_precision: str  # what the run targeted (a TensorRT fp16 run ships an fp32 ONNX)
    family: str
    scale: dict
    preprocess: Preprocess
    preprocess_source: str
    classes: tuple[str, ...] | None
    record: dict  # fit.json or train.json, as read


def read_run(run_dir: str | Path) -> RunSource:
    """The model and facts of a fit or train run; a :class:`DeployError` says what is missing."""
    from pipeline.record.rundir import fit_path, read_record

    run = Path(run_dir)
    if not run.is_dir():
        raise DeployError(f"run directory {run} does not exist (make one with `deploy fit --out {run}`).")
    model = run / MODEL_NAME
    if fit_path(run).is_file():
        record = read_record(run)
        kind, precision, family, scale = "fit", record.precision, record.family, record.scale.model_dump()
        data = record.to_json_dict()
        model = run / record.artifacts.onnx
    elif (run / TRAIN_JSON).is_file():
        data = _read_json(run / TRAIN_JSON)
        kind, precision, family, scale = "train", "fp32", str(data.get("family")), dict(data.get("scale") or {})
    else:
        raise DeployError(f"{run} is not a run directory: it has neither fit.json (`deploy fit`) nor "
                          f"{TRAIN_JSON} (`deploy train`).")
    if not model.is_file():
        hint = ("re-run `deploy fit`" if kind == "fit" else
                f"export and check it with `deploy verify {run} --data DATA`")
        raise DeployError(f"{run} has no model to package: {model.name} is missing; {hint}.")
    preprocess, source, classes = _preprocessing(run, kind, data, model)
    return RunSource(run_dir=run, kind=kind, model_path=model, precision=model_precision(model),
                     run_precision=precision, family=family, scale=scale, preprocess=preprocess,
                     preprocess_source=source, classes=classes, record=data)


def model_precision(model: Path) -> str:
    """The precision the ONNX file itself computes in: int8 (QDQ nodes), fp16 (half weights), else fp32.

    A GPU run at fp16 exports an fp32 ONNX and lets TensorRT build fp16, so the run's
    precision is not the file's; the package describes, and verify compares, the file.
    """
    import onnx

    from pipeline.runtimes.convert import QDQ_OPS

    proto = onnx.load(str(model), load_external_data=False)
    if any(n.op_type in QDQ_OPS for n in proto.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return "fp16"
    return "fp32"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeployError(f"{path} is unreadable or not JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise DeployError(f"{path} must hold a JSON object.")
    return data


def _preprocessing(run: Path, kind: str, data: dict, model: Path) -> tuple[Preprocess, str, tuple[str, ...] | None]:
    """(preprocess, where it came from, class names): the checkpoint's, as ``deploy verify`` uses them."""
    checkpoint = run / CHECKPOINT_NAME
    if checkpoint.is_file():
        from pipeline.train.trainer import load_checkpoint

        ck = load_checkpoint(checkpoint)
        dataset = (data.get("training") or data).get("dataset") or {}
        where = f" (trained on {dataset['name']})" if dataset.get("name") else ""
        return ck.preprocess, f"{CHECKPOINT_NAME}{where}: the preprocessing training and `deploy verify` used", \
            tuple(ck.classes)
    resolution = _input_resolution(model)
    note = ("default: the run was not trained, so the model expects ImageNet-normalised 8-bit RGB "
            f"at {resolution}×{resolution}")
    return Preprocess(resolution=resolution), note, None


def _input_resolution(model: Path) -> int:
    import onnx

    dims = onnx.load(str(model), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    values = [d.dim_value for d in dims]
    if len(values) != 4 or values[2] <= 0 or values[2] != values[3]:
        raise DeployError(f"{model} has input shape {values}; a package needs a static N×3×R×R image input.")
    return int(values[2])


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def latency_entry(src: RunSource) -> dict[str, Any]:
    """The run's latency with its provenance: measured (on which device, when, how) or predicted (with its error)."""
    rec = src.record
    if src.kind != "fit":
        return {"provenance": None, "note": "a train run has no target: nothing was measured or predicted; "
                                            "run `deploy fit` for a latency"}
    measured, budget = rec.get("measured"), rec["budget"]
    if measured:
        kind = "trtexec" if "source" in measured else "agent" if "agent" in measured else "host"
        entry = {"provenance": "measured", "p50_ms": measured["latency_ms"], "p90_ms": measured["latency_ms_p90"],
                 "p99_ms": measured["latency_ms_p99"], "device": measured["device"], "when": measured["when"],
                 "how": kind, "method": measured.get("method") or measured.get("source"),
                 "threads": measured.get("threads"), "of": f"{MODEL_NAME} of the run (sha256 in source.onnx_sha256)"}
        return entry | {"note": f"measured on the run's target ({rec['target']}), not on this package's platform"}
    pred = rec["predicted"]
    profile = pred.get("profile")
    return {"provenance": "predicted", "ms": pred.get("latency_ms_at_percentile", pred["latency_ms"]),
            "percentile": budget["percentile"], "error_pct": pred.get("heldout_error_pct"),
            "error_case": pred.get("error_case"), "profile": Path(profile).name if profile else None,
            "profile_provenance": pred.get("provenance"), "method": pred.get("method"), "note": pred.get("note")}


def memory_entry(src: RunSource) -> dict[str, Any]:
    """Peak memory with its provenance, as for latency."""
    if src.kind != "fit":
        return {"provenance": None, "note": "a train run has no target"}
    rec = src.record
    measured = rec.get("measured") or {}
    if measured.get("memory_mb") is not None:
        return {"provenance": "measured", "mb": measured["memory_mb"], "device": measured["device"],
                "when": measured["when"]}
    pred = rec["predicted"]
    return {"provenance": "predicted", "mb": pred.get("memory_mb"),
            "error_pct": (rec.get("search") or {}).get("memory_margin_pct"),
            "profile": Path(pred["profile"]).name if pred.get("profile") else None}


def accuracy_entry(src: RunSource) -> dict[str, Any] | None:
    """Top-1 of the ONNX model on the validation split, when the run checked it; else the checkpoint's, labelled."""
    rec = src.record
    if src.kind == "fit":
        acc = rec.get("accuracy")
        if not acc:
            return None
        return {"top1": _rounded(acc["onnx"]), "torch_top1": _rounded(acc["torch"]), "dataset": acc["dataset"],
                "samples": acc["samples"], "split": "validation", "model": MODEL_NAME, "passed": acc["passed"]}
    verify = src.run_dir / "verify.json"
    if verify.is_file():
        v = _read_json(verify)
        return {"top1": _rounded(v.get("onnx_top1")), "torch_top1": _rounded(v.get("torch_top1")),
                "dataset": v.get("dataset"), "samples": v.get("samples"), "split": "validation",
                "model": MODEL_NAME, "passed": v.get("passed")}
    if rec.get("val_accuracy") is not None:
        return {"top1": None, "torch_top1": _rounded(rec["val_accuracy"]),
                "dataset": (rec.get("dataset") or {}).get("name"), "split": "validation", "model": CHECKPOINT_NAME,
                "note": "the checkpoint's accuracy; the ONNX model was not verified (`deploy verify RUN --data D`)"}
    return None


__all__ = ["RunSource", "accuracy_entry", "latency_entry", "memory_entry", "read_run"]
