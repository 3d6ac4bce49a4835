"""The timing/memory harness. Real ONNX Runtime sessions; no test asserts an absolute time.

Stopping rules and statistics are tested against a fake clock (exact counts), the
real-clock tests only check invariants that hold on any machine, however noisy.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.errors import DeployError, ModelInvalid
from pipeline.measure import timing as measure
from pipeline.measure.memory import MemoryResult, peak_memory_onnx
from pipeline.measure.timing import Timing, compare_interleaved, time_callable, time_onnx
from pipeline.runtimes.onnxruntime import ort_session, random_inputs


def conv_model(path, res: int, channels: int = 32, layers: int = 4, dynamic_batch: bool = False):
    """A small real CNN (conv/relu stack + global pool) whose activations scale with ``res``."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "input", 3
    for i in range(layers):
        w = (rng.standard_normal((channels, cin, 3, 3)) * 0.1).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, cin = f"r{i}", channels
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["gap"]), helper.make_node("Flatten", ["gap"], ["logits"])]
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "convnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, res, res])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, channels])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    return conv_model(tmp_path_factory.mktemp("onnx") / "small.onnx", res=64)


@pytest.fixture(scope="module")
def family_onnx(tmp_path_factory):
    """A real exported family model (MobileNetV2 at φ=-3), via the project's exporter."""
    from pipeline.core.scaling import CompoundScaling
    from pipeline.export.onnx import export_onnx
    from pipeline.models import build, initialize

    model = initialize(build("mobilenetv2", CompoundScaling().compound(-3), num_classes=10), seed=0)
    path = tmp_path_factory.mktemp("onnx") / "mobilenetv2.onnx"
    export_onnx(model, path, opset=13)  # TorchScript exporter: the quicker one
    return path


class FakeClock:
    """Replaces ``time.perf_counter_ns``; the timed function advances it."""

    def __init__(self):
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += int(ms * 1e6)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(measure.time, "perf_counter_ns", fake)
    return fake


# --- time_callable: stopping rules ---------------------------------------------------------


def test_min_repeats_is_reached_when_time_is_not_limiting(clock):
    calls = []
    t = time_callable(lambda: (calls.append(1), clock.advance_ms(1)), warmup=3, min_repeats=25, min_time_s=0.0)
    assert t.n == 25 and t.warmup == 3
    assert len(calls) == 28


def test_min_time_keeps_repeating_past_min_repeats(clock):
    calls = []
    t = time_callable(lambda: (calls.append(1), clock.advance_ms(10)), warmup=2, min_repeats=5, min_time_s=0.5)
    assert t.n == 50  # 50 calls x 10 ms = 0.5 s
    assert len(calls) == 52
    assert t.total_s == pytest.approx(0.5)


def test_both_minimums_must_hold(clock):
    t = time_callable(lambda: clock.advance_ms(100), warmup=0, min_repeats=7, min_time_s=0.2)
    assert t.n == 7  # time was reached after 2 calls, repeats were not


def test_max_time_stops_early_but_never_below_min_repeats(clock):
    t = time_callable(lambda: clock.advance_ms(10), warmup=0, min_repeats=3, min_time_s=10.0, max_time_s=0.1)
    assert t.n == 10
    t = time_callable(lambda: clock.advance_ms(100), warmup=0, min_repeats=5, min_time_s=10.0, max_time_s=0.05)
    assert t.n == 5


def test_max_repeats_caps_the_sample(clock):
    t = time_callable(lambda: clock.advance_ms(1), warmup=0, min_repeats=5, min_time_s=100.0, max_repeats=30)
    assert t.n == 30


