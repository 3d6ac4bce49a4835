"""`deploy build`: the opset cap, build_on_device.sh (run for real against a stand-in trtexec), int8 inputs,
and, marked ``trt``, a real TensorRT-RTX engine for an rtx-4090 run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from test_trtexec import NEW_KEYS, trace, write_trtexec_json
from tinymodels import RES, RTX_SKIP_REASON, make_run, read_fit, rtx_importable, tiny_model, tiny_onnx

from pipeline.cli import cli
from pipeline.core.errors import EngineMismatch, ExportError, UsageError
from pipeline.engine.build import build_run, onnx_opset, trtexec_args
from pipeline.engine.trtexec import record_trtexec_times
from pipeline.export.onnx import parity
from pipeline.export.quantize import quantize_onnx
from pipeline.runtimes.tensorrt import TensorRT, check_engine

NANO = {"name": "NVIDIA Tegra X1", "compute_capability": "5.3"}


@pytest.fixture(scope="module")
def nano_run(tmp_path_factory) -> tuple[Path, dict]:
    """A jetson-nano fp16 run (model.onnx at opset 18), built once through the CLI."""
    run = make_run(tmp_path_factory.mktemp("nano") / "run", "jetson-nano", precision="fp16")
    result = CliRunner().invoke(cli, ["build", str(run), "--json"])
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def test_jetson_nano_gets_an_opset13_onnx_with_parity(nano_run):
    run, engine = nano_run
    assert onnx_opset(run / "model.onnx") == 18
    path = run / "model.opset13.onnx"
    assert engine["onnx"] == path.name and engine["onnx_opset"] == 13 and engine["onnx_reexported"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert onnx_opset(path) == 13 and engine["onnx_export"]["exporter"] == "torchscript"
    assert engine["onnx_export"]["parity"]["torch"]["passed"]
    assert engine["onnx_export"]["parity"]["vs_source_max_abs"] < 1e-4
    assert parity(tiny_model(), path, n=4, seed=None)  # fresh inputs: ORT on the opset-13 file vs torch
    fit = read_fit(run)
    assert fit["engine"] == engine and fit["artifacts"]["onnx_opset13"] == path.name
    assert fit["artifacts"]["onnx"] == "model.onnx"  # the run's own model is untouched


def test_build_on_device_script_has_the_right_trtexec_flags(nano_run):
    run, engine = nano_run
    assert engine["status"] == "script" and engine["script"] == "build_on_device.sh"
    if TensorRT("tensorrt").version() is None:
        assert "not installed" in engine["why_not_here"]
    script = (run / "build_on_device.sh").read_text()
    assert os.access(run / "build_on_device.sh", os.X_OK) and script.startswith("#!/bin/sh")
    for flag in ["--onnx=model.opset13.onnx", "--saveEngine=model.engine", "--fp16", "--timingCacheFile=timing.cache",
                 "--exportTimes=trtexec_times.json", "--exportProfile=trtexec_profile.json", "--separateProfileRun",
                 "--warmUp=500", "--iterations=200", "--useSpinWait", "WORKSPACE=--memPoolSize=workspace:1024",
                 "WORKSPACE=--workspace=1024", "/usr/src/tensorrt/bin/trtexec", "command -v trtexec"]:
        assert flag in script, flag
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "--int8" not in code and "--calib" not in code and "python" not in code.lower()
    assert subprocess.run(["sh", "-n", str(run / "build_on_device.sh")]).returncode == 0
    assert engine["trtexec"]["args"] == trtexec_args("model.opset13.onnx", "fp16", 1024)


FAKE_TRTEXEC = r"""#!/bin/sh
# Stand-in for JetPack 4's trtexec (TensorRT 8.2): same log lines and output files, no GPU.
echo "$@" >> "$FAKE_ARGS"
for a in "$@"; do
    if [ "$a" = "--help" ]; then
        [ -n "${FAKE_NEW:-}" ] && echo "  --memPoolSize=poolspec      Specify the size constraints of memory pools"
        echo "  --workspace=N               Set workspace size in MiB."
        exit 0
    fi
