"""INT8 post-training quantization: one calibration set, every runtime, and an accuracy gate.

ONNX Runtime on CPU (``runtime="onnxruntime"``)
    Static quantization in QDQ format after ``quant_pre_process`` (shape inference and
    ONNX Runtime's basic graph optimizations), per-channel weights, **u8 activations and
    s8 weights** (``QUInt8``/``QInt8``): on x86, s8 activations and dynamic quantization
    were 3-7x *slower* than fp32 on convolutions here, while u8/s8 is what the fused
    ``QLinearConv`` kernels are made for. At load time ONNX Runtime fuses each
    DequantizeLinear -> op -> QuantizeLinear group into one integer kernel;
    :func:`ort_fused_ops` counts those kernels in the optimized graph ONNX Runtime
    actually executes, so "quantized" is checked, not assumed.

TensorRT (``runtime="tensorrt"``)
    Explicit quantization: a QDQ model with **symmetric s8 activations and s8 weights**
    (zero points 0, float bias, Q/DQ pairs on the weights), which TensorRT (>= 8.0) and
    TensorRT-RTX consume directly. For older TensorRT flows that calibrate implicitly,
    :func:`make_entropy_calibrator` returns an ``IInt8EntropyCalibrator2`` fed from the same
    calibration array that writes (and re-reads) a calibration cache file, which
    ``trtexec --int8 --calib=FILE`` accepts on the device.

Per-family tuning (:data:`INT8_TUNING`)
    What pays differs by family, so the choices are a table, each row with the evidence
    behind it (``bench/int8_speedup.py`` → ``bench/results/int8_speedup.md``, which times every
    alternative interleaved with fp32 and re-checks the table's choice): the format (QDQ or
    QOperator), the op types quantized, per-channel weights, the calibration method and how many
    leading convolutions stay in float. A stem convolution over 3 input channels, and a first
    block of depthwise and 1x1 convolutions over 16–32 channels at half the input resolution,
    run *slower* in ONNX Runtime's integer kernels than in its fp32 NCHWc kernels here, so the
    depthwise families keep them in float. ``quantize_onnx(..., family=F)`` applies the row; explicit
    settings override it.

Calibration method
    ``minmax``, ``entropy`` or ``percentile`` (the default where the table does not choose; it halved
    MinMax's error in a trial here). Calibration inputs are a float32 N×C×H×W array, already preprocessed exactly as
    the run's model expects; :func:`calibration_batches` draws them from a dataset spec.

Accuracy
    :func:`int8_accuracy_gate` compares int8 with fp32 on labelled data (accuracy, drop in
    percentage points, top-1 agreement) and raises :class:`VerificationFailed` (exit 4)
    when the drop exceeds the limit. :func:`layer_sensitivity` quantizes one layer at a
    time (calibrating once) and ranks the layers by the error each causes, which is what
    ``exclude_nodes`` (``--int8-exclude``) is for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.compare import TOLERANCES, compare_accuracy, tolerance
from pipeline.core.errors import (
    BackendUnavailable,
    DataInvalid,
    ModelInvalid,
    UnknownName,
    UsageError,
    VerificationFailed,
)
from pipeline.core.io import atomic_write

METHODS = ("minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
QUANT_RUNTIMES = ("onnxruntime", "tensorrt")
DEFAULT_PERCENTILE = 99.999
DEFAULT_MAX_DROP_PP = TOLERANCES["int8"].max_drop_pp
# Integer kernels ONNX Runtime's CPU EP fuses QDQ groups into (plus any QLinear* op).
FUSED_OPS = frozenset({"QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                       "QAttention", "QOrderedMatMul"})
FLOAT_COMPUTE_OPS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"})


def _is_fused(op_type: str) -> bool:
    return op_type.startswith("QLinear") or op_type in FUSED_OPS


@contextlib.contextmanager
def _quiet():
    """Keep onnxruntime.quantization's logging/prints off stdout (``--json`` prints JSON only)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    key = str(name).lower()
    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if key not in table:
        raise UnknownName("calibration method", name, list(METHODS))
    return table[key]


# --- calibration data -------------------------------------------------------------------------------------------


