"""Runtime backends: ONNX Runtime sessions for real, the engine sidecar refusal, and TensorRT-RTX builds for real.

``trt`` tests run the real TensorRT-RTX parser and builder (no GPU needed) and skip when
``tensorrt_rtx`` is not importable; ``gpu`` tests need an NVIDIA GPU with TensorRT.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from tinymodels import CLASSES, RES, RTX_SKIP_REASON, rtx_importable, tiny_model, tiny_onnx

import pipeline.runtimes.tensorrt as trtmod
from pipeline.core.errors import BackendUnavailable, EngineBuildFailed, EngineMismatch, UnknownName, UsageError
from pipeline.core.io import sha256_file
from pipeline.measure.timing import Timing, time_session
from pipeline.runtimes.convert import is_quantized
from pipeline.runtimes.onnxruntime import OnnxRuntime
from pipeline.runtimes.registry import RUNTIME_NAMES, get_runtime
from pipeline.runtimes.tensorrt import TensorRT, check_engine, cuda_device, normalize_version, write_sidecar

needs_rtx = pytest.mark.skipif(not rtx_importable(), reason=RTX_SKIP_REASON)
needs_gpu = pytest.mark.skipif(
    cuda_device() is None or not TensorRT("tensorrt").available()[0],
    reason="needs an NVIDIA GPU with TensorRT (the full tensorrt wheel installs only from NVIDIA's index)")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("rt") / "model.onnx")


def _x(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, RES, RES), dtype=np.float32)


# --- ONNX Runtime ---------------------------------------------------------------------------------------------


def test_onnxruntime_session_runs_times_and_matches_torch(onnx_path, tmp_path):
    rt = get_runtime("onnxruntime", threads=1)
    ok, why = rt.available()
    assert ok, why
    artifact = rt.build(onnx_path, tmp_path, "fp32")
    assert artifact == tmp_path / "model.onnx" and artifact.read_bytes() == onnx_path.read_bytes()
    sess = rt.load(artifact)
    x = _x(5)
    logits = sess.predict(x)  # static batch 1: fed one by one
    assert logits.shape == (5, CLASSES)
    with torch.no_grad():
        ref = tiny_model()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-4)
    t = time_session(sess, warmup=1, min_repeats=5, min_time_s=0)
    assert isinstance(t, Timing) and t.n >= 5 and t.threads == 1 and 0 < t.p50_ms <= t.p99_ms


def test_onnxruntime_fp16_build_runs_with_float32_io(onnx_path, tmp_path):
    rt = OnnxRuntime(threads=1)
    fp16 = rt.build(onnx_path, tmp_path, "fp16")
    proto = onnx.load(str(fp16))
    assert any(init.data_type == TensorProto.FLOAT16 for init in proto.graph.initializer)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    a, b = rt.load(onnx_path).run(_x()), rt.load(fp16).run(_x())
    assert np.abs(a - b).max() < 0.05 and a.argmax() == b.argmax()


def test_onnxruntime_int8_build_needs_a_quantized_model(onnx_path, tmp_path):
    assert not is_quantized(onnx_path)
    with pytest.raises(UsageError, match="calibration"):
        OnnxRuntime().build(onnx_path, tmp_path, "int8")


def test_cuda_provider_and_unknown_runtime_are_reported():
    ok, why = get_runtime("onnxruntime-cuda").available()
    if not ok:
        assert why  # e.g. "ONNX Runtime ... has no CUDAExecutionProvider"
        with pytest.raises(BackendUnavailable):
            get_runtime("onnxruntime-cuda").load("whatever.onnx")
    with pytest.raises(UnknownName):
        get_runtime("tflite")
    assert set(RUNTIME_NAMES) >= {"onnxruntime", "onnxruntime-cuda", "tensorrt", "tensorrt-rtx"}


# --- the sidecar refusal (no TensorRT, no GPU) -------------------------------------------------------------------


NANO_GPU = {"name": "NVIDIA Tegra X1", "compute_capability": "5.3"}
RTX4090 = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "index": 0}


def _fake_engine(tmp_path: Path, **sidecar) -> Path:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00garbage that would crash a deserializer\xff" * 10)
    info = {"schema": 1, "runtime": "tensorrt", "tensorrt_version": "8.2.1", "gpu": NANO_GPU, "precision": "fp16",
            "onnx": "model.opset13.onnx", "onnx_sha256": "0" * 64, "build_seconds": 12}
    info.update(sidecar)
    write_sidecar(engine, info)
    return engine


@pytest.fixture()
def no_trt_import(monkeypatch):
    """Any attempt to import TensorRT (i.e. to deserialize) fails the test."""
    def forbidden(flavour):
        raise AssertionError(f"{flavour} was imported: the sidecar check must come before deserialization")

    monkeypatch.setattr(trtmod, "import_trt", forbidden)
    monkeypatch.setattr(trtmod, "installed_version", lambda flavour: "10.3.0")
    monkeypatch.setattr(trtmod, "cuda_device", lambda index=0: dict(RTX4090))


def test_engine_for_another_gpu_and_version_is_refused_before_deserializing(tmp_path, no_trt_import):
    engine = _fake_engine(tmp_path)
    with pytest.raises(EngineMismatch, match="8.2.1.*10.3.0.*[Rr]ebuild it on the device"):
        TensorRT("tensorrt").load(engine)
    # same TensorRT version, other GPU: still refused, naming both GPUs
    _fake_engine(tmp_path, tensorrt_version="10.3.0.26")
    with pytest.raises(EngineMismatch, match="Tegra X1.*RTX 4090.*[Rr]ebuild"):
        TensorRT("tensorrt").load(engine)


def test_engine_without_sidecar_or_from_the_other_flavour_is_refused(tmp_path, no_trt_import):
    engine = _fake_engine(tmp_path, runtime="tensorrt-rtx")
    with pytest.raises(EngineMismatch, match="built by tensorrt-rtx"):
        TensorRT("tensorrt").load(engine)
    (tmp_path / "model.engine.json").unlink()
    with pytest.raises(EngineMismatch, match="no sidecar.*rebuild"):
        TensorRT("tensorrt").load(engine)
    (tmp_path / "model.engine.json").write_text("{truncated")
    with pytest.raises(EngineMismatch, match="unreadable"):
        TensorRT("tensorrt").load(engine)


def test_matching_sidecar_passes_the_check(tmp_path):
    engine = _fake_engine(tmp_path, tensorrt_version="8.2.1", gpu=NANO_GPU)
    info = check_engine(engine, "tensorrt", "8.2.1.8", {"name": "NVIDIA Tegra X1", "compute_capability": "5.3"})
    assert info["precision"] == "fp16"
    assert normalize_version("8201") == "8.2.1" and normalize_version("8.6.1.6") == "8.6.1.6"
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        check_engine(engine, "tensorrt", "8.2.1", None)


def test_rtx_engine_runs_on_any_supported_compute_capability(tmp_path):
    engine = _fake_engine(tmp_path, runtime="tensorrt-rtx", tensorrt_version="1.7.1.116", gpu=None,
                          compute_capabilities=None, min_compute_capability="8.0")
    assert check_engine(engine, "tensorrt-rtx", "1.7.1.116", RTX4090)
    with pytest.raises(EngineMismatch, match="compute capability >= 8.0.*7.5"):
        check_engine(engine, "tensorrt-rtx", "1.7.1.116", {"name": "NVIDIA GeForce RTX 2080", "compute_capability":
                                                           "7.5"})
    _fake_engine(tmp_path, runtime="tensorrt-rtx", tensorrt_version="1.7.1.116", compute_capabilities=["8.6"])
    with pytest.raises(EngineMismatch, match="8.6.*8.9"):
        check_engine(engine, "tensorrt-rtx", "1.7.1.116", RTX4090)


# --- TensorRT-RTX for real ----------------------------------------------------------------------------------------


@pytest.mark.trt
@needs_rtx
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_rtx_parses_and_builds_an_engine(onnx_path, tmp_path, precision):
    rt = TensorRT("tensorrt-rtx")
    assert rt.can_build()[0]
    engine = rt.build(onnx_path, tmp_path, precision, workspace_mb=256)
    info = json.loads((tmp_path / "model.engine.json").read_text())
    assert engine.stat().st_size == info["engine_bytes"] > 10_000
    assert info["runtime"] == "tensorrt-rtx" and info["tensorrt_version"] == rt.version()
    assert info["precision"] == precision and info["layers"] > 10 and info["workspace_mb"] == 256
    assert info["onnx_sha256"] == sha256_file(onnx_path) and info["build_seconds"] > 0
    assert info["timing_cache"] is None and "no-op" in info["timing_cache_note"]
    assert info["built_from"] == ("model.fp16.onnx" if precision == "fp16" else "model.onnx")


def _broken_model(path: Path) -> Path:
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu_ok"),
             helper.make_node("NoSuchOp", ["h"], ["y"], name="mystery_node")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.trt
@needs_rtx
def test_rtx_parser_errors_name_the_node(tmp_path):
    with pytest.raises(EngineBuildFailed, match=r"node #1 'mystery_node' \(NoSuchOp\)"):
        TensorRT("tensorrt-rtx").build(_broken_model(tmp_path / "bad.onnx"), tmp_path, "fp32")
    assert not (tmp_path / "model.engine").exists()


@pytest.mark.trt
@needs_rtx
def test_rtx_int8_needs_a_qdq_model(onnx_path, tmp_path):
    with pytest.raises(UsageError, match="QDQ"):
        TensorRT("tensorrt-rtx").build(onnx_path, tmp_path, "int8")


@pytest.mark.gpu
@needs_gpu
def test_tensorrt_engine_runs_on_the_gpu_like_onnxruntime(onnx_path, tmp_path):
    rt = TensorRT("tensorrt")
    engine = rt.build(onnx_path, tmp_path, "fp32", timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "timing.cache").stat().st_size > 0
    sess = rt.load(engine)
    x = _x()
    np.testing.assert_allclose(sess.run(x), OnnxRuntime(1).load(onnx_path).run(x), atol=1e-2)
    assert time_session(sess, warmup=2, min_repeats=5, min_time_s=0).n >= 5
