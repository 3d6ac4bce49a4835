#!/usr/bin/env python3
# ruff: noqa: UP006, UP007, UP035, UP045
# (typing.List/Optional on purpose: Python 3.6 cannot subscript list/dict or use X | None)
"""edgefit device runner: measures ONNX models on an edge device, standalone.

This one file is copied to the device (``deploy device-script OUT.py``, calibration bundles) and is
also the measurement agent (``serve``). It therefore uses the Python standard library only and runs
under Python >= 3.6 (JetPack 4 ships 3.6): no dataclasses, no ``capture_output``, no walrus, no
``ThreadingHTTPServer``, no postponed annotations, and it imports nothing from ``pipeline``.
``onnxruntime``/``numpy`` are imported lazily, only inside the measuring child process.

Commands:
  info                      the device facts as JSON
  measure MODEL.onnx [...]  one result JSON (exit 0 even when ok=false)
  run DIR                   measure every model of DIR/manifest.json into DIR/results.json (atomically)
  serve [...]               the HTTP measurement agent: GET /v1/info, POST /v1/measure (raw ONNX body);
                            bearer token (--token-file or $EDGEFIT_AGENT_TOKEN, required off loopback),
                            body cap checked before reading, one job at a time behind a bounded queue (429),
                            job timeout (504), uploads stored under uuid names in a private 0700 directory

Every measurement runs in a child process (``python edgefit_device.py _child ...`` or ``trtexec``)
that is killed after its timeout; the parent never loads a model itself, so a model that crashes or
hangs the runtime costs one result, not the runner.

Test hooks (honoured only when ``EDGEFIT_DEVICE_TESTING=1`` is also set, never in normal use):
``EDGEFIT_DEVICE_TEST_HANG=1`` makes the ONNX Runtime child sleep forever instead of measuring, so
tests can check that a hanging model is killed at its timeout.
"""

import argparse
import hashlib
import hmac
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

RUNNER_VERSION = "1"
RUNTIMES = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_SETTINGS = {"warmup": 10, "min_repeats": 30, "min_time_s": 1.5, "rounds": 1, "warmup_ms": None,
                    "avg_runs": None}
TRTEXEC_DEFAULTS = {"warmup_ms": 500.0, "avg_runs": 1}
WORKSPACE_MIB = 1024
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec",)


class MeasureTimeout(Exception):
    """The child ran past its timeout and was killed (the agent answers 504)."""


class MeasureError(Exception):
    """A measurement failed; the message is one line and becomes the result's ``error``."""


# ---------------------------------------------------------------------------------------------
# statistics


def percentile(values: List[float], q: float) -> float:
    """numpy's default (linear interpolation) percentile, in pure Python: the device may lack numpy."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_stats(times_ms: List[float], warmup: int, rounds: Optional[List[List[float]]] = None) -> dict:
    """The protocol's ``latency_ms`` object; ``round_p50`` only when there was more than one round."""
    n = len(times_ms)
    mean = sum(times_ms) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in times_ms) / (n - 1)) if n > 1 else 0.0
    return {"p50": percentile(times_ms, 50), "p90": percentile(times_ms, 90), "p99": percentile(times_ms, 99),
            "mean": mean, "std": std, "min": min(times_ms), "max": max(times_ms), "n": n,
            "total_s": sum(times_ms) / 1000.0, "warmup": warmup,
            "round_p50": [percentile(r, 50) for r in rounds] if rounds and len(rounds) > 1 else None}


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line[:limit] if line else "unknown error"


# ---------------------------------------------------------------------------------------------
# device facts


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _run_text(cmd: List[str], timeout: float = 30.0) -> Optional[str]:
    """stdout+stderr of a short command, or None when it cannot run (missing, hangs, fails to start)."""
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    except OSError:
        return None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return out


def cpu_model() -> Optional[str]:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Processor", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or None


def memory_mb() -> Optional[float]:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return None


def nvpmodel_mode() -> Optional[str]:
    if not shutil.which("nvpmodel"):
        return None
    out = _run_text(["nvpmodel", "-q"], timeout=10)
    for line in (out or "").splitlines():
        if "Power Mode" in line:
            return line.strip()
    return None