def _check_inputs(inputs: Any, what: str, shape: tuple | None = None) -> np.ndarray:
    if hasattr(inputs, "detach"):  # a torch tensor
        inputs = inputs.detach().cpu().numpy()
    arr = np.asarray(inputs)
    if arr.ndim != 4 or len(arr) == 0:
        raise DataInvalid(f"{what} must be a non-empty N×C×H×W array, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataInvalid(f"{what} must be float (already preprocessed), got {arr.dtype}.")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DataInvalid(f"{what} contains NaN or infinite values.")
    if shape is not None:
        want = tuple(d for d in shape[1:])
        if all(isinstance(d, int) and d > 0 for d in want) and arr.shape[1:] != want:
            raise DataInvalid(f"{what} have shape {arr.shape[1:]} per image but the model expects {want}.")
    return arr


def _model_input(path: str | Path) -> tuple[str, tuple]:
    from pipeline.export.onnx import onnx_io

    name, shape, _ = onnx_io(path)
    return name, shape


class ArrayCalibrationReader:
    """An ONNX Runtime ``CalibrationDataReader`` over a float32 array, in the model's batch size."""

    def __init__(self, input_name: str, inputs: np.ndarray, batch_size: int = 1, batches: int | None = None):
        self.input_name, self.batch_size = input_name, max(1, int(batch_size))
        n = len(inputs) // self.batch_size
        if batches is not None:
            n = min(n, int(batches))
        if n < 1:
            raise DataInvalid(f"{len(inputs)} calibration images make no batch of {self.batch_size}.")
        self.inputs = inputs[: n * self.batch_size]
        self.batches, self._i, self._end = n, 0, n

    @property
    def samples(self) -> int:
        return len(self.inputs)

    def get_next(self) -> dict | None:
        if self._i >= self._end:
            return None
        lo = self._i * self.batch_size
        self._i += 1
        return {self.input_name: self.inputs[lo: lo + self.batch_size]}

    def rewind(self) -> None:
        self._i, self._end = 0, self.batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read batches [start, end) only: ORT's strided calibration (``CalibStridedMinMax``) calls it per chunk."""
        self._i, self._end = start_index, min(end_index, self.batches)


CALIBRATION_CHUNK = 8  # batches whose every intermediate tensor is held at once while calibrating


def calibration_chunk(batches: int) -> int:
    """The largest divisor of ``batches`` up to :data:`CALIBRATION_CHUNK` (ORT needs chunks that divide the data).

    ORT's calibrators keep every intermediate tensor of every batch they are given until they
    reduce them; at 264 px an EfficientNet-Lite holds ~80 MB per image, so 256 images at once
    took 22 GB and the fit was killed. In chunks the histograms are merged as they go.
    """
    return max(d for d in range(1, CALIBRATION_CHUNK + 1) if batches % d == 0)


def calibration_batches(dataset_spec: str | Path, preprocess: Any, n: int = 256, *, seed: int = 0,
                        split: str = "train") -> np.ndarray:
    """``n`` preprocessed images (float32 N×3×R×R) from ``dataset_spec`` (e.g. ``builtin:digits``) for calibration.

    Drawn (seeded) from the *train* split of :meth:`LabelledData.split`, so calibration
    never sees the validation images the accuracy gate uses. ``preprocess`` is the run's
    :class:`~pipeline.data.datasets.Preprocess` (or an int resolution: the dataset's default
    preprocessing at that resolution): the exact transform the model was trained with.
    """
    x, _ = _dataset_arrays(dataset_spec, preprocess, n, seed=seed, split=split)
    return x


def validation_set(dataset_spec: str | Path, preprocess: Any, n: int | None = None, *, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, labels)`` of the validation split (all of it, or ``n`` seeded samples), for the accuracy gate."""
    return _dataset_arrays(dataset_spec, preprocess, n, seed=seed, split="val")


def _dataset_arrays(spec, preprocess, n, *, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.data.datasets import Preprocess, load_dataset

    data = load_dataset(spec)
    if not isinstance(preprocess, Preprocess):
        preprocess = data.default_preprocess(int(preprocess))
    parts = data.split()
    if split not in ("train", "val"):
        raise UsageError(f"split must be 'train' or 'val', not {split!r}.")
    idx = parts.train if split == "train" else parts.val
    if n is not None:
        if n < 1:
            raise UsageError(f"the number of samples must be positive, got {n}.")
        idx = np.sort(idx[np.random.default_rng(seed).permutation(len(idx))[:n]])
    x = preprocess(data.images(idx))
    x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    return np.ascontiguousarray(x, dtype=np.float32), data.labels[idx].copy()


# --- quantization ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize_onnx` wrote and how; ``fused_ops`` are the integer kernels ONNX Runtime really runs."""

    path: str
    fp32_path: str
    runtime: str
    method: str
    percentile: float | None
    per_channel: bool
    activation_type: str
    weight_type: str
    symmetric_activations: bool
    calibration_samples: int
    calibration_batches: int
    excluded_nodes: tuple[str, ...]
    quantize_linear: int
    dequantize_linear: int
    fused_ops: dict = field(default_factory=dict)
    fused_total: int | None = None
    float_compute_left: dict = field(default_factory=dict)
    seconds: float = 0.0
    quant_format: str = "qdq"
    op_types: tuple[str, ...] | None = None
    float_convs: tuple[str, ...] = ()  # the leading convolutions kept in float (the family's tuning)
    family: str | None = None
    tuning: str | None = None  # why the family is quantized this way (INT8_TUNING's evidence)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["excluded_nodes"] = list(self.excluded_nodes)
        d["float_convs"] = list(self.float_convs)
        d["op_types"] = None if self.op_types is None else list(self.op_types)
        return d


def _count_ops(path: str | Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def ort_fused_ops(int8_path: str | Path, threads: int = 1) -> tuple[dict, dict]:
    """``(fused, float_left)``: op-type counts of the graph ONNX Runtime executes for ``int8_path``.

    The model is loaded with ``optimized_model_filepath`` set, i.e. after all of ONNX
    Runtime's graph transformations (``ORT_ENABLE_ALL``, as every measurement uses), and
    the saved graph is counted: ``fused`` holds the integer kernels (QLinearConv,
    QLinearMatMul, QGemm, ...) the QDQ groups became; ``float_left`` the float Conv/Gemm/
    MatMul that were *not* fused and still run in fp32.
    """
    import onnxruntime as ort

    from pipeline.runtimes.onnxruntime import session_options

    so = session_options(threads)
    with tempfile.TemporaryDirectory(prefix="edgefit-ortopt-") as tmp:
        opt = Path(tmp) / "optimized.onnx"
        so.optimized_model_filepath = str(opt)
        try:
            ort.InferenceSession(str(int8_path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT's pybind errors
            raise ModelInvalid(f"ONNX Runtime cannot load {int8_path}: {str(exc).splitlines()[0]}") from None
        ops = _count_ops(opt)
    fused = {k: v for k, v in sorted(ops.items()) if _is_fused(k)}
    left = {k: v for k, v in sorted(ops.items()) if k in FLOAT_COMPUTE_OPS}
    return fused, left


def _preprocess_model(fp32_path: Path, out: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelInvalid(f"cannot prepare {fp32_path} for quantization (quant_pre_process): {exc}") from None


def _settings(runtime: str) -> dict:
    from onnxruntime.quantization import QuantType

    if runtime == "onnxruntime":
        return {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
                "extra": {"ActivationSymmetric": False, "WeightSymmetric": True}}
    if runtime == "tensorrt":
        return {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
                "extra": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                          "AddQDQPairToWeight": True}}
    raise UnknownName("quantization runtime", runtime, list(QUANT_RUNTIMES))


def _node_names(path: Path) -> list[tuple[str, str]]:
    import onnx

    return [(n.name, n.op_type) for n in onnx.load(str(path), load_external_data=False).graph.node]


@dataclass(frozen=True)
class QuantizeSettings:
    """How to quantize: calibration ``method``, per-channel weights, the ``runtime`` whose INT8 flavour to emit
    (u8/s8 for ONNX Runtime's CPU kernels, symmetric s8 for TensorRT), the percentile of the percentile method,
    which op types to quantize (``None``: all that can be) and how many calibration batches to take at most."""

    method: str = "percentile"
    per_channel: bool = True
    runtime: str = "onnxruntime"
    percentile: float = DEFAULT_PERCENTILE
    op_types: tuple[str, ...] | None = None
    calibration_batches: int | None = None
    quant_format: str = "qdq"
    float_convs: int = 0  # leading Conv nodes (in graph order: the stem first) kept in float

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", str(self.method).lower())
        _method(self.method)
        _settings(self.runtime)
        if self.quant_format not in FORMATS:
            raise UnknownName("quantization format", self.quant_format, list(FORMATS))
        if self.runtime == "tensorrt" and self.quant_format != "qdq":
            raise UsageError("TensorRT's explicit quantization reads QDQ models only (quant_format='qdq').")
        if not (isinstance(self.float_convs, int) and self.float_convs >= 0):
            raise UsageError(f"float_convs must be a non-negative integer, got {self.float_convs!r}.")
        if not (0 < self.percentile <= 100):
            raise UsageError(f"percentile must be in (0, 100], got {self.percentile}.")
        if self.op_types is not None:
            object.__setattr__(self, "op_types", tuple(self.op_types))


@dataclass(frozen=True)
class Int8Tuning:
    """How one family is quantized for ONNX Runtime on CPU, and why (``evidence``: what the bench measured)."""

    float_convs: int = 0
    per_channel: bool = True
    quant_format: str = "qdq"
    op_types: tuple[str, ...] | None = None
    method: str = "percentile"
    evidence: str = ""

    def settings(self, **overrides: Any) -> QuantizeSettings:
        return QuantizeSettings(**{"method": self.method, "per_channel": self.per_channel,
                                   "quant_format": self.quant_format, "op_types": self.op_types,
                                   "float_convs": self.float_convs, **overrides})


_DEPTHWISE = ("stem and first block (depthwise 3x3 + 1x1 over 16-32 channels at half resolution) in float: "
              "integer kernels were slower than fp32 NCHWc there; per-tensor weights (one scale per layer: no "
              "per-channel requantization) were faster again at no accuracy cost on the trained models; every "
              "other op quantized")
# The per-family table. Evidence: bench/results/int8_speedup.md ("tuning evidence": every alternative timed
# interleaved with fp32 at φ=0, with the accuracy drop of each on a trained model, and each calibration method).
# Per-tensor weights can cost accuracy on networks whose channels' weight ranges differ widely (depthwise layers
# trained on large datasets): make_int8 re-quantizes per-channel when the accuracy gate fails (fallback below).
INT8_TUNING: dict[str, Int8Tuning] = {
    "efficientnet": Int8Tuning(float_convs=1, evidence=(
        "stem in float; all ops quantized (QLinearSigmoid/QLinearMul for swish): quantizing only Conv/Gemm "
        "left swish and SE in float behind DequantizeLinear/QuantizeLinear and ran slower than fp32")),
    "efficientnet-lite": Int8Tuning(float_convs=3, per_channel=False, evidence=_DEPTHWISE),
    "mobilenetv2": Int8Tuning(float_convs=3, per_channel=False, evidence=_DEPTHWISE),
    "resnet18": Int8Tuning(per_channel=False, evidence=(
        "everything quantized, per-tensor weights: the 7x7 stem over 64 channels gains from integer kernels "
        "(keeping it float cost a QuantizeLinear over a large tensor), and one scale per layer was faster")),
}
# ResNet-34/50 share ResNet-18's blocks and stem: the same choice, not benchmarked separately.
INT8_TUNING["resnet34"] = INT8_TUNING["resnet50"] = INT8_TUNING["resnet18"]


def family_settings(family: str | None, **overrides: Any) -> QuantizeSettings:
    """The quantize settings for ``family`` (:data:`INT8_TUNING`; defaults for an unknown or ``None`` family).

    The table is about ONNX Runtime's CPU kernels: for ``runtime="tensorrt"`` only ``overrides`` apply.
    """
    if overrides.get("runtime", "onnxruntime") != "onnxruntime" or family not in INT8_TUNING:
        return QuantizeSettings(**overrides)
    return INT8_TUNING[family].settings(**overrides)


def _leading_convs(path: Path, n: int) -> list[str]:
    import onnx

    if n <= 0:
        return []
    return [node.name for node in onnx.load(str(path), load_external_data=False).graph.node
            if node.op_type == "Conv"][:n]


def _quantize(pre: Path, out: Path, reader, q: QuantizeSettings, *, exclude: Sequence[str] = (),
              only: Sequence[str] | None = None, cache: Path | None = None) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    runtime, method, per_channel, op_types = q.runtime, q.method, q.per_channel, q.op_types
    s = _settings(runtime)
    extra = dict(s["extra"])
    if method == "percentile":
        extra["CalibPercentile"] = float(q.percentile)
    kwargs = {}
    if cache is not None:
        kwargs["calibration_cache_path"] = str(cache)
    if reader is not None:
        extra["CalibStridedMinMax"] = calibration_chunk(len(reader))  # bounded memory (any method, despite the name)
    try:
        with _quiet():
            quantize_static(str(pre), str(out), reader, per_channel=per_channel,
                            quant_format=QuantFormat.QDQ if q.quant_format == "qdq" else QuantFormat.QOperator,
                            reduce_range=False, activation_type=s["activation_type"], weight_type=s["weight_type"],
                            nodes_to_exclude=list(exclude), nodes_to_quantize=list(only) if only else None,
                            op_types_to_quantize=list(op_types) if op_types else None,
                            calibrate_method=_method(method), extra_options=extra, **kwargs)
    except (DataInvalid, UsageError):
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises ValueError/RuntimeError/pybind errors
        raise ModelInvalid(f"static quantization of {pre.name} failed: {type(exc).__name__}: {exc}") from None


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, calibration_inputs: Any,
                  settings: QuantizeSettings | None = None, *, exclude_nodes: Iterable[str] = (), threads: int = 1,
                  family: str | None = None, **overrides: Any) -> QuantizeResult:
    """Quantize ``fp32_path`` to a QDQ INT8 model at ``out_path``, calibrated on ``calibration_inputs``.

    ``runtime="onnxruntime"``: u8 activations / s8 weights (asymmetric activations), for
    the CPU's fused QLinear kernels; the result reports the fused kernels ONNX Runtime
    really executes (:func:`ort_fused_ops`). ``runtime="tensorrt"``: symmetric s8/s8 with
    Q/DQ on weights and float bias, for TensorRT's explicit quantization.
    ``calibration_batches`` caps the number of batches (of the model's batch size; 1 for
    a static batch-1 export) taken from ``calibration_inputs``. ``exclude_nodes`` names
    nodes (as in the fp32 model) to keep in float; an unknown name is a UsageError.
    The output is written atomically. ``overrides`` are :class:`QuantizeSettings` fields
    (``method="minmax"``, ``runtime="tensorrt"``, ...). ``family`` applies that family's row of
    :data:`INT8_TUNING` (ONNX Runtime only) where ``settings`` is not given.
    """
    started = time.perf_counter()
    q = dataclasses.replace(settings, **overrides) if settings is not None else family_settings(family, **overrides)
    method, per_channel, runtime, percentile = q.method, q.per_channel, q.runtime, q.percentile
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    input_name, shape = _model_input(fp32_path)
    inputs = _check_inputs(calibration_inputs, "calibration inputs", shape)
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 1
    reader = ArrayCalibrationReader(input_name, inputs, batch, q.calibration_batches)
    exclude = tuple(dict.fromkeys(exclude_nodes))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgefit-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        _preprocess_model(fp32_path, pre)
        names = {n for n, _ in _node_names(pre)}
        unknown = [n for n in exclude if n not in names]
        if unknown:
            sample = ", ".join(sorted(names)[:8])
            raise UsageError(f"cannot exclude unknown node(s) {', '.join(unknown)} of {fp32_path.name}; "
                             f"node names look like: {sample}, ...")
        tmp_out = Path(tmp) / "quantized.onnx"
        float_convs = tuple(n for n in _leading_convs(pre, q.float_convs) if n not in exclude)
        _quantize(pre, tmp_out, reader, q, exclude=exclude + float_convs)
        ops = _count_ops(tmp_out)
        if ops.get("QuantizeLinear", 0) == 0:
            raise ModelInvalid(f"quantizing {fp32_path.name} inserted no QuantizeLinear node: nothing was quantized "
                               "(every quantizable node excluded?).")
        fused, left = ort_fused_ops(tmp_out, threads) if runtime == "onnxruntime" else ({}, {})
        atomic_write(out_path, tmp_out.read_bytes())
    s = _settings(runtime)
    return QuantizeResult(
        path=str(out_path), fp32_path=str(fp32_path), runtime=runtime, method=method,
        percentile=float(percentile) if method == "percentile" else None, per_channel=per_channel,
        activation_type="uint8" if s["activation_type"].name == "QUInt8" else "int8", weight_type="int8",
        symmetric_activations=bool(s["extra"]["ActivationSymmetric"]), calibration_samples=reader.samples,
        calibration_batches=reader.batches, excluded_nodes=exclude, quantize_linear=ops.get("QuantizeLinear", 0),
        dequantize_linear=ops.get("DequantizeLinear", 0), fused_ops=fused,
        fused_total=sum(fused.values()) if runtime == "onnxruntime" else None, float_compute_left=left,
        seconds=round(time.perf_counter() - started, 3), quant_format=q.quant_format, op_types=q.op_types,
        float_convs=float_convs, family=family,
        tuning=INT8_TUNING[family].evidence if settings is None and family in INT8_TUNING and runtime == "onnxruntime"
        else None)


# --- accuracy ----------------------------------------------------------------------------------------------------


def _logits(path: str | Path, inputs: np.ndarray, threads: int) -> np.ndarray:
    from pipeline.runtimes.onnxruntime import OnnxRuntime

    return OnnxRuntime(threads).load(path).predict(inputs)


@dataclass(frozen=True)
class GateReport:
    """int8 vs fp32 on the same labelled inputs. Truthy when ``drop_pp <= max_drop_pp``."""

    fp32_accuracy: float
    int8_accuracy: float
    agreement: float
    drop_pp: float
    max_drop_pp: float
    n: int
    passed: bool
    labels: str  # "labels" (ground truth) or "fp32 predictions" (no labels given)
    fp32_path: str = ""
    int8_path: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "passes" if self.passed else "FAILS"
        return (f"int8 accuracy {100 * self.int8_accuracy:.2f}% vs fp32 {100 * self.fp32_accuracy:.2f}% "
                f"(drop {self.drop_pp:.2f} pp, limit {self.max_drop_pp:g} pp; top-1 agreement "
                f"{100 * self.agreement:.2f}%, n={self.n}, against {self.labels}): {verdict}")


def int8_accuracy_gate(fp32_onnx: str | Path, int8_onnx: str | Path, inputs: Any, labels: Any = None,
                       max_drop_pp: float = DEFAULT_MAX_DROP_PP, *, threads: int = 1,
                       raise_on_failure: bool = True) -> GateReport:
    """Accuracy of both models on ``inputs`` (top-1 against ``labels``), their top-1 agreement and the drop.

    Without ``labels`` the fp32 predictions are the reference (fp32 accuracy is then 100%
    and int8 accuracy equals the agreement). A drop above ``max_drop_pp`` percentage points
    raises :class:`VerificationFailed` (exit 4) with the figures, unless
    ``raise_on_failure=False``, which returns the (falsy) report instead.
    """
    if not (isinstance(max_drop_pp, (int, float)) and math.isfinite(max_drop_pp) and max_drop_pp >= 0):
        raise UsageError(f"max_drop_pp must be a non-negative number, got {max_drop_pp!r}.")
    _, shape = _model_input(fp32_onnx)
    x = _check_inputs(inputs, "gate inputs", shape)
    ref = _logits(fp32_onnx, x, threads)
    got = _logits(int8_onnx, x, threads)
    if labels is not None and len(np.asarray(labels).reshape(-1)) != len(x):
        raise DataInvalid(f"{len(x)} gate inputs but {len(np.asarray(labels).reshape(-1))} labels.")
    # the gate judges the drop only: agreement is reported, not required (labels decide accuracy)
    tol = dataclasses.replace(tolerance("int8", max_drop_pp=max_drop_pp), min_agreement=None)
    cmp = compare_accuracy(ref, got, labels, tol, names=("fp32", "int8"))
    report = GateReport(fp32_accuracy=cmp.reference_accuracy, int8_accuracy=cmp.accuracy, agreement=cmp.agreement,
                        drop_pp=cmp.drop_pp, max_drop_pp=float(max_drop_pp), n=len(x), passed=cmp.passed,
                        labels=cmp.labels, fp32_path=str(fp32_onnx), int8_path=str(int8_onnx))
    if not report.passed and raise_on_failure:
        raise VerificationFailed(f"INT8 accuracy gate: {report.summary()}. Try another calibration method, more "
                                 "calibration data, or exclude the most sensitive layers (layer_sensitivity).")
    return report


@dataclass(frozen=True)
class LayerError:
    """The error one layer causes when it alone is quantized (logits vs the fp32 reference)."""

    node: str
    op_type: str
    rel_l2: float  # mean over samples of ||int8 - fp32|| / ||fp32||
    top1_agreement: float
    accuracy_drop_pp: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SensitivityReport:
    """Layers ranked by the error each causes alone (worst first), and the all-layers baseline."""

    layers: tuple[LayerError, ...]
    all_layers: LayerError
    considered: int
    skipped: tuple[str, ...]
    method: str
    runtime: str
    seconds: float

    def top(self, k: int = 5) -> list[LayerError]:
        return list(self.layers[:k])

    def to_dict(self) -> dict:
        return {"layers": [x.to_dict() for x in self.layers], "all_layers": self.all_layers.to_dict(),
                "considered": self.considered, "skipped": list(self.skipped), "method": self.method,
                "runtime": self.runtime, "seconds": self.seconds}


def _layer_error(node: str, op: str, got: np.ndarray, ref: np.ndarray, labels: np.ndarray | None) -> LayerError:
    num = np.linalg.norm((got - ref).astype(np.float64), axis=1)
    den = np.maximum(np.linalg.norm(ref.astype(np.float64), axis=1), 1e-12)
    drop = None
    if labels is not None:
        drop = round(100.0 * (float(np.mean(ref.argmax(1) == labels)) - float(np.mean(got.argmax(1) == labels))), 4)
    return LayerError(node, op, float(np.mean(num / den)), float(np.mean(got.argmax(1) == ref.argmax(1))), drop)


def layer_sensitivity(fp32_path: str | Path, calibration_inputs: Any, eval_inputs: Any, eval_labels: Any = None, *,
                      reference_logits: Any = None, max_layers: int = 24, nodes: Sequence[str] | None = None,
                      threads: int = 1, **settings: Any) -> SensitivityReport:
    """Quantize one layer at a time and rank the layers by the error each causes (worst first).

    Calibration runs once (its ranges are cached and reused for every layer). The error
    of a layer is the mean relative L2 distance of the logits from the fp32 reference
    (``reference_logits``, or the fp32 model's own on ``eval_inputs``), with top-1
    agreement and, given ``eval_labels``, the accuracy drop. Bounded: only nodes of
    ``op_types`` (or the named ``nodes``), at most ``max_layers`` of them, spread evenly
    over the depth when there are more (the others are listed in ``skipped``). ``settings`` are
    :class:`QuantizeSettings` fields; ``op_types`` defaults to Conv, Gemm and MatMul here.
    """
    started = time.perf_counter()
    q = QuantizeSettings(**{"op_types": ("Conv", "Gemm", "MatMul"), **settings})
    method, runtime, op_types = q.method, q.runtime, q.op_types
    q = dataclasses.replace(q, op_types=None)  # op_types choose the layers tested, each quantized on its own
    fp32_path = Path(fp32_path)
    input_name, shape = _model_input(fp32_path)
    calib = _check_inputs(calibration_inputs, "calibration inputs", shape)
    x = _check_inputs(eval_inputs, "evaluation inputs", shape)
    labels = None if eval_labels is None else np.asarray(eval_labels).reshape(-1).astype(np.int64)
    if labels is not None and len(labels) != len(x):
        raise DataInvalid(f"{len(x)} evaluation inputs but {len(labels)} labels.")
    ref = _logits(fp32_path, x, threads) if reference_logits is None else np.asarray(reference_logits, np.float32)
    if ref.shape[0] != len(x):
        raise DataInvalid(f"reference logits have {ref.shape[0]} rows for {len(x)} evaluation inputs.")
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 1
    with tempfile.TemporaryDirectory(prefix="edgefit-sens-") as tmp:
        tmp = Path(tmp)
        pre = tmp / "preprocessed.onnx"
        _preprocess_model(fp32_path, pre)
        graph = _node_names(pre)
        if nodes is not None:
            known = dict(graph)
            missing = [n for n in nodes if n not in known]
            if missing:
                raise UsageError(f"unknown node(s) {', '.join(missing)} in {fp32_path.name}.")
            candidates = [(n, known[n]) for n in nodes]
        else:
            candidates = [(n, op) for n, op in graph if op in op_types]
        if not candidates:
            raise UsageError(f"{fp32_path.name} has no {'/'.join(op_types)} nodes to test.")
        chosen = candidates
        if len(candidates) > max_layers:
            picks = np.unique(np.linspace(0, len(candidates) - 1, max_layers).round().astype(int))
            chosen = [candidates[i] for i in picks]
        skipped = tuple(n for n, _ in candidates if n not in {c for c, _ in chosen})
        cache = tmp / "calibration.json"
        full = tmp / "all.onnx"
        reader = ArrayCalibrationReader(input_name, calib, batch, q.calibration_batches)
        use_cache = _supports_calibration_cache()
        _quantize(pre, full, reader, q, cache=cache if use_cache else None)
        baseline = _layer_error("<all layers>", "*", _logits(full, x, threads), ref, labels)
        results = []
        for name, op in chosen:
            one = tmp / "one.onnx"
            reader.rewind()
            _quantize(pre, one, None if use_cache else reader, q, only=[name], cache=cache if use_cache else None)
            results.append(_layer_error(name, op, _logits(one, x, threads), ref, labels))
    results.sort(key=lambda r: r.rel_l2, reverse=True)
    return SensitivityReport(tuple(results), baseline, len(chosen), skipped, method, runtime,
                             round(time.perf_counter() - started, 3))


def _supports_calibration_cache() -> bool:
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


# --- TensorRT implicit calibration (older TensorRT) -------------------------------------------------------------


def make_entropy_calibrator(calibration_inputs: Any, cache_path: str | Path, *, batch_size: int = 1,
                            flavour: str = "tensorrt", calibration_batches: int | None = None):
    """An ``IInt8EntropyCalibrator2`` over the calibration array that writes/reads ``cache_path``.

    For TensorRT flows without explicit (QDQ) quantization: pass it to
    ``TensorRT("tensorrt").build(..., precision="int8", calibrator=...)``. The cache it
    writes is what ``trtexec --int8 --calib=FILE`` reads on the device (same TensorRT
    version). When the cache exists, TensorRT reads it and needs no batches. Batches are
    copied to the GPU with torch.cuda. The class is defined here, at call time, so
    importing this module never needs TensorRT.
    """
    from pipeline.runtimes.tensorrt import import_trt

    trt = import_trt(flavour)
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise BackendUnavailable(f"{flavour} {trt.__version__} has no IInt8EntropyCalibrator2 (TensorRT-RTX has no "
                                 "implicit INT8 calibration); use quantize_onnx(..., runtime='tensorrt') instead.")
    inputs = _check_inputs(calibration_inputs, "calibration inputs")
    n = len(inputs) // batch_size if calibration_batches is None else min(len(inputs) // batch_size,
                                                                          calibration_batches)
    cache_path = Path(cache_path)

    class EdgefitEntropyCalibrator(base):
        def __init__(self):
            base.__init__(self)
            self.index, self.batches, self.cache_path, self._device = 0, n, cache_path, None

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            if self.index >= self.batches:
                return None
            import torch

            lo = self.index * batch_size
            self._device = torch.from_numpy(inputs[lo: lo + batch_size]).cuda()
            self.index += 1
            return [int(self._device.data_ptr())]

        def read_calibration_cache(self):
            return self.cache_path.read_bytes() if self.cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            atomic_write(self.cache_path, bytes(cache))

    return EdgefitEntropyCalibrator()


__all__ = ["DEFAULT_MAX_DROP_PP", "FORMATS", "INT8_TUNING", "METHODS", "QUANT_RUNTIMES", "ArrayCalibrationReader",
           "GateReport", "Int8Tuning", "LayerError", "QuantizeSettings", "family_settings",
           "QuantizeResult", "SensitivityReport", "calibration_batches", "int8_accuracy_gate", "layer_sensitivity",
           "make_entropy_calibrator", "ort_fused_ops", "quantize_onnx", "validation_set"]
