"""The one timing harness: every latency edgefit reports comes through here.

:func:`time_callable` runs warm-up calls, then times every call with
``time.perf_counter_ns`` until *both* ``min_repeats`` calls and ``min_time_s`` seconds are
reached. The result is a :class:`Timing` of percentiles over the individual calls (not a
mean of batches), because budgets are stated as p50/p90/p99. :func:`time_session` times a
loaded runtime session (any backend) in rounds, with the settings of
:mod:`pipeline.measure.settings`. :func:`compare_interleaved` times several configurations
round-robin so that drift on a noisy machine (thermal throttling, a neighbour waking up)
affects all of them equally; use it whenever two numbers are going to be compared.

The thread count is recorded in every result: a latency without its thread count cannot
be compared with anything. This module holds no target logic and never imports torch.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.runtimes.base import check_threads

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
    round_mean_ms: tuple[float, ...] | None = None  # each round's mean: time-slicing inflates it in proportion

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
                     round_p50_ms: tuple[float, ...] | None = None,
                     round_mean_ms: tuple[float, ...] | None = None) -> Timing:
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
            round_mean_ms=round_mean_ms,
        )


class _GcPaused:
    """Keep the cyclic GC off while timing (as ``timeit`` does); ``collect`` first where asked.

    A collection pause lands on whichever call happens to trigger it and would show up
    as a latency outlier that has nothing to do with the model. A full collection costs
    0.1 s in a process holding torch, so a measurement of several rounds collects once,
    before its first round, not before each.
    """

    def __init__(self, collect: bool = True):
        self.collect = collect

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        if self.collect:
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
    threads = check_threads(threads, required=False)
    samples = _timed_calls(fn, warmup=warmup, min_repeats=min_repeats, min_time_s=min_time_s,
                           max_repeats=max_repeats, max_time_s=max_time_s)
    return Timing.from_samples(samples, warmup=warmup, threads=threads)


def _timed_calls(fn: Callable[[], Any], *, warmup: int, min_repeats: int, min_time_s: float, max_repeats: int,
                 max_time_s: float | None, collect: bool = True) -> list[int]:
    """The loop behind :func:`time_callable`: per-call durations in nanoseconds (``collect``: a full GC first)."""
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
    with _GcPaused(collect):
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
        thread_of = {name: check_threads(threads.get(name), required=False) for name in names}
    else:
        t = check_threads(threads, required=False)
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


def time_session(session, settings=None, *, inputs: np.ndarray | None = None, seed: int = 0,
                 max_time_s: float | None = None, **overrides: Any) -> Timing:
    """Latency of one loaded :class:`~pipeline.runtimes.base.Session` (any runtime) on one seeded input.

    ``settings`` is a :class:`~pipeline.measure.settings.TimingSettings`; ``overrides`` replace
    single fields of it (``warmup=2``, ``rounds=3``, ...). The default warm-up is large because
    the first runs of a session allocate its memory arena and pre-pack weights. With
    ``rounds > 1`` the minimum count and time apply to each round; the statistics pool every
    call, and ``round_p50_ms`` keeps each round's p50 so a caller can judge how far a re-timing
    may drift.
    """
    import dataclasses

    from pipeline.measure.settings import TimingSettings

    s = dataclasses.replace(settings or TimingSettings(warmup=10, min_repeats=30, min_time_s=1.0), **overrides)
    warmup, min_repeats, min_time_s, rounds = s.warmup, s.min_repeats, s.min_time_s, s.rounds
    call = session.bind(session.example_input(seed) if inputs is None else inputs)
    samples: list[int] = []
    medians = []
    for r in range(rounds):
        chunk = _timed_calls(call, warmup=warmup if r == 0 else 0, min_repeats=min_repeats, min_time_s=min_time_s,
                             max_repeats=10_000, max_time_s=max_time_s, collect=r == 0)
        samples += chunk
        medians.append(float(np.median(chunk)) / 1e6)
    return Timing.from_samples(samples, warmup=warmup, threads=session.threads,
                               round_p50_ms=tuple(medians) if rounds > 1 else None)


REFERENCE_ROUND = {"warmup": 5, "min_repeats": 20, "min_time_s": 0.1}  # the reference's share of every round


def time_session_with_reference(session, reference, settings=None, *, seed: int = 0,
                                max_time_s: float | None = None, **overrides: Any) -> tuple[Timing, Timing]:
    """:func:`time_session`, with the ``reference`` session timed right after each round of ``session``.

    Returns ``(model, reference)``, both with ``round_p50_ms`` and ``round_mean_ms`` (one entry per round,
    always, even for one round) so that a caller can pair round *r* of the model with round *r* of the
    reference: the two were timed a fraction of a second apart, under the same load
    (:mod:`pipeline.measure.reference`).
    """
    import dataclasses

    from pipeline.measure.settings import TimingSettings

    s = dataclasses.replace(settings or TimingSettings(warmup=10, min_repeats=30, min_time_s=1.0), **overrides)
    call = session.bind(session.example_input(seed))
    ref = reference.bind(reference.example_input(seed))
    samples: list[int] = []
    ref_samples: list[int] = []
    medians, means, ref_medians, ref_means = [], [], [], []
    for r in range(s.rounds):
        chunk = _timed_calls(call, warmup=s.warmup if r == 0 else 0, min_repeats=s.min_repeats,
                             min_time_s=s.min_time_s, max_repeats=10_000, max_time_s=max_time_s, collect=r == 0)
        ref_chunk = _timed_calls(ref, warmup=REFERENCE_ROUND["warmup"] if r == 0 else 0,
                                 min_repeats=REFERENCE_ROUND["min_repeats"], min_time_s=REFERENCE_ROUND["min_time_s"],
                                 max_repeats=10_000, max_time_s=None, collect=False)
        samples += chunk
        ref_samples += ref_chunk
        medians.append(float(np.median(chunk)) / 1e6)
        means.append(float(np.mean(chunk)) / 1e6)
        ref_medians.append(float(np.median(ref_chunk)) / 1e6)
        ref_means.append(float(np.mean(ref_chunk)) / 1e6)
    return (Timing.from_samples(samples, warmup=s.warmup, threads=session.threads, round_p50_ms=tuple(medians),
                                round_mean_ms=tuple(means)),
            Timing.from_samples(ref_samples, warmup=REFERENCE_ROUND["warmup"], threads=reference.threads,
                                round_p50_ms=tuple(ref_medians), round_mean_ms=tuple(ref_means)))


def time_onnx(
    model: str | Path | bytes,
    *,
    threads: int,
    warmup: int = 10,
    min_repeats: int = 30,
    min_time_s: float = 1.0,
    max_time_s: float | None = None,
    seed: int = 0,
    rounds: int = 1,
) -> Timing:
    """Latency of one ONNX model in ONNX Runtime on CPU (batch 1): :func:`time_session` on its session."""
    from pipeline.runtimes.onnxruntime import OnnxRuntime

    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    session = OnnxRuntime(threads).load(model)
    return time_session(session, warmup=warmup, min_repeats=min_repeats, min_time_s=min_time_s,
                        max_time_s=max_time_s, seed=seed, rounds=rounds)


__all__ = ["REFERENCE_ROUND", "Timing", "compare_interleaved", "time_callable", "time_onnx", "time_session",
           "time_session_with_reference"]
