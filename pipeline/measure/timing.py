"""The one timing and memory harness: calibrate, fit, verify and the device agent all use it.

Timing
    :func:`time_callable` runs warm-up calls, then times every call with
    ``time.perf_counter_ns`` until *both* ``min_repeats`` calls and ``min_time_s`` seconds
    are reached. The result is a :class:`Timing` of percentiles over the individual
    calls (not a mean of batches), because budgets are stated as p50/p90/p99.
    :func:`compare_interleaved` times several configurations round-robin so that drift
    on a noisy machine (thermal throttling, a neighbour waking up) affects all of them
    equally; use it whenever two numbers are going to be compared with each other.

ONNX Runtime
    :func:`ort_session` is the one place an ``InferenceSession`` is configured for
    measurement; :func:`time_onnx` times one model on random input.

Memory
    :func:`peak_memory_onnx` measures the peak resident memory a session adds, in a
    fresh child process (``python -m pipeline.measure.child``) so nothing the parent has
    allocated (torch, other sessions, the allocator's free lists) leaks into the number.

The thread count is an explicit argument of every call and is recorded in every result:
a latency without its thread count cannot be compared with anything. This module holds
no target logic and never imports torch.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import BackendUnavailable, DeployError, ModelInvalid

MIB = 2**20

# --- Timing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one configuration, in milliseconds per call.

    ``spread`` is ``p90 / p50 - 1``: a quick noise indicator (0.05 means the slowest
    10 % of calls are at least 5 % slower than the median). ``round_p50_ms`` holds each
    round's p50 when the calls were timed in several rounds (:func:`time_onnx`): on a shared
    machine the p50 of the same session drifts by 10 % and more from one second to the next,
    which only separate rounds reveal. ``n`` counts the timed calls
    and ``warmup`` the untimed ones before them; ``total_s`` is the time spent inside the
    timed calls. ``threads`` is the thread count the measured code was configured with
    (``None`` when the caller did not say, e.g. an arbitrary Python callable).
    """

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    spread: float
    n: int
    warmup: int
    total_s: float
    threads: int | None = None
    round_p50_ms: tuple[float, ...] | None = None

    @property
    def worst_round_p50_ms(self) -> float:
        """The slowest round's p50 (the pooled p50 when timed in one round): what a re-timing may see."""
        return max(self.round_p50_ms) if self.round_p50_ms else self.p50_ms

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timing:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def from_samples(cls, samples_ns: list[int] | np.ndarray, *, warmup: int, threads: int | None = None,
                     round_p50_ms: tuple[float, ...] | None = None) -> Timing:
        """Statistics of per-call durations given in nanoseconds."""
        ns = np.asarray(samples_ns, dtype=np.float64)
        if ns.size == 0:
            raise ValueError("no timing samples")
        ms = ns / 1e6
        # One call to np.percentile with linear interpolation: monotone in q by construction.
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        return cls(
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            mean_ms=float(ms.mean()),
            std_ms=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            spread=p90 / p50 - 1.0 if p50 > 0 else 0.0,
            n=int(ms.size),
            warmup=int(warmup),
            total_s=float(ns.sum() / 1e9),
            threads=threads,
            round_p50_ms=round_p50_ms,
        )


def _check_threads(threads: int | None, *, required: bool) -> int | None:
    if threads is None and not required:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r} (0 would let the runtime pick)")
    return threads


class _GcPaused:
    """Collect garbage, then keep the cyclic GC off while timing (as ``timeit`` does).

    A collection pause lands on whichever call happens to trigger it and would show up
    as a latency outlier that has nothing to do with the model.
    """

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.collect()
        gc.disable()

    def __exit__(self, *exc) -> None:
        if self.was_enabled:
            gc.enable()


def time_callable(
    fn: Callable[[], Any],
    *,
    warmup: int = 5,
    min_repeats: int = 20,
    min_time_s: float = 0.5,
    max_repeats: int = 10_000,
    max_time_s: float | None = None,
    threads: int | None = None,
) -> Timing:
    """Time ``fn()`` call by call.

    After ``warmup`` untimed calls, calls are timed until both ``min_repeats`` calls
    and ``min_time_s`` seconds (of wall time since the first timed call) are reached.
    ``max_repeats`` and ``max_time_s`` stop the loop earlier, but only once
    ``min_repeats`` is reached: ``min_repeats`` is a floor on the sample size, because
    a p90 from five samples is not a p90. A model so slow that ``min_repeats`` calls
    exceed ``max_time_s`` therefore overruns it; lower ``min_repeats`` to bound the time.

    ``threads`` is recorded in the result; configuring threads is the callable's job.
    """
    threads = _check_threads(threads, required=False)
    samples = _timed_calls(fn, warmup=warmup, min_repeats=min_repeats, min_time_s=min_time_s,
                           max_repeats=max_repeats, max_time_s=max_time_s)
    return Timing.from_samples(samples, warmup=warmup, threads=threads)