def onnxruntime_version() -> Optional[str]:
    """Asked of a child interpreter, so the parent (the agent) never holds onnxruntime in memory."""
    out = _run_text([sys.executable, "-c", "import onnxruntime, sys; sys.stdout.write(onnxruntime.__version__)"],
                    timeout=120)
    if out and re.match(r"^[0-9][0-9A-Za-z.+-]*$", out.strip()):
        return out.strip()
    return None


def cuda_version() -> Optional[str]:
    text = _read("/usr/local/cuda/version.json")
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    text = _read("/usr/local/cuda/version.txt")
    if text:
        m = re.search(r"CUDA Version\s+([0-9.]+)", text)
        if m:
            return m.group(1)
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc:
        m = re.search(r"release\s+([0-9.]+)", _run_text([nvcc, "--version"], timeout=30) or "")
        if m:
            return m.group(1)
    return None


def facts() -> dict:
    """What this device is, so every result can say where it was measured."""
    tree_model = _read("/proc/device-tree/model")
    tree_model = tree_model.replace("\x00", "").strip() if tree_model else None
    cpu = cpu_model()
    trt = find_trtexec()
    trt_version = None
    if trt:
        version = trtexec_version(trt)
        trt_version = ".".join(str(v) for v in version) if version else None
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    jetson = os.path.exists("/etc/nv_tegra_release") or bool(tree_model and "jetson" in tree_model.lower())
    return {"runner_version": RUNNER_VERSION, "hostname": socket.gethostname(), "system": platform.system(),
            "machine": platform.machine(), "model": tree_model or cpu or platform.processor() or None,
            "cpu_model": cpu, "cpu_count": os.cpu_count(), "memory_mb": memory_mb(),
            "cpu_governor": governor.strip() if governor else None, "nvpmodel": nvpmodel_mode(),
            "python": platform.python_version(),
            "runtimes": {"onnxruntime": onnxruntime_version(), "tensorrt": trt_version, "cuda": cuda_version()},
            "jetson": jetson}


# ---------------------------------------------------------------------------------------------
# trtexec: pure functions (tested without trtexec) and the runner


def find_trtexec() -> Optional[str]:
    env = os.environ.get("TRTEXEC")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    for path in TRTEXEC_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("trtexec")


def parse_trtexec_banner(text: str) -> Optional[Tuple[int, int, int]]:
    """TensorRT (major, minor, patch) from trtexec's first line, ``&&&& RUNNING TensorRT.trtexec [TensorRT vN]``.

    N is ``NV_TENSORRT_VERSION``: major*1000 + minor*100 + patch up to TensorRT 8 (``v8201`` = 8.2.1,
    NvInfer.h) and major*10000 + minor*100 + patch from TensorRT 10 (``v100300`` = 10.3.0,
    NvInferVersion.h). A dotted form (``v10.3.0``) is read as it is.
    """
    m = re.search(r"\[TensorRT v(\d+(?:\.\d+)*)\]", text)
    if not m:
        return None
    raw = m.group(1)
    if "." in raw:
        parts = [int(p) for p in raw.split(".")] + [0, 0]
        return parts[0], parts[1], parts[2]
    n = int(raw)
    if n >= 100000:
        return n // 10000, n // 100 % 100, n % 100
    return n // 1000, n // 100 % 10, n % 100


def trtexec_version(trtexec: str) -> Optional[Tuple[int, int, int]]:
    """Every trtexec prints its banner first, ``--help`` included (8.x has no ``--version``)."""
    return parse_trtexec_banner(_run_text([trtexec, "--help"], timeout=60) or "")


