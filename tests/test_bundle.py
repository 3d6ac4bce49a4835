"""Calibration bundles: write one for raspberry-pi-4, fake the device's results.json, import it.

``results.json`` below is a TEST FIXTURE in the protocol's shape (what ``edgefit_device.py run DIR``
writes on a device): the bundle side, the sha256 checks and the import are real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.fit.bundle import write_bundle
from pipeline.predict.targets import device_profile_path, load_target
from tests.conftest import tiny_suite

SUITE = tiny_suite()[:6]
RUNNER = Path(__file__).parents[1] / "pipeline" / "measure" / "edgefit_device.py"
X86 = {"runner_version": "1", "hostname": "ci", "system": "Linux", "machine": "x86_64", "model": "Fake Xeon",
       "cpu_model": "Fake Xeon", "cpu_count": 4, "memory_mb": 8000, "cpu_governor": "performance", "nvpmodel": None,
       "python": "3.11.0", "runtimes": {"onnxruntime": "1.18.0", "tensorrt": None, "cuda": None}, "jetson": False}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("b") / "bundle"
    write_bundle(load_target("raspberry-pi-4"), folder, "fp32", quick=True, suite=SUITE, runner=True)
    return folder


def fake_results(folder: Path, facts: dict, fail: int | None = None) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    results = []
    for i, m in enumerate(manifest["models"]):
        if i == fail:
            results.append({"model": Path(m["file"]).name, "file": m["file"], "sha256": m["sha256"], "ok": False,
                            "error": "onnxruntime: out of memory"})
            continue
        p50 = 2.0 + i
        results.append({"model": Path(m["file"]).name, "file": m["file"], "sha256": m["sha256"], "ok": True,
                        "runtime": {"name": "onnxruntime", "version": "1.18.0", "provider": "CPUExecutionProvider",
                                    "flags": None},
                        "precision": "fp32", "threads": 4, "settings": manifest["settings"],
                        "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2, "mean": p50, "std": 0.1,
                                       "min": p50 * 0.9, "max": p50 * 1.3, "n": 30, "total_s": 0.1, "warmup": 10,
                                       "round_p50": None},
                        "peak_memory_mb": 20.0 + i, "memory_method": "VmHWM", "when": "2026-01-01T00:00:00+00:00",
                        "seconds": 2.0})
    (folder / "results.json").write_text(json.dumps({
        "format": "edgefit-results", "version": 1, "facts": facts, "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:01:00+00:00", "results": results}))


def test_bundle_layout(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "edgefit-bundle" and manifest["target"] == "raspberry-pi-4"
    assert manifest["runtime"] == "onnxruntime" and manifest["threads"] == 4
    assert manifest["settings"] == {"warmup": 3, "min_repeats": 10, "min_time_s": 0.4, "rounds": 1}  # calibrate-quick
    assert len(manifest["models"]) == len(SUITE)
    import onnx

    for m in manifest["models"]:
        assert (bundle / m["file"]).is_file() and m["resolution"] > 0 and m["macs"] > 0
        assert onnx.load(str(bundle / m["file"])).opset_import[0].version == 18  # raspberry-pi-4's max_onnx_opset
    assert (bundle / "edgefit_device.py").read_bytes() == RUNNER.read_bytes()  # the one copy


def test_import_writes_a_measured_profile_and_warns(bundle):
    fake_results(bundle, X86, fail=2)
    result = CliRunner().invoke(cli, ["calibrate", "--target", "raspberry-pi-4", "--import", str(bundle), "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: not measured on the device: models/02-" in result.stderr and "out of memory" in result.stderr
    assert "is a Raspberry Pi but the device is Fake Xeon (x86_64)" in result.stderr
    summary = json.loads(result.stdout)
    path = device_profile_path("raspberry-pi-4", "onnxruntime", "fp32")
    assert summary["profile"] == str(path) and summary["records"] == len(SUITE) - 1
    assert "unknown_architecture_error_pct" in summary  # what predict --onnx states for a foreign model
    profile = json.loads(path.read_text())
    assert profile["provenance"] == "measured" and profile["device"]["model"] == "Fake Xeon"
    assert profile["records"][0]["latency_ms"]["p50"] == 2.0 and profile["records"][0]["peak_memory_mb"] == 20.0
    assert load_target("raspberry-pi-4").profile_path("fp32") == path  # predictions now use it


def test_import_of_a_pi_has_no_mismatch_warning(bundle, tmp_path):
    pi = {**X86, "machine": "aarch64", "model": "Raspberry Pi 4 Model B Rev 1.4"}
    fake_results(bundle, pi)
    out = tmp_path / "p.json"
    result = CliRunner().invoke(cli, ["calibrate", "--target", "raspberry-pi-4", "--import", str(bundle),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and out.is_file()


def test_a_changed_model_fails_the_import(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    fake_results(copy, X86)
    manifest = json.loads((copy / "manifest.json").read_text())
    victim = copy / manifest["models"][1]["file"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["calibrate", "--target", "raspberry-pi-4", "--import", str(copy)])
    assert result.exit_code == 1
    assert manifest["models"][1]["file"] in result.output and "sha256" in result.output
    victim.unlink()
    result = CliRunner().invoke(cli, ["calibrate", "--target", "raspberry-pi-4", "--import", str(copy)])
    assert result.exit_code == 1 and "missing" in result.output


def test_import_refuses_another_target(bundle):
    result = CliRunner().invoke(cli, ["calibrate", "--target", "raspberry-pi-5", "--import", str(bundle)])
    assert result.exit_code == 2 and "for target 'raspberry-pi-4'" in result.output


def test_device_script_writes_the_runner(tmp_path):
    result = CliRunner().invoke(cli, ["device-script", str(tmp_path / "r.py")])
    assert result.exit_code == 0 and (tmp_path / "r.py").read_bytes() == RUNNER.read_bytes()


def test_the_bundle_runs_on_the_device_and_imports_as_measured(tmp_path):
    """The whole offline route with the real runner: bundle -> `python3 b/edgefit_device.py run b/` -> import."""
    import subprocess
    import sys

    from click.testing import CliRunner

    from pipeline.cli import cli

    b = tmp_path / "b"
    write_bundle(load_target("raspberry-pi-4"), b, "fp32", quick=True, suite=SUITE[:2], runner=True)
    done = subprocess.run([sys.executable, str(b / "edgefit_device.py"), "run", str(b)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((b / "results.json").read_text())
    assert all(r["ok"] for r in results["results"]), results
    r = CliRunner().invoke(cli, ["calibrate", "--target", "raspberry-pi-4", "--import", str(b), "--out",
                                 str(tmp_path / "p.json")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    profile = json.loads((tmp_path / "p.json").read_text())
    assert profile["provenance"] == "measured" and len(profile["records"]) == 2
    assert profile["device"]["machine"] == results["facts"]["machine"]  # what the machine really is
    assert "raspberry" in r.stderr.lower() or "does not look like" in r.stderr.lower()  # and that it is no Pi
    model = next((b / "models").glob("*.onnx"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    r = CliRunner().invoke(cli, ["calibrate", "--target", "raspberry-pi-4", "--import", str(b), "--out",
                                 str(tmp_path / "p2.json")], catch_exceptions=False)
    assert r.exit_code == 1 and model.name in r.stderr

