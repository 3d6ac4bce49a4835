"""The standalone device runner (pipeline/measure/edgefit_device.py): Python 3.6 syntax, stdlib only, and real
measurements through its command line.

trtexec fixtures: tests/fixtures/trtexec/README.md names the NVIDIA sources they follow
(https://github.com/NVIDIA/TensorRT/blob/main/samples/common/logging.h for the banner,
samples/common/sampleReporting.cpp for --exportTimes).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tinymodels import tiny_onnx

from pipeline.measure import edgefit_device as dev

RUNNER = Path(dev.__file__)
FIXTURES = Path(__file__).parent / "fixtures" / "trtexec"
QUICK = ["--warmup", "2", "--min-repeats", "5", "--min-time-s", "0.05"]
QUICK_SETTINGS = {"warmup": 2, "min_repeats": 5, "min_time_s": 0.05, "rounds": 1}


def run_runner(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=timeout)


def test_parses_as_python_36() -> None:
    ast.parse(RUNNER.read_text(), feature_version=(3, 6))


def test_imports_only_the_standard_library_and_ort_numpy_lazily() -> None:
    tree = ast.parse(RUNNER.read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file runs alone"
            top_level.add(node.module.split(".")[0])
    assert top_level, "the walk found the imports"
    assert not top_level - sys.stdlib_module_names, top_level - sys.stdlib_module_names
    lazy = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            lazy.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            lazy.add(node.module.split(".")[0])
    assert lazy - sys.stdlib_module_names == {"onnxruntime", "numpy"}
    assert "pipeline" not in lazy


def _python36() -> str | None:
    candidates = sorted(Path.home().glob(".pyenv/versions/3.6*/bin/python3.6")) + [shutil.which("python3.6")]
    for path in filter(None, candidates):
        try:
            if subprocess.run([str(path), "-c", "pass"], capture_output=True, timeout=30).returncode == 0:
                return str(path)
        except OSError:
            continue
    return None


PY36 = _python36()


@pytest.mark.skipif(PY36 is None, reason="no Python 3.6 interpreter on this machine")
def test_runs_under_python_36(tmp_path: Path) -> None:
    """JetPack 4's Python: the runner must really run there, not just parse (numpy/onnxruntime may be absent)."""
    info = subprocess.run([str(PY36), str(RUNNER), "info"], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["python"].startswith("3.6")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    proc = subprocess.run([str(PY36), str(RUNNER), "measure", str(model), *QUICK], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert result["ok"] or result["error"], result


def test_info_prints_the_facts() -> None:
    proc = run_runner("info")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert set(facts) == {"runner_version", "hostname", "system", "machine", "model", "cpu_model", "cpu_count",
                          "memory_mb", "cpu_governor", "nvpmodel", "python", "runtimes", "jetson"}
    assert set(facts["runtimes"]) == {"onnxruntime", "tensorrt", "cuda"}
    import onnxruntime

    assert facts["runtimes"]["onnxruntime"] == onnxruntime.__version__
    assert facts["cpu_count"] >= 1 and facts["memory_mb"] > 0
    assert isinstance(facts["jetson"], bool)


def test_measure_a_tiny_model(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    proc = run_runner("measure", str(model), *QUICK, "--rounds", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True, result
    assert result["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert result["model"] == "tiny.onnx"
    assert result["runtime"]["name"] == "onnxruntime" and result["runtime"]["provider"] == "CPUExecutionProvider"
    lat = result["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["n"] >= 10 and lat["warmup"] == 2 and len(lat["round_p50"]) == 2
    assert lat["total_s"] == pytest.approx(lat["mean"] * lat["n"] / 1000)
    assert result["settings"]["rounds"] == 2 and result["threads"] == 1
    assert result["peak_memory_mb"] is not None and result["peak_memory_mb"] > 0
    assert "child process" in result["memory_method"]
    assert "+" in result["when"][19:] or result["when"].endswith("Z") or "-" in result["when"][19:]


def test_measure_a_corrupt_model_is_a_failed_record(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a model")
    proc = run_runner("measure", str(bad), *QUICK)
    assert proc.returncode == 0
    result = json.loads(proc.stdout)
    assert result["ok"] is False and result["error"] and "\n" not in result["error"]
    assert result["sha256"] == hashlib.sha256(bad.read_bytes()).hexdigest()


def test_run_a_bundle_with_one_broken_model(tmp_path: Path) -> None:
    good = tiny_onnx(tmp_path / "models" / "good.onnx")
    broken = tmp_path / "models" / "broken.onnx"
    broken.write_bytes(good.read_bytes()[:1000])
    manifest = {"format": "edgefit-bundle", "version": 1, "target": "host", "runtime": "onnxruntime",
                "precision": "fp32", "threads": 1, "settings": QUICK_SETTINGS,
                "models": [{"file": "models/good.onnx", "sha256": hashlib.sha256(good.read_bytes()).hexdigest()},
                           {"file": "models/broken.onnx"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    proc = run_runner("run", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "[1/2] models/good.onnx" in proc.stderr
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["format"] == "edgefit-results" and out["version"] == 1 and out["facts"]["runner_version"] == "1"
    first, second = out["results"]
    assert first["ok"] is True and first["file"] == "models/good.onnx"
    assert second["ok"] is False and second["file"] == "models/broken.onnx" and second["error"]
    assert not list(tmp_path.glob(".tmp-*")), "the atomic write left no temp file"


def test_percentile_matches_numpy() -> None:
    rng = random.Random(0)
    for n in (1, 2, 7, 100, 1001):
        data = [rng.expovariate(1.0) for _ in range(n)]
        for q in (0, 1, 50, 90, 99, 100):
            assert dev.percentile(data, q) == pytest.approx(float(np.percentile(data, q)), rel=1e-12, abs=1e-12)
    stats = dev.latency_stats([1.0, 2.0, 4.0], warmup=3)
    assert stats["std"] == pytest.approx(float(np.std([1.0, 2.0, 4.0], ddof=1)))
    assert stats["round_p50"] is None and dev.latency_stats([5.0], 0)["std"] == 0.0


@pytest.mark.parametrize("text, version", [
    ((FIXTURES / "banner-8.2.1.txt").read_text(), (8, 2, 1)),
    ((FIXTURES / "banner-10.3.0.txt").read_text(), (10, 3, 0)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8001] # trtexec", (8, 0, 1)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec", (8, 6, 1)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v101600] [b72] # trtexec", (10, 16, 0)),
    ("no banner here", None),
])
def test_trtexec_banner(text: str, version) -> None:
    assert dev.parse_trtexec_banner(text) == version


def _flags(version):
    settings = {"warmup": 0, "min_repeats": 50, "min_time_s": 3.0, "rounds": 1, "warmup_ms": 200.0, "avg_runs": 10}
    return dev.trtexec_flags(version, "m.onnx", "fp16", settings, "/tmp/t.json", workspace_mib=512)


def test_trtexec_flags_by_version() -> None:
    v80, v82, v86, v10 = _flags((8, 0, 1)), _flags((8, 2, 1)), _flags((8, 6, 1)), _flags((10, 3, 0))
    common = ["--onnx=m.onnx", "--fp16", "--warmUp=200", "--iterations=50", "--duration=3", "--avgRuns=10",
              "--exportTimes=/tmp/t.json"]
    for flags in (v80, v82, v86, v10):
        assert set(common) <= set(flags)
        assert not any("plugin" in f.lower() for f in flags)
    assert "--workspace=512" in v80 and "--workspace=512" in v82
    assert not any(f.startswith("--memPoolSize") for f in v80 + v82)
    assert "--memPoolSize=workspace:512" in v86 and "--memPoolSize=workspace:512" in v10
    assert not any(f.startswith("--workspace") for f in v86 + v10)
    assert not any(f.startswith("--profilingVerbosity") for f in v80)
    assert "--profilingVerbosity=detailed" in v82 and "--profilingVerbosity=detailed" in v10
    odd = dev.trtexec_flags((8, 2, 1), "m.onnx", "fp32", {"min_repeats": 5, "min_time_s": 1.5, "warmup_ms": 99.6,
                                                          "avg_runs": None}, "t.json")
    assert "--duration=2" in odd and "--warmUp=100" in odd and "--avgRuns=1" in odd and "--fp16" not in odd


def test_export_times_parsing() -> None:
    times, dropped = dev.parse_export_times((FIXTURES / "times-8.2.json").read_text(), warmup_ms=200.0)
    assert dropped == 2 and times == [1.05, 1.15, 1.25]
    times, dropped = dev.parse_export_times((FIXTURES / "times-10.json").read_text(), warmup_ms=0.0)
    assert dropped == 0 and times[:2] == [1.21, 1.05] and times[2] == pytest.approx(0.04 + 1.20 + 0.01)
    with pytest.raises(dev.MeasureError, match="no inference records"):
        dev.parse_export_times((FIXTURES / "times-10.json").read_text(), warmup_ms=1000.0)
    with pytest.raises(dev.MeasureError, match="not JSON"):
        dev.parse_export_times("{", warmup_ms=0.0)


def test_trtexec_runtime_without_trtexec_is_a_failed_record(tmp_path: Path, monkeypatch) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    monkeypatch.setenv("TRTEXEC", str(tmp_path / "no-such-trtexec"))
    result = dev.measure(str(model), runtime="tensorrt", settings=QUICK_SETTINGS)
    assert result["ok"] is False and "trtexec not found" in result["error"]


def test_onnx_shape_check() -> None:
    assert dev.looks_like_onnx(b"\x08\x07\x3a\x02\x0a\x00") is None  # ir_version 7, graph {name: ""}
    assert dev.looks_like_onnx(b"") == "empty body"
    assert dev.looks_like_onnx(b"hello world") is not None
    assert dev.looks_like_onnx(b"PK\x03\x04\x14\x00\x00\x00") is not None
    assert "truncated" in dev.looks_like_onnx(b"\x08\x07\x3a\x10\x0a\x00")
    assert "truncated" in dev.looks_like_onnx(b"\x08\x87")


STUB = '''#!{python}
"""A stand-in for trtexec (none on this machine): NVIDIA's banner, then the --exportTimes fixture."""
import os, shutil, sys, time
print("&&&& RUNNING TensorRT.trtexec [TensorRT v{version}] # trtexec " + " ".join(sys.argv[1:]), flush=True)
with open({log!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if any(a.startswith("--onnx=") for a in sys.argv) and os.environ.get("STUB_HANG") == "1":
    time.sleep(600)
for arg in sys.argv[1:]:
    if arg.startswith("--exportTimes="):
        shutil.copy({times!r}, arg.split("=", 1)[1])
'''


def _stub_trtexec(tmp_path: Path, version: str = "8201") -> tuple[Path, Path]:
    log = tmp_path / "trtexec.log"
    stub = tmp_path / "trtexec"
    stub.write_text(STUB.format(python=sys.executable, version=version, log=str(log),
                                times=str(FIXTURES / "times-8.2.json")))
    stub.chmod(0o755)
    return stub, log


def test_measure_with_a_stand_in_trtexec(tmp_path: Path) -> None:
    stub, log = _stub_trtexec(tmp_path)
    model = tiny_onnx(tmp_path / "tiny.onnx")
    env = {**os.environ, "TRTEXEC": str(stub)}
    proc = subprocess.run([sys.executable, str(RUNNER), "measure", str(model), "--runtime", "tensorrt",
                           "--precision", "fp16", "--min-repeats", "3", "--min-time-s", "1", "--warmup-ms", "200",
                           "--avg-runs", "1"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True, result
    assert result["runtime"]["name"] == "tensorrt" and result["runtime"]["version"] == "8.2.1"
    assert result["threads"] is None and result["runtime"]["provider"] is None
    lat = result["latency_ms"]
    assert lat["n"] == 3 and lat["warmup"] == 2 and lat["p50"] == pytest.approx(1.15)
    measured = [line for line in log.read_text().splitlines() if "--onnx=" in line][0].split()
    assert measured == result["runtime"]["flags"]
    assert "--workspace=1024" in measured and "--fp16" in measured and "--warmUp=200" in measured


def test_a_hanging_trtexec_is_killed_at_the_timeout(tmp_path: Path) -> None:
    stub, _ = _stub_trtexec(tmp_path, version="100300")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    env = {**os.environ, "TRTEXEC": str(stub), "STUB_HANG": "1"}
    proc = subprocess.run([sys.executable, str(RUNNER), "measure", str(model), "--runtime", "tensorrt",
                           "--timeout-s", "1"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is False and "timeout" in result["error"]


@pytest.mark.gpu
def test_real_trtexec_builds_and_times_the_engine_on_this_gpu(tmp_path):
    """The real TensorRT path, where a GPU and trtexec are present (skipped elsewhere)."""
    import shutil as _shutil

    trtexec = os.environ.get("TRTEXEC") or next((p for p in ("/usr/src/tensorrt/bin/trtexec", _shutil.which("trtexec"))
                                                 if p and Path(p).is_file()), None)
    if trtexec is None:
        pytest.skip("no trtexec on this machine")
    model = tiny_onnx(tmp_path / "m.onnx")
    proc = subprocess.run([sys.executable, str(RUNNER), "measure", str(model), "--runtime", "tensorrt",
                           "--precision", "fp16", "--min-repeats", "50", "--min-time-s", "1", "--warmup-ms", "200",
                           "--avg-runs", "10"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TRTEXEC": trtexec})
    result = json.loads(proc.stdout)
    assert result["ok"], result
    assert result["runtime"]["name"] == "tensorrt" and result["runtime"]["version"]
    assert result["latency_ms"]["n"] >= 50 and 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]


@pytest.mark.parametrize("threads", [1, 3])
def test_the_runner_times_with_the_host_harness_session_settings(threads):
    """The runner cannot import edgefit, so it repeats the session settings: they must stay equal."""
    import onnxruntime as ort

    from pipeline.runtimes.onnxruntime import session_options

    ours, runner = session_options(threads), dev.session_options(ort, threads)
    for attr in ("intra_op_num_threads", "inter_op_num_threads", "execution_mode", "graph_optimization_level",
                 "log_severity_level"):
        assert getattr(runner, attr) == getattr(ours, attr), attr
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning", "session.force_spinning_stop"):
        assert runner.get_session_config_entry(key) == ours.get_session_config_entry(key), key