def trtexec_flags(version: Tuple[int, int, int], model: str, precision: str, settings: dict, times_file: str,
                  workspace_mib: int = WORKSPACE_MIB) -> List[str]:
    """trtexec's arguments for this TensorRT version (never plugin flags).

    * workspace: ``--workspace=MiB`` before 8.4; ``--memPoolSize=workspace:MiB`` from 8.4 (``--workspace``
      is deprecated there and removed in 10, where memPoolSize is the only way).
    * ``--profilingVerbosity=detailed`` from 8.2 (8.0 does not know the flag), so the engine can be inspected.
    """
    flags = ["--onnx=" + model]
    if precision == "fp16":
        flags.append("--fp16")
    elif precision == "int8":
        flags.append("--int8")
    if version < (8, 4, 0):
        flags.append(f"--workspace={int(workspace_mib)}")
    else:
        flags.append(f"--memPoolSize=workspace:{int(workspace_mib)}")
    if version >= (8, 2, 0):
        flags.append("--profilingVerbosity=detailed")
    warmup_ms = settings.get("warmup_ms")
    avg_runs = settings.get("avg_runs")
    # integers: older trtexec parses --warmUp and --duration as int (sampleOptions.h `int duration`); the
    # duration is rounded up so that "at least min_time_s" still holds
    flags += ["--warmUp={}".format(int(round(TRTEXEC_DEFAULTS["warmup_ms"] if warmup_ms is None else warmup_ms))),
              "--iterations={}".format(int(settings["min_repeats"])),
              "--duration={}".format(int(math.ceil(float(settings["min_time_s"])))),
              "--avgRuns={}".format(int(TRTEXEC_DEFAULTS["avg_runs"] if avg_runs is None else avg_runs)),
              "--exportTimes=" + times_file]
    return flags


def parse_export_times(text: str, warmup_ms: float) -> Tuple[List[float], int]:
    """Per-inference latencies (ms) from ``--exportTimes`` JSON and how many warm-up records were dropped.

    ``latencyMs`` per record, else h2dMs + computeMs + d2hMs; records starting compute before
    ``warmup_ms`` are warm-up (older trtexec writes them). ``endToEndMs`` is optional and unused.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MeasureError(f"trtexec --exportTimes file is not JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise MeasureError("trtexec --exportTimes file is not a list of per-inference records")
    times = []
    dropped = 0
    for rec in data:
        start = rec.get("startComputeMs")
        if isinstance(start, (int, float)) and start < warmup_ms:
            dropped += 1
            continue
        value = rec.get("latencyMs")
        if not isinstance(value, (int, float)):
            parts = [rec.get(k) for k in ("h2dMs", "computeMs", "d2hMs")]
            if not all(isinstance(p, (int, float)) for p in parts):
                raise MeasureError(f"trtexec record without latencyMs or h2dMs/computeMs/d2hMs: {rec}")
            value = sum(parts)
        times.append(float(value))
    if not times:
        raise MeasureError(f"trtexec wrote no inference records after warm-up ({dropped} dropped)")
    return times, dropped


def measure_trtexec(model: str, precision: str, settings: dict, timeout_s: float) -> dict:
    trt = find_trtexec()
    if not trt:
        raise MeasureError("trtexec not found: set $TRTEXEC, or install TensorRT (/usr/src/tensorrt/bin/trtexec)")
    version = trtexec_version(trt)
    if not version:
        raise MeasureError(f"cannot read the TensorRT version from {trt}'s banner")
    workdir = tempfile.mkdtemp(prefix="edgefit-trt-")
    try:
        times_file = os.path.join(workdir, "times.json")
        flags = trtexec_flags(version, model, precision, settings, times_file)
        code, out, err = run_child([trt] + flags, timeout_s)
        if code != 0:
            tail = (err or out or "").strip().splitlines()[-3:]
            raise MeasureError("trtexec exited with {}: {}".format(code, one_line(" | ".join(tail))))
        warmup_ms = settings.get("warmup_ms")
        warmup_ms = float(TRTEXEC_DEFAULTS["warmup_ms"] if warmup_ms is None else warmup_ms)
        with open(times_file) as f:
            times, dropped = parse_export_times(f.read(), warmup_ms)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"runtime": {"name": "tensorrt", "version": ".".join(str(v) for v in version), "provider": None,
                        "flags": flags},
            "latency_ms": latency_stats(times, dropped), "peak_memory_mb": None,
            "memory_method": "not measured (trtexec)"}


# ---------------------------------------------------------------------------------------------
# child processes


def run_child(cmd: List[str], timeout_s: float, env: Optional[dict] = None) -> Tuple[int, str, str]:
    """Run ``cmd`` in its own process group; past ``timeout_s`` the whole group is killed (MeasureTimeout)."""
    kwargs = {}
    if os.name == "posix":
        kwargs["start_new_session"] = True
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            universal_newlines=True, env=env, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.communicate()
        raise MeasureTimeout(f"measurement ran past its {timeout_s:g} s timeout and was killed") from None
    except BaseException:
        _kill(proc)
        raise
    return proc.returncode, out, err


def _kill(proc: subprocess.Popen) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except OSError:
        pass


def _status_kib(key: str) -> Optional[int]:
    for line in (_read("/proc/self/status") or "").splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_kib() -> Optional[int]:
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB on Linux


def _random_feeds(sess) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        data = rng.standard_normal(shape, dtype=np.float32)
        if inp.type == "tensor(float16)":
            data = data.astype(np.float16)
        elif inp.type != "tensor(float)":
            data = np.zeros(shape, dtype=np.int64 if "int64" in inp.type else np.int32)
        feeds[inp.name] = data
    return feeds


def session_options(ort, threads):
    """ONNX Runtime settings for timing: the same as edgefit's host harness (pipeline/runtimes/onnxruntime.py).

    This file cannot import edgefit, so the settings are written out here; a test keeps the two equal.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.log_severity_level = 3
    return so


