"""Accuracy verification: the exported ONNX model must keep the accuracy of the PyTorch model.

:func:`verify_accuracy` runs the validation split of a labelled dataset through the
checkpoint's PyTorch model and through its ONNX export in ONNX Runtime (the same
:class:`~pipeline.data.datasets.Preprocess` for both, taken from the checkpoint), and compares:
top-1 of each, the drop in percentage points, the top-1 agreement between them, and the
largest absolute logit difference. The result is a :class:`VerifyReport`, truthy when it
passes, saved as ``verify.json`` next to the model.

Run directory: ``checkpoint.pt`` (from ``deploy train``), optionally ``model.onnx``. When
there is no ONNX file the checkpoint is exported to ``model.onnx`` first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.compare import TOLERANCES, compare_accuracy, tolerance
from pipeline.core.errors import ModelInvalid, UsageError
from pipeline.data.datasets import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, LabelledData, batches, load_dataset

ONNX_NAME = "model.onnx"
VERIFY_JSON = "verify.json"
BATCH_SIZE = 128  # validation images per forward pass (memory only: results do not depend on it)

# The accuracy columns of the one tolerance table (pipeline.core.compare.TOLERANCES), per precision.
ACCURACY_THRESHOLDS: dict[str, dict[str, float]] = {
    p: {"max_drop_pp": t.max_drop_pp, "min_agreement": t.min_agreement} for p, t in TOLERANCES.items()}


@dataclass(frozen=True)
class VerifyReport:
    """torch vs ONNX Runtime accuracy on one validation split. Truthy when every threshold holds."""

    dataset: str
    samples: int
    torch_top1: float
    onnx_top1: float
    drop_pp: float
    agreement: float
    max_abs_logit_diff: float
    thresholds: dict
    passed: bool
    failures: tuple[str, ...] = ()
    precision: str = "fp32"
    onnx: str = ""
    checkpoint: str = ""
    checkpoint_val_accuracy: float | None = None
    split: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failures"] = list(self.failures)
        return d

    def save(self, path: str | Path) -> Path:
        from pipeline.core.io import write_json

        return write_json(path, self.to_dict())

    def raise_for_failure(self) -> None:
        """Raise :class:`VerificationFailed` (exit 4) naming each failing number and its threshold.

        The pass/fail verdict and the exit-4 decision are :mod:`pipeline.record.verdict`'s.
        """
        from pipeline.record.verdict import Verdict, raise_if_failed

        raise_if_failed(Verdict(self.passed, "; ".join(self.failures) or None),
                        context=f"accuracy verification failed on {self.dataset}: ")


def _locate(run: str | Path, onnx_path: str | Path | None) -> tuple[Path, Path]:
    """(checkpoint, onnx) for a run directory, or a checkpoint file (the ONNX goes beside it)."""
    from pipeline.train.trainer import resolve_checkpoint

    ckpt = resolve_checkpoint(run)
    onnx = Path(onnx_path) if onnx_path is not None else ckpt.parent / ONNX_NAME
    return ckpt, onnx


class _OnnxClassifier:
    """An ORT session over a fixed- or dynamic-batch classifier; checks the input shape once."""

    def __init__(self, onnx: Path, threads: int, image_shape: tuple[int, ...]):
        from pipeline.runtimes.onnxruntime import ort_session

        self.path = onnx
        self.sess = ort_session(onnx, threads)
        self.inp, self.out = self.sess.get_inputs()[0], self.sess.get_outputs()[0].name
        shape = list(self.inp.shape)
        if len(shape) != 4 or list(shape[1:]) != list(image_shape):
            raise ModelInvalid(f"{onnx} expects input {shape} but the checkpoint's preprocessing gives "
                               f"{['N', *image_shape]}; re-export it from the checkpoint (delete {onnx}).")
        self.fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.fixed is None:
            return np.asarray(self.sess.run([self.out], {self.inp.name: x})[0], np.float32)
        step, outs = self.fixed, []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            n = len(chunk)
            if n < step:  # pad the last chunk of a fixed batch; drop the padding's outputs
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)])
            outs.append(np.asarray(self.sess.run([self.out], {self.inp.name: chunk})[0][:n], np.float32))
        return np.concatenate(outs)


def verify_accuracy(
    run: str | Path,
    data: str | Path | LabelledData | None = None,
    *,
    precision: str = "fp32",
    onnx_path: str | Path | None = None,
    threads: int = 2,
    save: bool = True,
    **limits: float | None,
) -> VerifyReport:
    """Compare torch and ONNX Runtime top-1 on the validation split; save ``verify.json``.

    ``run`` is a run directory (``checkpoint.pt``, optionally ``model.onnx``) or a
    checkpoint file. ``data`` defaults to the dataset recorded in the checkpoint; the
    split is the checkpoint's (its ``val_fraction`` and seed), so the numbers are on data the
    model did not train on. A missing ONNX file is exported (fp32) first. ``limits``
    (``max_drop_pp``, ``min_agreement``) override the tolerance table's entries for
    ``precision`` (:data:`pipeline.core.compare.TOLERANCES`). Returns the
    report whether or not it passes (call :meth:`VerifyReport.raise_for_failure` to turn a
    failure into exit code 4).
    """
    import torch

    from pipeline.export.onnx import export_onnx
    from pipeline.record.verdict import comparison_verdict
    from pipeline.train.trainer import load_checkpoint

    tol = tolerance(precision, **limits)
    thresholds = {"max_drop_pp": tol.max_drop_pp, "min_agreement": tol.min_agreement}

    ckpt_path, onnx = _locate(run, onnx_path)
    ckpt = load_checkpoint(ckpt_path)
    recorded = ckpt.meta.get("dataset") or {}
    if data is None:
        if not recorded.get("name"):
            raise UsageError(f"checkpoint {ckpt_path} records no dataset; pass data=.")
        data = recorded["name"]
    dataset = data if isinstance(data, LabelledData) else load_dataset(data)
    if tuple(ckpt.classes) != dataset.classes:
        raise ModelInvalid(f"checkpoint {ckpt_path} was trained on classes {list(ckpt.classes)[:10]} but dataset "
                           f"{dataset.name} has {list(dataset.classes)[:10]}.")
    rsplit = recorded.get("split") or {}
    vf = rsplit.get("val_fraction", DEFAULT_VAL_FRACTION)
    ss = rsplit.get("seed", DEFAULT_SPLIT_SEED)
    split = dataset.split(vf, ss)

    model = ckpt.model()
    if not onnx.is_file():
        export_onnx(model, onnx, resolution=ckpt.preprocess.resolution)

    pp = ckpt.preprocess
    runner = _OnnxClassifier(onnx, threads, (3, pp.resolution, pp.resolution))
    ref_parts, got_parts = [], []
    with torch.no_grad():  # one preprocessing per batch, fed to both runtimes
        for _, x, _ in batches(dataset, split.val, pp, BATCH_SIZE):
            ref_parts.append(model(x).float().numpy())
            got_parts.append(runner(x.numpy()))
    ref, got = np.concatenate(ref_parts), np.concatenate(got_parts)
    if ref.shape != got.shape:
        raise ModelInvalid(f"torch gives logits of shape {ref.shape} but {onnx} gives {got.shape}.")
    labels = dataset.labels[split.val]
    cmp = compare_accuracy(ref, got, labels, tol, names=("torch", "onnx"))
    torch_top1, onnx_top1, drop_pp = cmp.reference_accuracy, cmp.accuracy, cmp.drop_pp
    agreement, max_abs, failures = cmp.agreement, cmp.max_abs_logit_diff, list(cmp.failures)
    report = VerifyReport(
        dataset=dataset.name, samples=int(len(labels)), torch_top1=torch_top1, onnx_top1=onnx_top1,
        drop_pp=drop_pp, agreement=agreement, max_abs_logit_diff=max_abs, thresholds=thresholds,
        passed=bool(comparison_verdict(failures).ok), failures=tuple(failures), precision=precision, onnx=str(onnx),
        checkpoint=str(ckpt_path), checkpoint_val_accuracy=ckpt.val_accuracy, split=split.to_dict())
    if save:
        report.save((Path(run) if Path(run).is_dir() else ckpt_path.parent) / VERIFY_JSON)
    return report


__all__ = ["ACCURACY_THRESHOLDS", "VerifyReport", "verify_accuracy"]