done
for a in "$@"; do
    case "$a" in
        --saveEngine=*) ENGINE="${a#--saveEngine=}" ;;
        --exportTimes=*) TIMES="${a#--exportTimes=}" ;;
        --exportProfile=*) PROFILE="${a#--exportProfile=}" ;;
        --timingCacheFile=*) CACHE="${a#--timingCacheFile=}" ;;
    esac
done
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # $0 $*"
echo "[11/22/2026-10:00:00] [I] === Device Information ==="
echo "[11/22/2026-10:00:00] [I] Selected Device: NVIDIA Tegra X1"
echo "[11/22/2026-10:00:00] [I] Compute Capability: 5.3"
echo "[11/22/2026-10:00:00] [I] TensorRT version: 8.2.1"
printf 'serialized engine' > "$ENGINE"
printf 'timing cache' > "$CACHE"
cp "$FAKE_TIMES" "$TIMES"
echo '[ { "count" : 200 } ]' > "$PROFILE"
"""


@pytest.mark.parametrize("new_trtexec", [False, True])
def test_script_runs_end_to_end_and_its_timings_come_back(nano_run, tmp_path, new_trtexec):
    src, _ = nano_run
    run = tmp_path / "device"  # what the user copies to the device
    run.mkdir()
    for name in ("build_on_device.sh", "model.opset13.onnx", "fit.json"):
        (run / name).write_bytes((src / name).read_bytes())
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    times = write_trtexec_json(tmp_path / "times.json", trace(5, start_ms=0) + trace(200, start_ms=510),
                               keys=(*NEW_KEYS,))
    env = {**os.environ, "TRTEXEC": str(fake), "FAKE_ARGS": str(tmp_path / "args"), "FAKE_TIMES": str(times),
           **({"FAKE_NEW": "1"} if new_trtexec else {})}
    done = subprocess.run(["sh", str(run / "build_on_device.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "built model.engine with TensorRT 8.2.1 on NVIDIA Tegra X1" in done.stdout
    args = (tmp_path / "args").read_text().splitlines()[-1]
    assert ("--memPoolSize=workspace:1024" in args) == new_trtexec and ("--workspace=1024" in args) != new_trtexec
    assert "--fp16" in args and "--onnx=model.opset13.onnx" in args
    sidecar = json.loads((run / "model.engine.json").read_text())
    assert sidecar["tensorrt_version"] == "8.2.1" and sidecar["gpu"] == NANO and sidecar["precision"] == "fp16"
    assert check_engine(run / "model.engine", "tensorrt", "8.2.1.8", NANO)["onnx"] == "model.opset13.onnx"
    with pytest.raises(EngineMismatch):
        check_engine(run / "model.engine", "tensorrt", "8.2.1", {"name": "Orin", "compute_capability": "8.7"})
    measured = record_trtexec_times(run, run / "trtexec_times.json")  # warm-up and device come from the run
    assert measured["warmup_dropped"] == 5 and measured["repeats"] == 200
    assert measured["device"] == "jetson-nano: NVIDIA Tegra X1 (compute capability 5.3)"
    assert read_fit(run)["verified"]["latency"] is True  # ~1.5 ms against 20 ms


def test_a_sha_mismatch_stops_the_script(nano_run, tmp_path):
    src, _ = nano_run
    run = tmp_path / "device"
    run.mkdir()
    (run / "build_on_device.sh").write_bytes((src / "build_on_device.sh").read_bytes())
    (run / "model.opset13.onnx").write_bytes(b"not the model")
    done = subprocess.run(["sh", str(run / "build_on_device.sh")], env={**os.environ, "TRTEXEC": "/bin/false"},
                          capture_output=True, text=True)
    assert done.returncode == 1 and "sha256 differs" in done.stderr


def test_a_model_that_cannot_be_expressed_at_the_target_opset_is_an_export_error(tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "old-jetson.toml").write_text(
        'name = "old-jetson"\ndescription = "a device whose TensorRT parses opset 8 at most"\nkind = "gpu"\n'
        'runtime = "tensorrt"\nprecisions = ["fp16"]\nmemory_mb = 2048\nmax_onnx_opset = 8\n'
        'trt_workspace_mb = 256\nmeasurable = false\n')
    run = make_run(tmp_path / "run", "old-jetson", precision="fp16")
    with pytest.raises(ExportError, match="cannot be exported at ONNX opset 8, the highest old-jetson's"):
        build_run(run, targets_dir=targets)
    assert "engine" not in read_fit(run)


def test_int8_for_tensorrt_needs_calibration_and_uses_it(tmp_path):
    run = make_run(tmp_path / "run", "rtx-4090", precision="int8")
    with pytest.raises(UsageError, match="model.int8.trt.onnx.*calibration.cache"):
        build_run(run, on_device=True)
    (run / "calibration.cache").write_bytes(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    engine = build_run(run, on_device=True)
    script = (run / "build_on_device.sh").read_text()
    assert engine["int8"] == {"mode": "calibration-cache", "calibration_cache": "calibration.cache"}
    assert "--int8" in script and "--calib=calibration.cache" in script and "--memPoolSize=workspace:4096" in script
    assert engine["onnx"] == "model.opset17.onnx"
    # an explicit (QDQ, symmetric s8) model wins over the cache
    fp32 = tiny_onnx(tmp_path / "fp32.opset17.onnx", opset=17)
    x = np.random.default_rng(0).standard_normal((8, 3, RES, RES), dtype=np.float32)
    quantize_onnx(fp32, run / "model.int8.trt.onnx", x, runtime="tensorrt")
    engine = build_run(run, on_device=True)
    script = (run / "build_on_device.sh").read_text()
    assert engine["int8"] == {"mode": "explicit"} and engine["onnx"] == "model.int8.trt.onnx"
    assert "--int8" in script and "--calib" not in script and not engine["onnx_reexported"]


def test_cpu_targets_have_nothing_to_build(tmp_path):
    run = make_run(tmp_path / "run", "host")
    result = CliRunner().invoke(cli, ["build", str(run)])
    assert result.exit_code == 2 and "runs the ONNX model directly" in result.stderr
    result = CliRunner().invoke(cli, ["build", str(tmp_path)])
    assert result.exit_code == 1 and "no fit.json" in result.stderr


@pytest.mark.trt
@pytest.mark.skipif(not rtx_importable(), reason=RTX_SKIP_REASON)
def test_rtx_4090_run_builds_a_real_engine_here(tmp_path):
    run = make_run(tmp_path / "run", "rtx-4090", precision="fp16")
    result = CliRunner().invoke(cli, ["build", str(run), "--json"])
    assert result.exit_code == 0, result.output
    engine = json.loads(result.stdout)
    assert engine["status"] == "built" and engine["runtime"] in ("tensorrt-rtx", "tensorrt")
    assert engine["onnx"] == "model.opset17.onnx" and engine["layers"] > 10
    sidecar = json.loads((run / "model.engine.json").read_text())
    assert (run / "model.engine").stat().st_size == sidecar["engine_bytes"] == engine["engine_bytes"]
    assert sidecar["precision"] == "fp16" and sidecar["workspace_mb"] == 4096
    fit = read_fit(run)
    assert fit["engine"]["status"] == "built" and fit["artifacts"]["engine"] == "model.engine"
    # --on-device writes the script even where a local build is possible
    engine = json.loads(CliRunner().invoke(cli, ["build", str(run), "--on-device", "--json"]).stdout)
    assert engine["status"] == "script" and engine["why_not_here"] == "--on-device was given"
