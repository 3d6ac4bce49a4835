"""The one measuring interface: a LocalDevice times a real model through the runtime registry."""

import pytest
from tinymodels import tiny_onnx

from pipeline.core.errors import BackendUnavailable
from pipeline.core.io import sha256_file
from pipeline.engine.build import TRTEXEC_TIMING
from pipeline.measure.device import LocalDevice
from pipeline.measure.settings import TIMING, TimingSettings, timing
from pipeline.predict.targets import load_target

QUICK = TimingSettings(warmup=2, min_repeats=8, min_time_s=0.05, rounds=2)


def test_local_device_measures_with_provenance(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    device = LocalDevice(load_target("host"), threads=1)
    m = device.measure(path, QUICK)
    assert m.latency.n >= 16 and len(m.latency.round_p50_ms) == 2 and m.latency.threads == 1
    assert 0 < m.latency.p50_ms <= m.latency.p90_ms <= m.latency.p99_ms
    assert m.memory_mb is not None and m.memory_mb > 0 and "VmHWM" in m.memory_method
    assert m.model_sha256 == sha256_file(path) and m.device.startswith("host: ")
    assert m.runtime["name"] == "onnxruntime" and m.runtime["version"] and m.settings == QUICK
    assert "2 rounds of ≥8 runs" in m.method
    prov = m.provenance()
    assert prov["source"] == "measured" and prov["model_sha256"] == m.model_sha256 and prov["when"] == m.when
    assert device.facts()["threads"] == 1 and "cpu_model" in device.facts()


def test_memory_can_be_skipped(tmp_path):
    m = LocalDevice(load_target("host"), threads=1).measure(tiny_onnx(tmp_path / "m.onnx"), QUICK, memory=False)
    assert m.memory_mb is None and m.memory_method is None


def test_int8_needs_a_quantized_model(tmp_path):
    from pipeline.core.errors import UsageError

    with pytest.raises(UsageError, match="not quantized"):
        LocalDevice(load_target("host"), threads=1).measure(tiny_onnx(tmp_path / "m.onnx"), QUICK, precision="int8")


def test_a_tensorrt_target_without_tensorrt_says_so(tmp_path):
    device = LocalDevice(load_target("jetson-nano"))
    ok, _ = device.runtime.available()
    if ok:
        pytest.skip("TensorRT and a GPU are present here")
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        device.measure(tiny_onnx(tmp_path / "m.onnx"), QUICK)


def test_the_settings_table_has_one_row_per_kind_of_measurement():
    assert set(TIMING) == {"fit", "fit-recheck", "calibrate", "calibrate-quick", "trtexec"}
    assert timing("fit").rounds == 3 and timing("fit").describe() == "10 warm-up, then 3 rounds of ≥20 runs and ≥0.5s"
    assert TRTEXEC_TIMING == timing("trtexec").trtexec() == {"warmup_ms": 500, "iterations": 200, "duration_s": 5,
                                                              "avg_runs": 10}
    with pytest.raises(ValueError):
        TimingSettings(warmup=0, min_repeats=0, min_time_s=1)