def child_measure(model: str, threads: int, settings: dict) -> dict:
    """The ONNX Runtime measurement, in the child: session as pipeline/runtimes/onnxruntime.py configures it."""
    if os.environ.get("EDGEFIT_DEVICE_TESTING") == "1" and os.environ.get("EDGEFIT_DEVICE_TEST_HANG") == "1":
        while True:  # test hook: a model that hangs the runtime
            time.sleep(60)
    import numpy  # noqa: F401  (part of the memory baseline, like onnxruntime)
    import onnxruntime as ort

    if _reset_peak() and _status_kib("VmHWM") is not None:
        baseline = _status_kib("VmHWM")
        method = "VmHWM delta in a child process; peak reset via /proc/self/clear_refs after importing onnxruntime"
        read_peak = lambda: _status_kib("VmHWM")  # noqa: E731
    else:
        baseline = _status_kib("VmRSS") or 0
        method = "ru_maxrss minus baseline RSS in a child process (upper bound: includes import-time peaks)"
        read_peak = _maxrss_kib
    sess = ort.InferenceSession(model, sess_options=session_options(ort, threads), providers=["CPUExecutionProvider"])
    feeds = _random_feeds(sess)
    for _ in range(settings["warmup"]):
        sess.run(None, feeds)
    rounds = []
    for _ in range(settings["rounds"]):
        times = []
        start = time.perf_counter()
        while len(times) < settings["min_repeats"] or time.perf_counter() - start < settings["min_time_s"]:
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append((time.perf_counter() - t0) * 1000.0)
        rounds.append(times)
    peak = read_peak()
    peak_mb = round(max(0, peak - baseline) / 1024.0, 3) if peak is not None else None
    return {"rounds": rounds, "version": ort.__version__, "provider": sess.get_providers()[0],
            "peak_memory_mb": peak_mb, "memory_method": method + "; session creation + all runs"}


def child_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgefit_device.py _child")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--settings", required=True)
    args = parser.parse_args(argv)
    try:
        reply = child_measure(args.model, args.threads, json.loads(args.settings))
        code = 0
    except Exception as exc:  # one line to the parent, never a traceback
        reply = {"error": one_line(f"{type(exc).__name__}: {exc}")}
        code = 1
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    return code


def measure_onnxruntime(model: str, threads: int, settings: dict, timeout_s: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "_child", model, "--threads", str(threads),
           "--settings", json.dumps(settings)]
    code, out, err = run_child(cmd, timeout_s)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    try:
        reply = json.loads(lines[-1]) if lines else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        tail = (err or "").strip().splitlines()[-1:] or ["no output"]
        raise MeasureError(f"onnxruntime child exited with {code}: {one_line(tail[0])}")
    if "error" in reply:
        raise MeasureError(reply["error"])
    all_times = [t for r in reply["rounds"] for t in r]
    return {"runtime": {"name": "onnxruntime", "version": reply["version"], "provider": reply["provider"],
                        "flags": None},
            "latency_ms": latency_stats(all_times, settings["warmup"], reply["rounds"]),
            "peak_memory_mb": reply["peak_memory_mb"], "memory_method": reply["memory_method"]}