def test_statistics_are_exact_for_known_durations(clock):
    durations = iter(range(1, 101))  # 1..100 ms
    t = time_callable(lambda: clock.advance_ms(next(durations)), warmup=0, min_repeats=100, min_time_s=0.0,
                      max_repeats=100)
    assert (t.min_ms, t.max_ms) == (1.0, 100.0)
    assert t.p50_ms == pytest.approx(50.5)
    assert t.p90_ms == pytest.approx(90.1)
    assert t.p99_ms == pytest.approx(99.01)
    assert t.mean_ms == pytest.approx(50.5)
    assert t.spread == pytest.approx(90.1 / 50.5 - 1)
    assert t.threads is None


def test_invalid_arguments():
    with pytest.raises(ValueError):
        time_callable(lambda: None, min_repeats=10, max_repeats=5)
    with pytest.raises(ValueError):
        time_callable(lambda: None, threads=0)


# --- real clock: invariants only ---------------------------------------------------------------


def test_percentiles_are_ordered_on_a_real_function():
    a = np.random.default_rng(0).standard_normal((64, 64))
    t = time_callable(lambda: a @ a, warmup=2, min_repeats=30, min_time_s=0.05, threads=1)
    assert t.n >= 30
    assert 0 < t.min_ms <= t.p50_ms <= t.p90_ms <= t.p99_ms <= t.max_ms
    assert t.min_ms <= t.mean_ms <= t.max_ms
    assert t.spread >= 0 and t.std_ms >= 0
    assert t.threads == 1
    assert Timing.from_dict(json.loads(json.dumps(t.to_dict()))) == t


# --- compare_interleaved ----------------------------------------------------------------------


def test_compare_interleaved_rotates_round_robin():
    order: list[str] = []
    fns = {name: (lambda name=name: order.append(name)) for name in "abc"}
    result = compare_interleaved(fns, rounds=4, per_round=2, warmup=1, threads={"a": 1, "b": 2})
    assert order[:3] == ["a", "b", "c"]  # interleaved warm-up
    timed = "".join(order[3:])
    assert timed == "aabbcc" + "bbccaa" + "ccaabb" + "aabbcc"
    assert set(result) == {"a", "b", "c"}
    assert all(t.n == 8 and t.warmup == 1 for t in result.values())
    assert (result["a"].threads, result["b"].threads, result["c"].threads) == (1, 2, None)


def test_compare_interleaved_drift_hits_everyone(clock):
    """A machine that slows down over time slows every configuration equally."""
    state = {"calls": 0}

    def make(cost_ms):
        def fn():
            state["calls"] += 1
            clock.advance_ms(cost_ms * (1 + state["calls"] / 100))  # steady drift
        return fn

    res = compare_interleaved({"x": make(1.0), "y": make(1.0)}, rounds=20, per_round=5, warmup=0)
    assert res["x"].p50_ms == pytest.approx(res["y"].p50_ms, rel=0.05)


def test_compare_interleaved_rejects_empty():
    with pytest.raises(ValueError):
        compare_interleaved({})


# --- ONNX Runtime sessions -----------------------------------------------------------------------


def test_ort_session_is_configured_explicitly(small_onnx):
    sess = ort_session(small_onnx, threads=2)
    so = sess.get_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.force_spinning_stop") == "1"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    with pytest.raises(ValueError):
        ort_session(small_onnx, threads=0)


def test_ort_session_accepts_bytes(small_onnx):
    sess = ort_session(small_onnx.read_bytes(), threads=1)
    out = sess.run(None, random_inputs(sess, seed=0))[0]
    assert out.shape == (1, 32)


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_onnx_is_model_invalid_naming_the_file(small_onnx, tmp_path, cut):
    data = small_onnx.read_bytes()
    bad = tmp_path / "truncated-model.onnx"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelInvalid, match="truncated-model.onnx"):
        ort_session(bad, threads=1)
    with pytest.raises(ModelInvalid):
        ort_session(data[:100], threads=1)
    with pytest.raises(ModelInvalid, match="missing.onnx"):
        ort_session(tmp_path / "missing.onnx", threads=1)


