"""Calibration on this machine records how far its speed moved while it ran, and says so when it moved."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest


def test_a_calibration_records_the_machines_drift(tiny_profile):
    from conftest import tiny_suite

    from pipeline.predict.profile import load_profile

    drift = load_profile(tiny_profile).method["drift"]
    assert drift["reference"] == tiny_suite()[0].label
    assert drift["start_ms"] > 0 and drift["end_ms"] > 0
    assert drift["drift_pct"] == pytest.approx(100 * (drift["end_ms"] / drift["start_ms"] - 1), abs=0.06)


@pytest.fixture
def reference_onnx(tmp_path):
    from pipeline.fit.calibrate import SuiteEntry, export_entry

    path = tmp_path / "reference.onnx"
    export_entry(SuiteEntry("resnet18", -3.0), path)
    return path


def test_machine_drift_sees_a_cpu_burner(reference_onnx):
    """A process burning both cores while the reference is re-timed shows up as a positive drift."""
    from pipeline.fit.calibrate import machine_drift
    from pipeline.measure.device import LocalDevice
    from pipeline.measure.settings import TimingSettings
    from pipeline.predict.targets import load_target

    device = LocalDevice(load_target("host"), 1)
    settings = TimingSettings(warmup=3, min_repeats=20, min_time_s=0.5)
    quiet = device.measure(reference_onnx, settings).latency.p50_ms
    burners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\n"
                                 "while time.time() < end: pass"]) for _ in range(4)]
    try:
        time.sleep(0.5)
        busy = machine_drift(device, reference_onnx, settings, "resnet18 φ=-3", quiet)
    finally:
        for p in burners:
            p.kill()
            p.wait()
    assert busy["drift_pct"] > 10 and busy["start_ms"] == pytest.approx(quiet, abs=1e-4)


def test_calibrate_warns_about_a_busy_calibration(capsys):
    from pipeline.cli.calibrate import _warn_drift

    _warn_drift(SimpleNamespace(method={"drift": {"reference": "x", "start_ms": 10.0, "end_ms": 13.0,
                                                  "drift_pct": 30.0}}))
    err = capsys.readouterr().err
    assert "warning:" in err and "+30%" in err and "recalibrate on a quiet machine" in err
    _warn_drift(SimpleNamespace(method={"drift": {"reference": "x", "start_ms": 10.0, "end_ms": 10.2,
                                                  "drift_pct": 2.0}}))
    _warn_drift(SimpleNamespace(method={}))
    assert capsys.readouterr().err == ""