# ---------------------------------------------------------------------------------------------
# measure / run


def check_settings(raw: dict) -> dict:
    """The timing settings with defaults filled in; a bad value raises ValueError naming it."""
    s = dict(DEFAULT_SETTINGS)
    s.update({k: v for k, v in raw.items() if v is not None})
    unknown = set(s) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ValueError("unknown timing setting(s): {}".format(", ".join(sorted(unknown))))
    for key in ("warmup", "min_repeats", "rounds"):
        if isinstance(s[key], bool) or not isinstance(s[key], int):
            raise ValueError(f"{key} must be an integer, got {s[key]!r}")
    s["min_time_s"] = float(s["min_time_s"])
    if s["warmup"] < 0 or s["min_repeats"] < 1 or s["rounds"] < 1 or not 0 <= s["min_time_s"] <= 3600:
        raise ValueError("invalid timing settings: warmup >= 0, min_repeats >= 1, rounds >= 1, "
                         "0 <= min_time_s <= 3600")
    if s["warmup_ms"] is not None:
        s["warmup_ms"] = float(s["warmup_ms"])
        if s["warmup_ms"] < 0:
            raise ValueError("warmup_ms must be >= 0")
    if s["avg_runs"] is not None and (not isinstance(s["avg_runs"], int) or s["avg_runs"] < 1):
        raise ValueError("avg_runs must be an integer >= 1")
    return s


def measure(model: str, runtime: str = "onnxruntime", precision: str = "fp32", threads: Optional[int] = 1,
            settings: Optional[dict] = None, timeout_s: float = 600.0, raise_timeout: bool = False) -> dict:
    """One result JSON for ``model``; every failure becomes ``ok: false`` (a timeout too, unless raise_timeout)."""
    name = os.path.basename(model)
    try:
        digest = sha256_file(model)
    except OSError as exc:
        return {"model": name, "sha256": None, "ok": False, "error": one_line(f"cannot read {model}: {exc}")}
    started = time.time()
    try:
        if runtime not in RUNTIMES:
            raise MeasureError("unknown runtime {!r}: one of {}".format(runtime, ", ".join(RUNTIMES)))
        if precision not in PRECISIONS:
            raise MeasureError("unknown precision {!r}: one of {}".format(precision, ", ".join(PRECISIONS)))
        try:
            settings = check_settings(settings or {})
        except ValueError as exc:
            raise MeasureError(str(exc)) from None
        if runtime == "onnxruntime":
            threads = int(threads or 1)
            if threads < 1:
                raise MeasureError("threads must be >= 1")
            part = measure_onnxruntime(model, threads, settings, timeout_s)
        else:
            threads = None
            part = measure_trtexec(model, precision, settings, timeout_s)
    except MeasureTimeout as exc:
        if raise_timeout:
            raise
        return {"model": name, "sha256": digest, "ok": False, "error": one_line(str(exc))}
    except (MeasureError, OSError, ValueError, KeyError, TypeError) as exc:
        return {"model": name, "sha256": digest, "ok": False, "error": one_line(str(exc) or type(exc).__name__)}
    result = {"model": name, "sha256": digest, "ok": True, "runtime": part["runtime"], "precision": precision,
              "threads": threads, "settings": settings, "latency_ms": part["latency_ms"],
              "peak_memory_mb": part["peak_memory_mb"], "memory_method": part["memory_method"], "when": now_iso(),
              "seconds": round(time.time() - started, 3)}
    return result


