"""Child process of :func:`pipeline.measure.memory.peak_memory_onnx` (``python -m pipeline.measure.child``).

Prints exactly one JSON line on stdout: ``{"peak_kib", "baseline_kib", "vmhwm_kib",
"method"}`` or ``{"error", "kind"}``. Runs in its own process so that the parent's
memory (torch, other sessions) is not part of the measurement. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys


def _status_kib(*keys: str) -> dict[str, int]:
    """``VmHWM``/``VmRSS`` etc. from ``/proc/self/status`` (the kernel reports kB = KiB)."""
    found: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                found[key] = int(value.split()[0])
    return found


def _reset_peak() -> bool:
    """Reset the peak-RSS counter (VmHWM := VmRSS). Linux >= 4.0; False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(model: str, threads: int, runs: int, reset: bool = True) -> dict:
    import numpy  # noqa: F401  (part of the baseline, like onnxruntime)
    import onnxruntime  # noqa: F401

    from pipeline.runtimes.onnxruntime import ort_session, random_inputs

    if reset and _reset_peak():
        baseline = _status_kib("VmHWM")["VmHWM"]
        method = "VmHWM delta in a child process; peak reset via /proc/self/clear_refs after importing onnxruntime"
    else:
        baseline = _status_kib("VmRSS")["VmRSS"]
        method = ("VmHWM minus baseline VmRSS in a child process; /proc/self/clear_refs not writable, so the peak "
                  "may include an import-time spike (an upper bound)")
    method += f"; session creation + {runs} run(s)"
    sess = ort_session(model, threads)
    feeds = random_inputs(sess, seed=0)
    for _ in range(runs):
        sess.run(None, feeds)
    peak = _status_kib("VmHWM")["VmHWM"]
    return {"peak_kib": max(0, peak - baseline), "baseline_kib": baseline, "vmhwm_kib": peak, "method": method}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.measure.child")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-reset", action="store_true", help="do not reset VmHWM (test the fallback)")
    args = parser.parse_args(argv)
    try:
        reply = measure(args.model, args.threads, args.runs, reset=not args.no_reset)
        code = 0
    except Exception as exc:  # report every failure to the parent as one line, never a traceback
        reply = {"error": str(exc) or type(exc).__name__, "kind": type(exc).__name__}
        code = 1
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