def _timed_calls(fn: Callable[[], Any], *, warmup: int, min_repeats: int, min_time_s: float, max_repeats: int,
                 max_time_s: float | None) -> list[int]:
    """The loop behind :func:`time_callable`: per-call durations in nanoseconds."""
    if warmup < 0 or min_repeats < 1:
        raise ValueError("warmup must be >= 0 and min_repeats >= 1")
    if max_repeats < min_repeats:
        raise ValueError(f"max_repeats ({max_repeats}) is below min_repeats ({min_repeats})")
    min_time_ns = int(max(0.0, min_time_s) * 1e9)
    max_time_ns = None if max_time_s is None else int(max(0.0, max_time_s) * 1e9)
    clock = time.perf_counter_ns
    for _ in range(warmup):
        fn()
    samples: list[int] = []
    with _GcPaused():
        start = clock()
        while True:
            t0 = clock()
            fn()
            t1 = clock()
            samples.append(t1 - t0)
            n, elapsed = len(samples), t1 - start
            if n < min_repeats:
                continue
            if n >= max_repeats or elapsed >= min_time_ns:
                break
            if max_time_ns is not None and elapsed >= max_time_ns:
                break
    return samples


def compare_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    rounds: int = 20,
    per_round: int = 5,
    warmup: int = 3,
    threads: int | Mapping[str, int | None] | None = None,
) -> dict[str, Timing]:
    """Time several configurations round-robin; returns one :class:`Timing` per name.

    Each round runs every configuration ``per_round`` times in a row (keeping its caches
    as warm as a real application would), and the starting configuration rotates from
    round to round so none always runs right after the same neighbour. Slow drift of
    the machine therefore spreads evenly over all configurations, which makes their
    *ratios* trustworthy even where absolute numbers are not. Every configuration gets
    ``rounds * per_round`` samples; warm-up is also interleaved.

    ``threads`` is recorded in the results: one value for all, or a mapping per name.
    """
    if not fns:
        raise ValueError("compare_interleaved needs at least one callable")
    if rounds < 1 or per_round < 1 or warmup < 0:
        raise ValueError("rounds and per_round must be >= 1 and warmup >= 0")
    names = list(fns)
    if isinstance(threads, Mapping):
        thread_of = {name: _check_threads(threads.get(name), required=False) for name in names}
    else:
        t = _check_threads(threads, required=False)
        thread_of = dict.fromkeys(names, t)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    with _GcPaused():
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                fn, out = fns[name], samples[name]
                for _ in range(per_round):
                    t0 = clock()
                    fn()
                    out.append(clock() - t0)
    return {name: Timing.from_samples(samples[name], warmup=warmup, threads=thread_of[name]) for name in names}


# --- ONNX Runtime --------------------------------------------------------------------------

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _model_name(model: str | Path | bytes) -> str:
    return "<in-memory ONNX model>" if isinstance(model, (bytes, bytearray)) else str(model)


def session_options(threads: int):
    """The ``SessionOptions`` every measurement uses (also used by the memory child).

    * ``intra_op_num_threads = threads``: explicit, never ORT's "all cores" default.
    * ``inter_op_num_threads = 1`` and ``ORT_SEQUENTIAL``: CNNs are a chain; a second
      pool only adds threads that compete with the intra-op pool.
    * ``ORT_ENABLE_ALL``: the optimisations a deployed application gets (BN/activation
      fusion, layout transforms), so what we time is what ships.
    * Spinning: intra-op threads *may* spin (ORT's default) so that handing work to the
      pool between consecutive operators inside one ``Run()`` costs no wake-up, but
      ``session.force_spinning_stop = 1`` stops them the moment ``Run()`` returns.
      Otherwise an idle pool keeps burning cores after each call, which (a) steals CPU
      from the other configurations in :func:`compare_interleaved` and from anything
      else on the machine, and (b) makes back-to-back benchmarking faster than an edge
      application that runs one inference per camera frame and is idle in between. The
      unused inter-op pool never spins. With ``threads == 1`` there is no pool at all.
    * Log level "error": ORT's optimizer warnings would pollute ``--json`` output.
    """
    import onnxruntime as ort

    threads = _check_threads(threads, required=True)
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