def atomic_write_json(path: str, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_bundle(directory: str, timeout_s: float = 600.0) -> dict:
    """Measure every model of ``DIR/manifest.json``; write ``DIR/results.json`` atomically."""
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or manifest.get("format") != "edgefit-bundle":
        raise MeasureError(f"{directory}/manifest.json is not an edgefit bundle manifest")
    started = now_iso()
    info = facts()
    results = []
    models = manifest.get("models") or []
    root = os.path.realpath(directory)
    for i, entry in enumerate(models):
        file = entry.get("file", "")
        path = os.path.realpath(os.path.join(directory, file))
        sys.stderr.write(f"[{i + 1}/{len(models)}] {file}\n")
        sys.stderr.flush()
        if not path.startswith(root + os.sep):
            result = {"model": os.path.basename(file), "sha256": None, "ok": False,
                      "error": f"model path {file!r} leaves the bundle directory"}
        else:
            result = measure(path, manifest.get("runtime", "onnxruntime"), manifest.get("precision", "fp32"),
                             manifest.get("threads"), manifest.get("settings") or {}, timeout_s)
            expected = entry.get("sha256")
            if result.get("ok") and expected and result["sha256"] != expected:
                result = {"model": result["model"], "sha256": result["sha256"], "ok": False,
                          "error": "sha256 mismatch: manifest says {}, file is {}".format(expected, result["sha256"])}
        result["file"] = file
        sys.stderr.write("    {}\n".format("ok p50 {:.3f} ms".format(result["latency_ms"]["p50"]) if result["ok"]
                                           else "failed: " + result["error"]))
        results.append(result)
    out = {"format": "edgefit-results", "version": 1, "facts": info, "started": started, "finished": now_iso(),
           "results": results}
    atomic_write_json(os.path.join(directory, "results.json"), out)
    return out


# ---------------------------------------------------------------------------------------------
# the HTTP agent


def looks_like_onnx(data: bytes) -> Optional[str]:
    """None when ``data`` parses as a protobuf ModelProto with ir_version (1) and graph (7), else why not."""
    if not data:
        return "empty body"
    pos, n, seen = 0, len(data), set()

    def varint(p: int) -> Tuple[int, int]:
        value, shift = 0, 0
        while True:
            if p >= n or shift > 63:
                raise ValueError("truncated varint")
            b = data[p]
            value |= (b & 0x7F) << shift
            p += 1
            if not b & 0x80:
                return value, p
            shift += 7

    try:
        while pos < n:
            key, pos = varint(pos)
            field, wire = key >> 3, key & 7
            if field < 1 or field > 64:
                return f"not an ONNX model (field number {field} at byte {pos})"
            if wire == 0:
                _, pos = varint(pos)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                length, pos = varint(pos)
                pos += length
            elif wire == 5:
                pos += 4
            else:
                return f"not an ONNX model (wire type {wire} at byte {pos})"
            if pos > n:
                return "not a complete ONNX model (a field runs past the end of the body: truncated, or not ONNX)"
            seen.add((field, wire))
    except ValueError:
        return "not a complete ONNX model (an unfinished varint: truncated, or not ONNX)"
    if (1, 0) not in seen or (7, 2) not in seen:
        return "not an ONNX model (no ir_version and graph)"
    return None


MEASURE_PARAMS = {"runtime": str, "precision": str, "threads": int, "warmup": int, "min_repeats": int,
                  "min_time_s": float, "rounds": int, "warmup_ms": float, "avg_runs": int}


def parse_measure_query(query: str) -> dict:
    """The query parameters of POST /v1/measure, validated; ValueError names the bad one."""
    params = parse_qs(query, keep_blank_values=True)
    out = {}
    for key, values in params.items():
        if key not in MEASURE_PARAMS:
            raise ValueError(f"unknown parameter {key[:40]!r}")
        if len(values) != 1:
            raise ValueError(f"parameter {key!r} given more than once")
        kind = MEASURE_PARAMS[key]
        try:
            value = kind(values[0])
        except ValueError:
            article = "an" if kind is int else "a"
            raise ValueError(f"parameter {key} must be {article} {kind.__name__}") from None
        if kind is float and not math.isfinite(value):
            raise ValueError(f"parameter {key} must be finite")
        out[key] = value
    out.setdefault("runtime", "onnxruntime")
    out.setdefault("precision", "fp32")
    if out["runtime"] not in RUNTIMES:
        raise ValueError("unknown runtime {!r}: one of {}".format(out["runtime"][:40], ", ".join(RUNTIMES)))
    if out["precision"] not in PRECISIONS:
        raise ValueError("unknown precision {!r}: one of {}".format(out["precision"][:40], ", ".join(PRECISIONS)))
    if "threads" in out and not 1 <= out["threads"] <= 1024:
        raise ValueError("threads must be between 1 and 1024")
    settings = {k: out.pop(k) for k in list(out) if k in DEFAULT_SETTINGS}
    out["settings"] = check_settings(settings)
    return out


class AgentServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # listen backlog: a burst of clients is answered (maybe 429), not refused

    def __init__(self, address, token: Optional[str], max_body: int, queue: int, job_timeout_s: float,
                 max_requests: Optional[int]):
        HTTPServer.__init__(self, address, AgentHandler)
        self.token = token
        self.max_body = max_body
        self.queue = queue
        self.job_timeout_s = job_timeout_s
        self.max_requests = max_requests
        self.workdir = tempfile.mkdtemp(prefix="edgefit-agent-")
        os.chmod(self.workdir, 0o700)
        self.admitted = 0
        self.admit_lock = threading.Lock()
        self.job_lock = threading.Lock()
        self.count_lock = threading.Lock()
        self.handled = 0
        self.facts = None
        self.runtimes = None

    def info(self) -> dict:
        if self.facts is None:
            self.facts = facts()
            rt = self.facts["runtimes"]
            self.runtimes = [n for n in RUNTIMES if rt.get(n)]
        return {"facts": self.facts, "runtimes": self.runtimes, "max_body_bytes": self.max_body}

    def admit(self) -> bool:
        with self.admit_lock:
            if self.admitted >= self.queue + 1:  # one running + `queue` waiting
                return False
            self.admitted += 1
            return True

    def release(self) -> None:
        with self.admit_lock:
            self.admitted -= 1

    def request_done(self) -> None:
        with self.count_lock:
            self.handled += 1
            done = self.max_requests is not None and self.handled >= self.max_requests
        if done:
            threading.Thread(target=self.shutdown, daemon=True).start()


class AgentHandler(BaseHTTPRequestHandler):
    server_version = "edgefit-agent/" + RUNNER_VERSION
    protocol_version = "HTTP/1.0"
    timeout = 120  # a client that stops sending is dropped, not waited on forever

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        sys.stderr.write("agent: " + (format % args) + "\n")

    def send_json(self, code: int, body: dict, headers: Optional[Dict[str, str]] = None) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    def authorized(self) -> bool:
        token = self.server.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        expected = "Bearer " + token
        return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))

    def route(self) -> None:
        try:
            if not self.authorized():
                self.send_json(401, {"error": "missing or wrong token: send 'Authorization: Bearer <token>'"},
                               {"WWW-Authenticate": "Bearer"})
                return
            url = urlsplit(self.path)
            allowed = {"/v1/info": "GET", "/v1/measure": "POST"}.get(url.path)
            if allowed is None:
                self.send_json(404, {"error": "unknown path; use GET /v1/info or POST /v1/measure"})
            elif self.command != allowed:
                self.send_json(405, {"error": f"{url.path} needs {allowed}"}, {"Allow": allowed})
            elif allowed == "GET":
                self.send_json(200, self.server.info())
            else:
                self.measure(url.query)
        except Exception as exc:  # the agent must keep serving; the client gets JSON
            try:
                self.send_json(500, {"error": one_line(f"internal error: {type(exc).__name__}: {exc}")})
            except Exception:
                pass
        finally:
            self.server.request_done()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = route

    def drain(self, length: int) -> None:
        """Read and discard the body so that the client, still sending, gets our answer instead of a reset."""
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)

    def measure(self, query: str) -> None:
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            self.send_json(411, {"error": "Content-Length is required"})
            return
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError
        except ValueError:
            self.send_json(400, {"error": "bad Content-Length"})
            return
        if length > self.server.max_body:
            self.send_json(413, {"error": f"body of {length} bytes is over the {self.server.max_body} byte cap"})
            return
        try:
            params = parse_measure_query(query)
        except ValueError as exc:
            self.drain(length)
            self.send_json(400, {"error": one_line(str(exc))})
            return
        if params["runtime"] == "tensorrt" and not find_trtexec():
            self.drain(length)
            self.send_json(400, {"error": "runtime tensorrt is not available here (no trtexec)"})
            return
        if not self.server.admit():
            self.drain(length)
            self.send_json(429, {"error": "busy: the measurement queue is full, retry later"}, {"Retry-After": "5"})
            return
        try:
            self.run_job(length, params)
        finally:
            self.server.release()

    def run_job(self, length: int, params: dict) -> None:
        body = self.rfile.read(length)
        if len(body) != length:
            self.send_json(400, {"error": "body shorter than Content-Length"})
            return
        why = looks_like_onnx(body)
        if why:
            self.send_json(400, {"error": why})
            return
        path = os.path.join(self.server.workdir, uuid.uuid4().hex + ".onnx")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            del body
            sys.stderr.write(f"agent: job {os.path.basename(path)}\n")
            with self.server.job_lock:
                try:
                    result = measure(path, params["runtime"], params["precision"], params.get("threads", 1),
                                     params["settings"], self.server.job_timeout_s, raise_timeout=True)
                    code = 200 if result.get("ok") else 422
                except MeasureTimeout as exc:
                    result, code = {"error": one_line(str(exc))}, 504
        finally:  # the upload is gone before the client hears back
            if os.path.exists(path):
                os.unlink(path)
        self.send_json(code, result)


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    return host.startswith("127.") or host == "::1"


