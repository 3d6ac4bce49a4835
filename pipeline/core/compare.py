"""The one comparison of a model against its reference, with per-precision tolerances.

Three checks compare two models' outputs, and all of them come here:

* **export parity** (:func:`pipeline.export.onnx.parity`): torch against the exported ONNX
  on the same inputs: logits must agree (:func:`compare_logits`);
* **accuracy verification** (:func:`pipeline.train.verify.verify_accuracy`): torch against
  ONNX Runtime on a labelled validation split (:func:`compare_accuracy`);
* **the INT8 gate** (:func:`pipeline.export.quantize.int8_accuracy_gate`): the fp32 model
  against its INT8 twin on labelled data (:func:`compare_accuracy`).

What "close enough" means depends on the precision of the model under test, so the limits
live in one table, :data:`TOLERANCES`, and a check may override single entries (a user's
``--max-drop-pp``). A limit of ``None`` is not checked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from pipeline.core.errors import UnknownName, UsageError

_EPS = 1e-9  # a value exactly at its limit passes


@dataclass(frozen=True)
class Tolerance:
    """Limits for one precision.

    ``max_abs`` is per unit of logit scale (``max(1, max |reference logit|)``), so one number
    serves models whose logits are 0.1 or 100; ``cosine`` is the smallest per-sample cosine
    similarity of the logit vectors; ``top1`` the smallest top-1 agreement on parity inputs;
    ``max_drop_pp`` the largest accuracy drop in percentage points on labelled data and
    ``min_agreement`` the smallest top-1 agreement (a fraction) there.
    """

    max_abs: float | None
    cosine: float | None
    top1: float | None
    max_drop_pp: float | None
    min_agreement: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    def parity_dict(self) -> dict:
        return {"max_abs": self.max_abs, "cosine": self.cosine, "top1": self.top1}


# fp32: export must be exact up to float reordering; fp16 and int8 lose precision by design.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4, cosine=0.9999, top1=1.0, max_drop_pp=0.1, min_agreement=0.995),
    "fp16": Tolerance(max_abs=1e-2, cosine=0.999, top1=0.99, max_drop_pp=0.5, min_agreement=0.99),
    "int8": Tolerance(max_abs=None, cosine=0.98, top1=0.9, max_drop_pp=1.0, min_agreement=0.97),
}


def tolerance(precision: str, **overrides: float | None) -> Tolerance:
    """The tolerance for ``precision`` with ``overrides`` (only the keys given; ``None`` values are ignored)."""
    if precision not in TOLERANCES:
        raise UnknownName("precision", precision, list(TOLERANCES))
    given = {k: float(v) for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(Tolerance.__dataclass_fields__))
    if unknown:
        raise UsageError(f"unknown tolerance {unknown[0]!r}; known: {', '.join(Tolerance.__dataclass_fields__)}.")
    for key, value in given.items():
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"tolerance {key} must be a finite number >= 0, not {value:g}.")
    tol = replace(TOLERANCES[precision], **given)
    for key in ("cosine", "top1", "min_agreement"):
        value = getattr(tol, key)
        if value is not None and value > 1:
            raise UsageError(f"tolerance {key} is a fraction in [0, 1], not {value:g}.")
    return tol


class _Judged:
    """Truthy when no limit failed: ``failures`` lists each failing number and its limit."""

    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed


@dataclass(frozen=True)
class LogitComparison(_Judged):
    """How far ``got`` logits are from ``ref`` on the same inputs. Truthy when every limit holds."""

    max_abs_err: float
    mean_abs_err: float
    cosine_min: float
    top1_agreement: float
    logit_scale: float
    output_spread: float
    n: int
    failures: tuple[str, ...] = field(default=())


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = den == 0
    cos = np.where(both_zero, 1.0, num / np.where(both_zero, 1.0, den))
    return np.clip(cos, -1.0, 1.0)


def _pair(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    got = np.asarray(got, dtype=np.float64).reshape(len(got), -1)
    if ref.shape != got.shape:
        raise ValueError(f"cannot compare logits of shape {ref.shape} with {got.shape}")
    return ref, got


def compare_logits(ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> LogitComparison:
    """Parity of two models' logits (N×classes) on the same inputs, judged by ``tol``'s parity limits."""
    ref, got = _pair(ref, got)
    err = np.abs(ref - got)
    finite = bool(np.isfinite(got).all())
    max_abs = float(err.max()) if finite else float("inf")
    cos_min = float(_cosine(ref, got).min()) if finite else float("nan")
    top1 = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
    spread = float(np.abs(ref - ref.mean(axis=0, keepdims=True)).max()) if len(ref) > 1 else 0.0
    scale = max(1.0, float(np.abs(ref).max()))
    failures = []
    if not finite:
        failures.append("output is not finite")
    if tol.max_abs is not None and not max_abs <= tol.max_abs * scale + _EPS:
        failures.append(f"max_abs_err {max_abs:.3g} > {tol.max_abs * scale:.3g} "
                        f"({tol.max_abs:g} × logit scale {scale:.3g})")
    if tol.cosine is not None and not cos_min >= tol.cosine - _EPS:
        failures.append(f"cosine_min {cos_min:.6f} < {tol.cosine:g}")
    if tol.top1 is not None and not top1 >= tol.top1 - _EPS:
        failures.append(f"top1_agreement {top1:.3f} < {tol.top1:g}")
    return LogitComparison(max_abs_err=max_abs, mean_abs_err=float(err.mean()) if finite else float("inf"),
                           cosine_min=cos_min, top1_agreement=top1, logit_scale=scale, output_spread=spread,
                           n=len(ref), failures=tuple(failures))


@dataclass(frozen=True)
class AccuracyComparison(_Judged):
    """Top-1 of a reference and a candidate on the same labelled inputs. Truthy when every limit holds.

    Without labels the reference's own predictions are the labels (its accuracy is then 1 and
    the candidate's equals the agreement): ``labels`` says which.
    """

    reference_accuracy: float
    accuracy: float
    drop_pp: float
    agreement: float
    max_abs_logit_diff: float
    n: int
    labels: str
    failures: tuple[str, ...] = field(default=())


def compare_accuracy(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None, tol: Tolerance,
                     names: tuple[str, str] = ("reference", "candidate")) -> AccuracyComparison:
    """Accuracy drop (percentage points) and top-1 agreement of ``got`` against ``ref``, judged by ``tol``."""
    ref, got = _pair(ref, got)
    p_ref, p_got = ref.argmax(axis=1), got.argmax(axis=1)
    if labels is None:
        y, source = p_ref, f"{names[0]} predictions"
    else:
        y, source = np.asarray(labels).reshape(-1).astype(np.int64), "labels"
        if len(y) != len(ref):
            raise ValueError(f"{len(ref)} outputs but {len(y)} labels")
    acc_ref, acc = float(np.mean(p_ref == y)), float(np.mean(p_got == y))
    drop = round(100.0 * (acc_ref - acc), 4)
    agreement = float(np.mean(p_ref == p_got))
    finite = bool(np.isfinite(got).all())
    failures = []
    if not finite:
        failures.append(f"{names[1]} logits are not finite")
    if tol.max_drop_pp is not None and drop > tol.max_drop_pp + _EPS:
        failures.append(f"accuracy drop {drop:.3f} pp ({names[0]} {acc_ref:.4f} -> {names[1]} {acc:.4f}) "
                        f"> max_drop_pp {tol.max_drop_pp:g}")
    if tol.min_agreement is not None and agreement < tol.min_agreement - _EPS:
        failures.append(f"top-1 agreement {agreement:.4f} < min_agreement {tol.min_agreement:g}")
    return AccuracyComparison(reference_accuracy=acc_ref, accuracy=acc, drop_pp=drop, agreement=agreement,
                              max_abs_logit_diff=float(np.abs(ref - got).max()) if finite else float("inf"),
                              n=len(ref), labels=source, failures=tuple(failures))


__all__ = ["TOLERANCES", "AccuracyComparison", "LogitComparison", "Tolerance", "compare_accuracy", "compare_logits",
           "tolerance"]