def ort_session(
    model: str | Path | bytes,
    threads: int,
    providers: tuple[str, ...] | list[str] = ("CPUExecutionProvider",),
):
    """An ``onnxruntime.InferenceSession`` configured as in :func:`session_options`.

    An unreadable, truncated or invalid file raises :class:`ModelInvalid` naming the
    file; a provider that this ONNX Runtime build lacks raises :class:`BackendUnavailable`.
    """
    import onnxruntime as ort

    so = session_options(threads)
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise BackendUnavailable(
            f"ONNX Runtime {ort.__version__} has no {', '.join(missing)}; available: {', '.join(available)}."
        )
    name = _model_name(model)
    if not isinstance(model, (bytes, bytearray)):
        path = Path(model)
        if not path.is_file():
            raise ModelInvalid(f"ONNX model {path} does not exist or is not a file.")
        model = str(path)
    try:
        return ort.InferenceSession(model, sess_options=so, providers=list(providers))
    except Exception as exc:  # ORT raises pybind exception types (InvalidProtobuf, Fail, ...)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelInvalid(
            f"cannot load ONNX model {name} (truncated, corrupt or unsupported?): {msg}"
        ) from None


def random_inputs(session, seed: int = 0, shape: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """Seeded random feeds matching the session's declared inputs.

    A dynamic first (batch) dimension becomes 1; any other dynamic dimension needs
    ``shape``. Float inputs are standard normal, integer inputs small non-negative ints.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        dims = list(shape) if shape is not None else list(inp.shape)
        for i, d in enumerate(dims):
            if not isinstance(d, int) or d < 0:
                if i == 0:
                    dims[i] = 1
                else:
                    raise ModelInvalid(
                        f"input '{inp.name}' has a dynamic dimension {i} ({d!r}); give the input shape explicitly."
                    )
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise ModelInvalid(f"input '{inp.name}' has unsupported type {inp.type}.")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(dims, dtype=np.float32).astype(dtype, copy=False)
        elif dtype is np.bool_:
            feeds[inp.name] = rng.integers(0, 2, size=dims).astype(np.bool_)
        else:
            feeds[inp.name] = rng.integers(0, 100, size=dims).astype(dtype)
    return feeds


def time_onnx(
    model: str | Path | bytes,
    *,
    threads: int,
    warmup: int = 10,
    min_repeats: int = 30,
    min_time_s: float = 1.0,
    max_time_s: float | None = None,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    providers: tuple[str, ...] | list[str] = ("CPUExecutionProvider",),
    rounds: int = 1,
) -> Timing:
    """Latency of one ONNX model under :func:`ort_session` on seeded random input (batch 1).

    The default warm-up is larger than :func:`time_callable`'s: the first runs of a
    session allocate its memory arena and pre-pack weights. With ``rounds > 1`` the
    minimum count and time apply to each round; the statistics pool every call, and
    ``round_p50_ms`` keeps each round's p50 so a caller can judge how far a re-timing may drift.
    """
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    sess = ort_session(model, threads, providers)
    feeds = random_inputs(sess, seed, input_shape)
    outputs = [o.name for o in sess.get_outputs()]
    samples: list[int] = []
    medians = []
    for r in range(rounds):
        chunk = _timed_calls(lambda: sess.run(outputs, feeds), warmup=warmup if r == 0 else 0,
                             min_repeats=min_repeats, min_time_s=min_time_s, max_repeats=10_000,
                             max_time_s=max_time_s)
        samples += chunk
        medians.append(float(np.median(chunk)) / 1e6)
    return Timing.from_samples(samples, warmup=warmup, threads=threads,
                               round_p50_ms=tuple(medians) if rounds > 1 else None)


# --- Peak memory ---------------------------------------------------------------------------


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
    threads = _check_threads(threads, required=True)
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


__all__ = [
    "MIB",
    "MemoryResult",
    "Timing",
    "compare_interleaved",
    "ort_session",
    "peak_memory_onnx",
    "random_inputs",
    "session_options",
    "time_callable",
    "time_onnx",
]
