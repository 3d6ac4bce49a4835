"""INT8: ONNX Runtime QDQ -> fused QLinear kernels (counted), the TensorRT QDQ flavour, the accuracy gate on real
digits data (and its failure on a deliberately bad calibration), per-layer sensitivity and exclusions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tinymodels import RES, RTX_SKIP_REASON, digits_classifier, rtx_importable, tiny_onnx

from pipeline.core.errors import (
    BackendUnavailable,
    DataInvalid,
    EngineBuildFailed,
    UnknownName,
    UsageError,
    VerificationFailed,
)
from pipeline.engine.build import is_trt_qdq
from pipeline.export.quantize import (
    calibration_batches,
    int8_accuracy_gate,
    layer_sensitivity,
    make_entropy_calibrator,
    quantize_onnx,
    validation_set,
)
from pipeline.runtimes.onnxruntime import OnnxRuntime

RTX = rtx_importable()


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("q") / "resnet.onnx")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    data, calib, x_val, y_val = digits_classifier()
    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    path.write_bytes(data)
    return path, calib, x_val, y_val


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, RES, RES), dtype=np.float32)


def _zero_points(path: Path) -> list[np.ndarray]:
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    return [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]


def _convs(path: Path) -> int:
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def test_cpu_int8_fuses_every_conv_into_qlinearconv(resnet, tmp_path):
    q = quantize_onnx(resnet, tmp_path / "int8.onnx", _x(16), calibration_batches=8)
    assert q.calibration_samples == 8 and q.calibration_batches == 8  # static batch 1: one image per batch
    assert q.activation_type == "uint8" and q.weight_type == "int8" and not q.symmetric_activations
    assert q.quantize_linear > 0 and q.dequantize_linear >= q.quantize_linear
    assert {zp.dtype for zp in _zero_points(tmp_path / "int8.onnx")} == {np.dtype(np.uint8)}  # u8 activations
    # counted in the graph ONNX Runtime actually executes: every Conv became a QLinearConv, the FC a QGemm
    assert q.fused_ops["QLinearConv"] == _convs(resnet) > 5 and q.fused_ops.get("QGemm", 0) == 1
    assert q.fused_total >= q.fused_ops["QLinearConv"] and q.float_compute_left == {}
    logits = OnnxRuntime(1).load(q.path).predict(_x(2, seed=3))
    assert logits.shape == (2, 10) and np.isfinite(logits).all()


def test_excluded_nodes_stay_float(resnet, tmp_path):
    first = next(n.name for n in onnx.load(str(resnet)).graph.node if n.op_type == "Conv")
    q = quantize_onnx(resnet, tmp_path / "int8.onnx", _x(4), method="minmax", exclude_nodes=[first])
    assert q.excluded_nodes == (first,)
    assert q.fused_ops["QLinearConv"] == _convs(resnet) - 1
    assert sum(q.float_compute_left.values()) == 1  # the excluded conv still runs in fp32
    with pytest.raises(UsageError, match="cannot exclude unknown node.*no_such_conv"):
        quantize_onnx(resnet, tmp_path / "x.onnx", _x(4), exclude_nodes=["no_such_conv"])


def test_tensorrt_flavour_is_symmetric_s8_with_float_bias(resnet, tmp_path):
    q = quantize_onnx(resnet, tmp_path / "trt.onnx", _x(4), runtime="tensorrt", method="entropy")
    assert q.activation_type == "int8" and q.symmetric_activations and q.fused_total is None
    zps = _zero_points(tmp_path / "trt.onnx")
    assert zps and all(zp.dtype == np.int8 and not zp.any() for zp in zps)
    assert is_trt_qdq(tmp_path / "trt.onnx")
    cpu = quantize_onnx(resnet, tmp_path / "cpu.onnx", _x(4))
    assert not is_trt_qdq(cpu.path)
    proto = onnx.load(str(tmp_path / "trt.onnx"))
    assert not any(i.data_type == onnx.TensorProto.INT32 for i in proto.graph.initializer)  # bias stays float


def test_bad_arguments_are_clear(resnet, tmp_path):
    with pytest.raises(UnknownName):
        quantize_onnx(resnet, tmp_path / "q.onnx", _x(2), method="histogram")
    with pytest.raises(UnknownName):
        quantize_onnx(resnet, tmp_path / "q.onnx", _x(2), runtime="tflite")
    with pytest.raises(DataInvalid, match="per image but the model expects"):
        quantize_onnx(resnet, tmp_path / "q.onnx", np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(DataInvalid, match="NaN"):
        quantize_onnx(resnet, tmp_path / "q.onnx", np.full((2, 3, RES, RES), np.nan, np.float32))


def test_accuracy_gate_passes_on_real_digits(digits, tmp_path):
    fp32, calib, x_val, y_val = digits
    q = quantize_onnx(fp32, tmp_path / "int8.onnx", calib, method="percentile")
    gate = int8_accuracy_gate(fp32, q.path, x_val, y_val)
    assert gate and gate.labels == "labels" and gate.n == len(y_val) > 300
    assert gate.fp32_accuracy > 0.9 and gate.drop_pp <= 1.0 and gate.agreement > 0.97


def test_accuracy_gate_fails_with_exit_4_on_a_bad_calibration(digits, tmp_path):
    fp32, calib, x_val, y_val = digits
    bad = quantize_onnx(fp32, tmp_path / "bad.onnx", calib * 1000.0)  # ranges 1000x too wide: every step is coarse
    with pytest.raises(VerificationFailed, match=r"INT8 accuracy gate: int8 accuracy \d+\.\d+% vs fp32 9\d\.\d+% "
                                                 r"\(drop \d+\.\d+ pp, limit 1 pp") as err:
        int8_accuracy_gate(fp32, bad.path, x_val, y_val)
    assert err.value.exit_code == 4
    report = int8_accuracy_gate(fp32, bad.path, x_val, y_val, raise_on_failure=False)
    assert not report and report.drop_pp > 50 and report.agreement < 0.5
    zeros = quantize_onnx(fp32, tmp_path / "zeros.onnx", np.zeros_like(calib))  # calibrated on blank images
    assert not int8_accuracy_gate(fp32, zeros.path, x_val, y_val, raise_on_failure=False)


def test_layer_sensitivity_ranks_layers_and_is_bounded(resnet, digits):
    fp32, calib, x_val, y_val = digits
    report = layer_sensitivity(fp32, calib[:16], x_val[:64], y_val[:64])
    assert report.considered == 3 and not report.skipped  # 2 convs + 1 Gemm
    errs = [layer.rel_l2 for layer in report.layers]
    assert errs == sorted(errs, reverse=True) and all(e > 0 for e in errs)
    assert report.all_layers.rel_l2 >= max(errs) * 0.5 and report.layers[0].accuracy_drop_pp is not None
    bounded = layer_sensitivity(resnet, _x(4), _x(8, seed=1), max_layers=2)
    n_candidates = sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in onnx.load(str(resnet)).graph.node)
    assert bounded.considered == 2 and len(bounded.skipped) == n_candidates - 2
    assert bounded.layers[0].accuracy_drop_pp is None  # no labels: error against the fp32 logits only


def test_calibration_and_validation_sets_from_a_dataset_spec():
    x = calibration_batches("builtin:digits", 16, 12)
    assert x.shape == (12, 3, 16, 16) and x.dtype == np.float32
    xv, yv = validation_set("builtin:digits", 16, 20)
    assert xv.shape == (20, 3, 16, 16) and yv.shape == (20,)
    assert np.array_equal(calibration_batches("builtin:digits", 16, 12), x)  # seeded: the same set every time


def test_entropy_calibrator_needs_tensorrt_with_implicit_calibration(tmp_path):
    try:
        make_entropy_calibrator(_x(2), tmp_path / "calibration.cache", flavour="tensorrt")
    except BackendUnavailable as exc:
        assert "tensorrt" in str(exc)
    if RTX:
        with pytest.raises(BackendUnavailable, match="no IInt8EntropyCalibrator2"):
            make_entropy_calibrator(_x(2), tmp_path / "calibration.cache", flavour="tensorrt-rtx")


@pytest.mark.trt
@pytest.mark.skipif(not RTX, reason=RTX_SKIP_REASON)
def test_tensorrt_rtx_builds_the_explicit_int8_model_and_rejects_the_cpu_one(resnet, tmp_path):
    from pipeline.runtimes.tensorrt import TensorRT, read_sidecar

    rt = TensorRT("tensorrt-rtx")
    fp32 = rt.build(resnet, tmp_path / "fp32", "fp32")
    trt = quantize_onnx(resnet, tmp_path / "trt.onnx", _x(8), runtime="tensorrt")
    engine = rt.build(trt.path, tmp_path / "int8", "int8")
    info = read_sidecar(engine)
    assert info["explicit_quantization"] and info["precision"] == "int8"
    assert engine.stat().st_size < 0.6 * fp32.stat().st_size  # int8 weights
    cpu = quantize_onnx(resnet, tmp_path / "cpu.onnx", _x(8))  # u8 activations with zero points: not for TensorRT
    with pytest.raises(EngineBuildFailed, match=r"\(QuantizeLinear\).*zero point"):
        rt.build(cpu.path, tmp_path / "cpu", "int8")


def test_calibration_reads_in_chunks_that_divide_the_data():
    """ORT holds every intermediate tensor of what it is given at once (256 images of a 264 px Lite: ~36 GB);
    it is given chunks of at most CALIBRATION_CHUNK batches, and the reader serves exactly each range."""
    from pipeline.export.quantize import CALIBRATION_CHUNK, ArrayCalibrationReader, calibration_chunk

    assert calibration_chunk(256) == CALIBRATION_CHUNK == 8 and calibration_chunk(12) == 6
    assert calibration_chunk(257) == 1
    reader = ArrayCalibrationReader("x", np.arange(10, dtype=np.float32).reshape(10, 1), batch_size=1)
    reader.set_range(4, 6)
    assert [float(b["x"][0, 0]) for b in reader] == [4.0, 5.0]
    reader.rewind()
    assert len(list(reader)) == 10
