"""The weight-dependent steps of ``deploy fit``: train, export, quantize, verify accuracy.

Latency depends only on the architecture, so the search and the closed loop run on
deterministic weights; this module then gives the chosen architecture its real weights
(trained on ``--data``, or ``--weights``), exports it, quantizes it for ``int8``, and
checks accuracy against PyTorch (and INT8 against fp32) on the validation split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.fit.options import DataOptions, Int8Options

CANDIDATE_CALIBRATION = 16  # random images: enough to quantize a candidate whose *latency* is measured
WEIGHTS_HINT = ("Train this architecture or pass --phi-min/--phi-max so the search picks the one the weights "
                "are for.")


def num_classes_of(spec: str | None, default: int = 1000) -> int:
    if spec is None:
        return default
    from pipeline.data.datasets import load_dataset

    return len(load_dataset(spec).classes)


def quantize_candidate(fp32: Path, out: Path, method: str | None = None, family: str | None = None) -> Path:
    """INT8 copy of a candidate for timing only (random calibration; scales do not change speed).

    ``family`` applies its tuning (which ops stay float changes speed); ``method`` None: the family's.
    """
    from pipeline.export.quantize import quantize_onnx

    x = np.random.default_rng(0).standard_normal(_input_shape(fp32, CANDIDATE_CALIBRATION)).astype(np.float32)
    quantize_onnx(fp32, out, x, family=family, **({"method": method} if method else {}))
    return out


def _input_shape(path: Path, n: int) -> tuple[int, ...]:
    from pipeline.export.onnx import onnx_io

    _, shape, _ = onnx_io(path)
    return (n, *[int(d) for d in shape[1:]])


def weights_for(run: Path, family: str, scale, num_classes: int, weights, opts: DataOptions,
                log: Callable[[str], None], progress: Callable | None = None):
    """(model, preprocess or None, training record or None) for the chosen architecture."""
    from pipeline.models import build, initialize

    if opts.data and opts.train_epochs:
        from pipeline.core.io import write_json
        from pipeline.train.trainer import TRAIN_JSON, TrainOptions, load_checkpoint, train

        log(f"training the chosen architecture on {opts.data} for {opts.train_epochs} epochs")
        # at the searched resolution: the latency that was measured is the latency of this input size
        options = TrainOptions(epochs=opts.train_epochs, teacher=opts.teacher, init_from=opts.init_from,
                               resolution=scale.resolution)
        if opts.nproc > 1:
            from pipeline.train.distributed import launch

            done = launch(family, scale, opts.data, out_dir=run, options=options, nproc=opts.nproc, log=log)
        else:
            done = train(family, scale, opts.data, out_dir=run, log=log, options=options, progress=progress).to_dict()
        ckpt = load_checkpoint(done["checkpoint"])
        record = done | {"checkpoint": Path(done["checkpoint"]).name}
        # the run is built in a temporary folder that is renamed into place: keep train.json's path run-relative
        write_json(run / TRAIN_JSON, record)
        return ckpt.model(), ckpt.preprocess, record
    model = initialize(build(family, scale, num_classes), seed=0)
    if weights is not None:
        from pipeline.models.weights import load_weights

        load_weights(model, weights, hint=WEIGHTS_HINT)
    return model, None, None


def default_preprocess(spec: str, resolution: int):
    from pipeline.data.datasets import load_dataset

    return load_dataset(spec).default_preprocess(resolution)


def make_int8(run: Path, fp32: Path, resolution: int, preprocess, data: DataOptions, opts: Int8Options,
              trained: bool, log: Callable[[str], None], family: str | None = None) -> dict:
    """Quantize ``fp32`` into ``run/model.onnx`` with the run's calibration set, and gate its accuracy."""
    from pipeline.export.quantize import (
        calibration_batches,
        int8_accuracy_gate,
        layer_sensitivity,
        quantize_onnx,
        validation_set,
    )

    spec = opts.calibration_spec(data)
    pp = preprocess or default_preprocess(spec, resolution)
    calib = calibration_batches(spec, pp, opts.calibration_samples)
    method = {"method": opts.calibration_method} if opts.calibration_method else {}
    q = quantize_onnx(fp32, run / "model.onnx", calib, exclude_nodes=opts.exclude, family=family, **method)
    x, y = validation_set(spec, pp)
    gate = int8_accuracy_gate(fp32, run / "model.onnx", x, y if trained else None, opts.max_drop_pp,
                              raise_on_failure=False)
    record = {"quantization": q.to_dict(), "gate": gate.to_dict(), "calibration_data": spec, "sensitivity": None,
              "gated": trained}
    if not trained:
        # untrained logits are near-ties, so top-1 agreement says nothing about quantization error
        log(f"int8 not accuracy-gated: the model has no trained weights (agreement with fp32 "
            f"{100 * gate.agreement:.1f}%); pass --data and --train-epochs to gate it")
        return record
    log(gate.summary())
    if not gate and not q.per_channel:
        # the family's tuning chose per-tensor weights for speed; per-channel is the accurate fallback
        log("int8 gate failed with per-tensor weights: quantizing again with per-channel weights")
        q = quantize_onnx(fp32, run / "model.onnx", calib, exclude_nodes=opts.exclude, family=family,
                          per_channel=True, **method)
        gate = int8_accuracy_gate(fp32, run / "model.onnx", x, y, opts.max_drop_pp, raise_on_failure=False)
        record.update(quantization=q.to_dict(), gate=gate.to_dict(), per_tensor_gate=record["gate"])
        log(gate.summary())
    if not gate:
        sens = layer_sensitivity(fp32, calib, x, y if trained else None, max_layers=12)
        record["sensitivity"] = [layer.to_dict() for layer in sens.top(5)]
        log("layers causing most of the INT8 error: " + ", ".join(layer.node for layer in sens.top(5))
            + " (exclude them with --int8-exclude)")
    return record


