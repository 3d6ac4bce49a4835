"""EfficientNet-Lite works everywhere a family works: predict, fit (and its export), build, train, quantize."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import RANGE

from pipeline.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_predict_a_lite_preset_names_its_family_and_error_case():
    r = run("predict", "--target", "jetson-nano", "--preset", "lite0", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["family"] == "efficientnet-lite" and d["params"] == 4_652_008 and d["latency_ms"] > 0
    # the shipped nano profile never timed a Lite: the error comes from predicting one family from the others
    assert d["error_case"] == "leave-one-family-out" and d["heldout_error_pct"] is not None


def test_fit_and_build_a_lite_for_a_predicted_only_target(tmp_path):
    out = tmp_path / "nano"
    r = run("fit", "--target", "jetson-nano", "--family", "efficientnet-lite", "--latency", "12ms", "--out", str(out),
            "--phi-min", "-4", "--phi-max", "-3", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["family"] == "efficientnet-lite" and d["measured"] is None and d["parity"]
    assert "search took" in r.output and d["search"]["step_seconds"] > 0  # the search step's time, logged
    r = run("build", str(out), "--json")  # fit exported at the nano's opset 13: a trtexec script for the device
    assert r.exit_code == 0, r.output
    engine = json.loads(r.stdout)
    assert engine["onnx_opset"] == 13 and engine["status"] == "script" and (out / "build_on_device.sh").is_file()


@pytest.mark.slow
def test_fit_a_lite_on_host(host_profile, tmp_path):
    r = run("fit", "--target", "host", "--family", "efficientnet-lite", "--latency", "1000ms", "--threads", "1",
            "--out", str(tmp_path / "run"), *RANGE, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["family"] == "efficientnet-lite" and d["verified"]["latency"] is True


@pytest.mark.slow
def test_train_a_lite(tmp_path):
    r = run("train", "--family", "efficientnet-lite", "--phi", "-10", "--data", "builtin:digits", "--epochs", "1",
            "--out", str(tmp_path / "t"), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["family"] == "efficientnet-lite" and (tmp_path / "t" / "checkpoint.pt").is_file()


def test_lite_quantizes_to_integer_kernels_only(tmp_path):
    """No swish, no SE: ONNX Runtime runs every convolution of a Lite as an integer kernel (bench/int8_speedup.py
    has EfficientNet's float Sigmoid/Mul traffic for comparison)."""
    from pipeline.core.scaling import CompoundScaling
    from pipeline.export.onnx import export_onnx
    from pipeline.export.quantize import quantize_onnx
    from pipeline.models import build, initialize

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    fp32 = tmp_path / "lite.onnx"
    # the TorchScript exporter (opset 17) is the quick one; the graph ONNX Runtime runs is the same
    export_onnx(initialize(build("efficientnet-lite", CompoundScaling().compound(-4).with_resolution(32), 10)), fp32,
                opset=17)
    q = quantize_onnx(fp32, tmp_path / "lite-int8.onnx", x)
    assert q.fused_total > 0 and q.float_compute_left == {}