def serve(args: argparse.Namespace) -> int:
    token = None
    if args.token_file:
        try:
            with open(args.token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            sys.stderr.write(f"error: cannot read token file {args.token_file}: {exc}\n")
            return 2
        if not token:
            sys.stderr.write(f"error: token file {args.token_file} is empty\n")
            return 2
    else:
        token = os.environ.get("EDGEFIT_AGENT_TOKEN") or None
    if not token and not is_loopback(args.host):
        sys.stderr.write(f"error: refusing to serve on {args.host} without a token: pass --token-file or set "
                         "EDGEFIT_AGENT_TOKEN\n")
        return 2
    server = AgentServer((args.host, args.port), token, int(args.max_body_mb * 1024 * 1024), args.queue,
                         args.job_timeout_s, args.max_requests)
    try:
        host, port = server.server_address[:2]
        sys.stdout.write(f"edgefit agent listening on http://{host}:{port}\n")
        sys.stdout.flush()
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        shutil.rmtree(server.workdir, ignore_errors=True)
    return 0


# ---------------------------------------------------------------------------------------------
# command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefit_device.py", description="edgefit device runner")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="print the device facts as JSON")
    m = sub.add_parser("measure", help="measure one ONNX model; prints one result JSON")
    m.add_argument("model")
    m.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime")
    m.add_argument("--precision", choices=PRECISIONS, default="fp32")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--warmup", type=_positive_int)
    m.add_argument("--min-repeats", type=int)
    m.add_argument("--min-time-s", type=float)
    m.add_argument("--rounds", type=int)
    m.add_argument("--warmup-ms", type=float)
    m.add_argument("--avg-runs", type=int)
    m.add_argument("--timeout-s", type=float, default=600.0)
    r = sub.add_parser("run", help="measure every model of DIR/manifest.json into DIR/results.json")
    r.add_argument("dir")
    r.add_argument("--timeout-s", type=float, default=600.0)
    s = sub.add_parser("serve", help="the HTTP measurement agent")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--token-file")
    s.add_argument("--max-body-mb", type=float, default=512.0)
    s.add_argument("--queue", type=_positive_int, default=4)
    s.add_argument("--job-timeout-s", type=float, default=600.0)
    s.add_argument("--max-requests", type=int)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        return child_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "info":
        sys.stdout.write(json.dumps(facts(), indent=2) + "\n")
        return 0
    if args.command == "measure":
        settings = {"warmup": args.warmup, "min_repeats": args.min_repeats, "min_time_s": args.min_time_s,
                    "rounds": args.rounds, "warmup_ms": args.warmup_ms, "avg_runs": args.avg_runs}
        result = measure(args.model, args.runtime, args.precision, args.threads, settings, args.timeout_s)
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    if args.command == "run":
        try:
            run_bundle(args.dir, args.timeout_s)
        except (OSError, ValueError, MeasureError) as exc:
            sys.stderr.write(f"error: {one_line(str(exc))}\n")
            return 1
        return 0
    if args.command == "serve":
        return serve(args)
    build_parser().print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
