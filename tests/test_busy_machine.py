"""A busy machine must not fail a good fit, and must not hide a slow model (pipeline.measure.loop.check_shipped).

The load is real: a CPU-burning process pinned to the CPU this test measures on, started for the re-measurement.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

from pipeline.core.budget import Budget
from pipeline.measure.device import LocalDevice
from pipeline.measure.loop import Measurement, check_shipped, from_device
from pipeline.measure.reference import conv_net_bytes
from pipeline.measure.settings import TimingSettings
from pipeline.predict.targets import load_target
from pipeline.record.verdict import latency_verdict

TIMING = TimingSettings(warmup=2, min_repeats=6, min_time_s=0.1, rounds=3)
RECHECK = TimingSettings(warmup=1, min_repeats=5, min_time_s=0.08, rounds=3)
LAYERS = ((32, 3, 1), (64, 3, 2), (64, 3, 1))  # calls of several ms: longer than a scheduler time slice

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``fast`` and ``slow``: the same network, the second at 1.7x the input side (~3x the work: enough that neither
    other processes' load nor the reference's own noise can make it pass as ``fast``)."""
    folder = tmp_path_factory.mktemp("busy")
    fast, slow = folder / "fast.onnx", folder / "slow.onnx"
    fast.write_bytes(conv_net_bytes(128, LAYERS))
    slow.write_bytes(conv_net_bytes(224, LAYERS))
    return fast, slow


@contextlib.contextmanager
def one_cpu():
    """This thread (which runs ONNX Runtime at 1 thread) on one CPU, so that a burner there halves its share."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def burners(cpu: int, n: int = 3):
    """``n`` CPU-burning processes on ``cpu``: this test's share of it drops to a quarter or less, whatever else
    already runs there."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        for proc in procs:
            os.sched_setaffinity(proc.pid, {cpu})
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def measure(device, path, budget, settings=TIMING):
    return from_device(device.measure(path, settings, memory=False, reference=True), 0, 0.0, 0, 1.0, budget, path)


def test_load_during_the_remeasure_is_not_a_failure(models):
    fast, _ = models
    device = LocalDevice(load_target("host"), 1)
    with one_cpu() as cpu:
        earlier = measure(device, fast, Budget(latency_ms=1e3))
        budget = Budget(latency_ms=round(earlier.latency_ms * 1.3, 3))
        with burners(cpu):
            loaded = measure(device, fast, budget)
            assert loaded.latency_ms > budget.latency_ms, "the burners did not slow the measurement down"
            final, check = check_shipped(earlier, loaded, lambda: measure(device, fast, budget, RECHECK), budget)
    assert check is not None and check.verdict == "load", check
    assert check.drift_pct > 30  # the reference saw the burners
    assert latency_verdict(final, budget, check).ok is True
    assert latency_verdict(final, budget).ok is False  # without the check, the load alone would have failed it


def test_a_model_that_really_is_slower_still_fails(models):
    fast, slow = models
    device = LocalDevice(load_target("host"), 1)
    with one_cpu():
        earlier = measure(device, fast, Budget(latency_ms=1e3))
        budget = Budget(latency_ms=round(earlier.latency_ms * 1.3, 3))
        shipped = measure(device, slow, budget)
        final, check = check_shipped(earlier, shipped, lambda: measure(device, slow, budget, RECHECK), budget)
    assert check is not None and check.verdict == "slower", check
    verdict = latency_verdict(final, budget, check)
    assert verdict.ok is False and "not because of the machine's load" in verdict.failure


def _m(p50: float, ref: float | None = None, rounds=(), ref_rounds=(), means=()) -> Measurement:
    return Measurement(0, 0.0, 64, p50, p50, p50 * 1.1, p50 * 1.2, None, 30, 1, True, 0.0, "x.onnx", p50, ref,
                       tuple(rounds), tuple(ref_rounds), tuple(means))


def test_no_check_when_nothing_would_fail_or_nothing_contradicts():
    never = lambda: pytest.fail("no re-measure needed")  # noqa: E731
    earlier = _m(10.0, ref=1.0)
    # within budget: nothing to explain
    assert check_shipped(earlier, _m(11.5, ref=1.3), never, Budget(latency_ms=12)) == (_m(11.5, ref=1.3), None)
    # over budget but as slow as before (within the noise margin): the earlier one was already close
    assert check_shipped(_m(12.1, ref=1.0), _m(12.2, ref=1.0), never, Budget(latency_ms=12))[1] is None
    # over and slower, but no reference timings (an agent): no check, the raw excess stands
    final, check = check_shipped(_m(10.0), _m(13.0), never, Budget(latency_ms=12))
    assert check is None and latency_verdict(final, Budget(latency_ms=12)).ok is False


def test_the_load_is_divided_out_round_by_round():
    earlier = _m(10.0, ref=1.0, rounds=(10.0, 10.0, 10.0), ref_rounds=(1.0, 1.0, 1.0))  # as a real one has
    again = _m(19.0, ref=2.0, rounds=(20.0, 18.0, 19.0), ref_rounds=(2.0, 1.8, 2.0))
    final, check = check_shipped(earlier, _m(18.0, ref=1.9), lambda: again, Budget(latency_ms=12))
    assert final is again and check.verdict == "load" and check.corrected_ms == 10.0 and check.drift_pct == 100.0
    slower = _m(30.0, ref=1.1, rounds=(30.0, 31.0, 29.0), ref_rounds=(1.1, 1.0, 1.05))
    _, check = check_shipped(earlier, _m(30.0, ref=1.1), lambda: slower, Budget(latency_ms=12))
    assert check.verdict == "slower" and check.corrected_ms > 12 and "really is slower" in check.detail


def test_time_slicing_is_divided_out_of_means_not_of_quantized_p50s():
    """A call longer than a time slice waits out whole slices: its p50 jumps further than the CPU share lost,
    which the means (model's and reference's alike) follow. The model is compared with the reference within each
    round, so the load the earlier measurement saw cancels as well."""
    earlier = _m(10.0, ref=1.0, rounds=(10.0, 10.0, 10.0), ref_rounds=(1.0, 1.0, 1.0), means=(10.2, 10.2, 10.2))
    sliced = _m(40.0, ref=3.2, rounds=(40.0, 40.0, 40.0), ref_rounds=(3.2, 3.2, 3.2), means=(32.0, 32.0, 32.0))
    _, check = check_shipped(earlier, _m(40.0, ref=3.2), lambda: sliced, Budget(latency_ms=12))
    assert check.verdict == "load" and check.corrected_ms == pytest.approx(10.0 * 10.0 / 10.2, abs=1e-3)
    assert check.drift_pct == 220.0
    # the same numbers without round means (an older record): the p50s are compared, and the excess stands
    no_means = _m(40.0, ref=3.2, rounds=(40.0, 40.0, 40.0), ref_rounds=(3.2, 3.2, 3.2))
    _, check = check_shipped(earlier, _m(40.0, ref=3.2), lambda: no_means, Budget(latency_ms=12))
    assert check.verdict == "slower" and check.corrected_ms == 12.5
    # a busy moment in one of the earlier rounds slowed model and reference alike: it cancels
    bumpy = _m(10.0, ref=1.0, rounds=(20.0, 10.0, 10.0), ref_rounds=(2.0, 1.0, 1.0), means=(20.4, 10.2, 10.2))
    _, check = check_shipped(bumpy, _m(40.0, ref=3.2), lambda: sliced, Budget(latency_ms=12))
    assert check.corrected_ms == pytest.approx(10.0 * 10.0 / 10.2, abs=1e-3)