def test_random_inputs_are_seeded_and_fill_a_dynamic_batch(tmp_path):
    sess = ort_session(conv_model(tmp_path / "dyn.onnx", res=16, dynamic_batch=True), threads=1)
    a, b, c = random_inputs(sess, seed=3), random_inputs(sess, seed=3), random_inputs(sess, seed=4)
    assert a["input"].shape == (1, 3, 16, 16) and a["input"].dtype == np.float32
    np.testing.assert_array_equal(a["input"], b["input"])
    assert not np.array_equal(a["input"], c["input"])


@pytest.mark.parametrize("threads", [1, 2])
def test_time_onnx_records_the_thread_count(small_onnx, threads):
    t = time_onnx(small_onnx, threads=threads, warmup=2, min_repeats=10, min_time_s=0.05)
    assert t.threads == threads
    assert t.n >= 10 and t.warmup == 2
    assert 0 < t.p50_ms <= t.p90_ms <= t.p99_ms


def test_time_onnx_in_rounds_keeps_each_rounds_median(small_onnx):
    t = time_onnx(small_onnx, threads=1, warmup=2, min_repeats=10, min_time_s=0.02, rounds=3)
    assert len(t.round_p50_ms) == 3 and t.n >= 30
    assert min(t.round_p50_ms) <= t.worst_round_p50_ms == max(t.round_p50_ms)
    assert min(t.round_p50_ms) <= t.p50_ms <= max(t.round_p50_ms)  # the pooled median lies between them
    single = time_onnx(small_onnx, threads=1, warmup=2, min_repeats=10, min_time_s=0.02)
    assert single.round_p50_ms is None and single.worst_round_p50_ms == single.p50_ms
    with pytest.raises(ValueError):
        time_onnx(small_onnx, threads=1, rounds=0)


def test_time_onnx_on_an_exported_family_model(family_onnx):
    t = time_onnx(family_onnx, threads=1, warmup=2, min_repeats=10, min_time_s=0.05)
    assert t.n >= 10 and t.p50_ms > 0


# --- peak memory ---------------------------------------------------------------------------------


def test_peak_memory_of_a_real_model_in_a_child(family_onnx):
    r = peak_memory_onnx(family_onnx, threads=1, runs=2)
    assert isinstance(r, MemoryResult)
    assert r.peak_mb > 0 and r.baseline_mb > 0
    assert r.vmhwm_mb >= r.baseline_mb + r.peak_mb - 1e-6
    assert "child process" in r.method and "clear_refs" in r.method
    assert (r.threads, r.runs) == (1, 2)
    assert MemoryResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_more_activations_give_a_larger_peak(tmp_path):
    small = peak_memory_onnx(conv_model(tmp_path / "s.onnx", res=64), threads=1)
    large = peak_memory_onnx(conv_model(tmp_path / "l.onnx", res=384), threads=1)  # 36x the activations
    assert large.peak_mb > 2 * small.peak_mb
    assert large.peak_mb - small.peak_mb > 20  # one 32x384x384 fp32 tensor alone is 18 MiB


def test_peak_memory_fallback_says_so(small_onnx):
    r = peak_memory_onnx(small_onnx, threads=1, runs=1, reset_peak=False)
    assert r.peak_mb > 0
    assert "not writable" in r.method


def test_peak_memory_child_errors_come_back_as_deploy_errors(small_onnx, tmp_path):
    bad = tmp_path / "broken-for-child.onnx"
    bad.write_bytes(small_onnx.read_bytes()[:500])
    with pytest.raises(ModelInvalid, match="broken-for-child.onnx"):
        peak_memory_onnx(bad, threads=1)
    with pytest.raises(ModelInvalid, match="nowhere.onnx"):
        peak_memory_onnx(tmp_path / "nowhere.onnx", threads=1)


def test_peak_memory_times_out_instead_of_hanging(small_onnx):
    with pytest.raises(DeployError, match="did not finish"):
        peak_memory_onnx(small_onnx, threads=1, timeout_s=0.01)