def verify_accuracy_step(run: Path, opts: DataOptions, precision: str, threads: int) -> dict | None:
    """torch vs ONNX accuracy on the validation split (needs a trained checkpoint in ``run``)."""
    if not (opts.data and opts.train_epochs):
        return None
    from pipeline.train.verify import verify_accuracy

    rep = verify_accuracy(run, opts.data, precision=precision, onnx_path=run / "model.onnx", threads=threads)
    return {"torch": rep.torch_top1, "onnx": rep.onnx_top1, "agreement": rep.agreement, "dataset": rep.dataset,
            "samples": rep.samples, "max_abs_logit_diff": rep.max_abs_logit_diff, "passed": rep.passed,
            "failures": list(rep.failures), "min_accuracy": opts.min_accuracy}


def precision_table(tgt, precision: str, threads: int, cost, run: Path, family: str, outcome: dict) -> list[dict]:
    """One row per precision (fp32, fp16, int8): latency with its provenance, size, accuracy.

    The run's own precision uses its measurement when there is one; the others are predicted
    from the target's profile for that precision, and say so. A precision without a profile, or
    that the target cannot run, gets ``latency_ms: null`` and the reason, never a guess.
    """
    from pipeline.core.errors import DeployError
    from pipeline.predict.predictor import load_predictor

    measured, accuracy, int8 = outcome["measured"], outcome["accuracy"], outcome["int8"]
    rows = []
    for p in ("fp32", "fp16", "int8"):
        row: dict = {"precision": p, "latency_ms": None, "latency_source": None, "size_mb": None,
                     "size_source": None, "accuracy": None}
        if p == precision and measured is not None:
            row.update(latency_ms=measured["latency_ms"], latency_source=f"measured on {measured['device']}")
        elif p not in tgt.precisions:
            row["latency_source"] = f"{tgt.name} does not run {p}"
        else:
            try:
                pred = load_predictor(tgt, p, threads).predict(cost, family)
                err = ("unknown" if pred.heldout_error_pct is None
                       else f"±{pred.heldout_error_pct:g}% ({pred.error_case})")
                row.update(latency_ms=pred.latency_ms, latency_source=f"predicted ({pred.provenance} profile, "
                           f"held-out error {err})")
            except DeployError as exc:  # no profile for this precision: say so, do not guess
                row["latency_source"] = f"not predicted: {exc}"
        # model.onnx holds fp32 weights for fp16 runs (TensorRT converts at build time): no fp16 file to size
        file = run / ("model.onnx" if p == precision else "model.fp32.onnx" if p == "fp32" else "")
        if file.is_file() and p != "fp16":
            row.update(size_mb=round(file.stat().st_size / 2**20, 3), size_source=file.name)
        else:
            row.update(size_mb=round(cost.weight_bytes[p] / 2**20, 3), size_source="weights only (estimate)")
        if p == precision and accuracy is not None:
            row["accuracy"] = accuracy["onnx"]
        if int8 is not None and int8.get("gated"):
            row["accuracy"] = {"fp32": int8["gate"]["fp32_accuracy"], "int8": int8["gate"]["int8_accuracy"]}.get(
                p, row["accuracy"])
        rows.append(row)
    return rows
