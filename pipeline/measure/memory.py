"""Peak memory of a model in its runtime, measured in a fresh child process.

:func:`peak_memory_onnx` measures the peak resident memory a session adds, in a fresh
child process (``python -m pipeline.measure.child``) so nothing the parent has allocated
(torch, other sessions, the allocator's free lists) leaks into the number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import BackendUnavailable, DeployError, ModelInvalid
from pipeline.core.units import MIB
from pipeline.runtimes.base import check_threads


@dataclass(frozen=True)
class MemoryResult:
    """Peak resident memory of one ONNX Runtime session, measured in a child process.

    ``peak_mb`` is what creating the session and running it added on top of
    ``baseline_mb`` (the child's resident set after importing onnxruntime and numpy);
    ``vmhwm_mb`` is the child's absolute high-water mark. All in MiB (2**20 bytes).
    ``method`` says how the numbers were obtained.
    """

    peak_mb: float
    baseline_mb: float
    vmhwm_mb: float
    method: str
    threads: int
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def peak_memory_onnx(
    model_path: str | Path,
    *,
    threads: int,
    runs: int = 3,
    timeout_s: float = 120,
    reset_peak: bool = True,
) -> MemoryResult:
    """Peak resident memory added by loading and running ``model_path``, in a fresh process.

    The child (``python -m pipeline.measure.child``) imports onnxruntime and numpy,
    resets the kernel's peak-RSS counter by writing ``5`` to ``/proc/self/clear_refs``,
    reads ``VmHWM`` from ``/proc/self/status`` as the baseline, creates the session (as
    :func:`ort_session` does), runs ``runs`` inferences on random input and reads
    ``VmHWM`` again; the difference is ``peak_mb``. Where ``clear_refs`` cannot be
    written, the baseline is the current ``VmRSS`` instead (``method`` says so): the
    peak may then include an import-time spike. ``reset_peak=False`` forces that
    fallback (for tests).

    Failures in the child come back as :class:`ModelInvalid` (unloadable model) or
    :class:`DeployError` with the child's message; a hung child is killed after
    ``timeout_s``. Linux only (``/proc``).
    """
    threads = check_threads(threads, required=True)
    if runs < 1:
        raise ValueError("runs must be >= 1")
    if not Path("/proc/self/status").exists():
        raise BackendUnavailable("peak memory measurement needs Linux /proc/self/status; not available here.")
    path = Path(model_path)
    if not path.is_file():
        raise ModelInvalid(f"ONNX model {path} does not exist or is not a file.")
    cmd = [sys.executable, "-m", "pipeline.measure.child", str(path.resolve()), "--threads", str(threads),
           "--runs", str(runs)]
    if not reset_peak:
        cmd.append("--no-reset")
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # The child's own numeric libraries must not start extra thread pools behind ORT's back.
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise DeployError(
            f"peak memory measurement of {path} did not finish within {timeout_s:g} s; the child was stopped."
        ) from None
    reply = None
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            reply = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if not isinstance(reply, dict):
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited {proc.returncode}"
        raise DeployError(
            f"peak memory measurement of {path}: the child process {how} without a result"
            f"{' (out of memory?)' if proc.returncode in (-9, 137) else ''}: {_tail(proc.stderr) or 'no output'}"
        )
    if "error" in reply:
        cls = ModelInvalid if reply.get("kind") == "ModelInvalid" else DeployError
        raise cls(f"peak memory measurement of {path} failed: {reply['error']}")
    return MemoryResult(
        peak_mb=reply["peak_kib"] / 1024,
        baseline_mb=reply["baseline_kib"] / 1024,
        vmhwm_mb=reply["vmhwm_kib"] / 1024,
        method=reply["method"],
        threads=threads,
        runs=runs,
    )


__all__ = ["MIB", "MemoryResult", "peak_memory_onnx"]
