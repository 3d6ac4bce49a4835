import json

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.core.errors import ProfileInvalid, ProfileMismatch, ProfileMissing
from pipeline.core.scaling import CompoundScaling
from pipeline.cost.features import LATENCY_FEATURES, MEMORY_FEATURES, latency_features, memory_features
from pipeline.cost.plan import scale_cost
from pipeline.fit.calibrate import FULL_SUITE, SuiteEntry, calibrate
from pipeline.measure.settings import TimingSettings
from pipeline.predict.predictor import Predictor, check_host_profile, load_predictor
from pipeline.predict.profile import Profile, load_profile, save_profile
from pipeline.predict.targets import host_machine, host_profile_path, load_target

TRUE_LATENCY = {"conv_gmacs": 40.0, "pwconv_gmacs": 25.0, "dwconv_gmacs": 90.0, "eltwise_mb": 0.05, "ops": 0.01,
                "const": 0.3}
TRUE_MEMORY = {"weights_mb": 1.1, "activations_mb": 1.5, "const": 12.0}


FAMILY_SUITE = tuple(e for e in FULL_SUITE if e.probe is None)


def synthetic_profile(entries=FAMILY_SUITE, machine=None, channel_block=1, hint: int | None = None) -> Profile:
    """A profile whose latencies follow known per-feature coefficients exactly (``hint``: the device's MLAS block)."""
    machine = {k: v for k, v in (machine or host_machine()).items() if k != "nchwc_block"}
    if hint is not None:
        machine["nchwc_block"] = hint
    records = []
    for e in entries:
        s = e.scale()
        cost = scale_cost(e.family, s)
        f, m = latency_features(cost, channel_block), memory_features(cost)
        lat = sum(TRUE_LATENCY.get(k, 0.0) * f[k] for k in LATENCY_FEATURES)
        mem = sum(TRUE_MEMORY[k] * m[k] for k in MEMORY_FEATURES)
        records.append({"kind": "model", "family": e.family, "phi": s.phi, "phi_depth": s.phi_depth,
                        "phi_width": s.phi_width, "phi_resolution": s.phi_resolution, "resolution": s.resolution,
                        "latency_ms": {"p50": lat, "p90": lat * 1.1}, "peak_memory_mb": mem})
    return Profile(target="host", runtime={"name": "onnxruntime", "version": "test"}, precision="fp32",
                   provenance="measured", device={**machine, "threads": 1},
                   created="2026-01-01T00:00:00+00:00", method={"synthetic": True}, records=tuple(records))


def test_fit_recovers_known_coefficients():
    pred = Predictor.fit(synthetic_profile())
    assert pred.method.startswith("per-op-kind linear")
    assert pred.heldout_error_pct is not None and pred.heldout_error_pct < 1.0
    assert pred.memory_heldout_error_pct < 1.0
    for entry in (SuiteEntry("resnet50", 1.3), SuiteEntry("efficientnet", dims=(2, -1, 0))):  # not in the suite
        cost = scale_cost(entry.family, entry.scale())
        truth = sum(TRUE_LATENCY.get(k, 0.0) * latency_features(cost)[k] for k in LATENCY_FEATURES)
        p = pred.predict(cost)
        assert p.latency_ms == pytest.approx(truth, rel=0.02)
        assert p.latency_ms_p90 == pytest.approx(truth * 1.1, rel=0.02)
        assert p.provenance == "measured" and p.heldout_error_pct == pred.heldout_error_pct


def test_fit_finds_the_channel_block_the_device_pads_to():
    """A device whose convolutions run on 16-channel blocks is recognised and predicted exactly."""
    pred = Predictor.fit(synthetic_profile(channel_block=16))
    assert pred.channel_block == 16 and "blocks of 16" in pred.method
    assert pred.heldout_error_pct < 1.0
    cost = scale_cost("resnet18", SuiteEntry("resnet18", -1.7).scale())  # 56-channel stem: padded to 64
    truth = sum(TRUE_LATENCY.get(k, 0.0) * latency_features(cost, 16)[k] for k in LATENCY_FEATURES)
    assert truth > sum(TRUE_LATENCY.get(k, 0.0) * latency_features(cost)[k] for k in LATENCY_FEATURES) * 1.01
    assert pred.predict(cost).latency_ms == pytest.approx(truth, rel=0.02)


def test_a_device_that_states_its_mlas_block_is_fitted_with_it():
    """The block is a fact of the CPU (AVX-512: 16): it is taken from the profile, not guessed from noise."""
    few = FAMILY_SUITE[::3]  # enough records for the linear model; the held-out refits are what take time
    pred = Predictor.fit(synthetic_profile(few, channel_block=16, hint=16))
    assert pred.channel_block == 16 and "the device's MLAS block" in pred.method
    assert "chosen on held-out error" in Predictor.fit(synthetic_profile(few, channel_block=16)).method


def test_heldout_error_reports_misfit():
    noisy = synthetic_profile()
    recs = [dict(r, latency_ms={"p50": r["latency_ms"]["p50"] * (1.3 if i % 2 else 0.7)})
            for i, r in enumerate(noisy.records)]
    pred = Predictor.fit(Profile.from_dict({**noisy.to_dict(), "records": recs}))
    assert pred.heldout_error_pct > 20


def test_cpu_mismatch_is_refused(tmp_path):
    other = {"cpu_model": "Imaginary CPU 9000", "cores": 64, "machine": "x86_64"}
    profile = synthetic_profile(FAMILY_SUITE[:10], machine=other)
    with pytest.raises(ProfileMismatch, match="recalibrate"):
        check_host_profile(profile, host_machine())
    path = host_profile_path("fp32", 1)
    save_profile(profile, path)
    with pytest.raises(ProfileMismatch, match="Imaginary CPU 9000"):
        load_predictor(load_target("host"), "fp32", threads=1)


def test_missing_profile_says_how_to_make_one():
    with pytest.raises(ProfileMissing, match="deploy calibrate --target host"):
        load_predictor(load_target("host"), "fp32", threads=3)


def test_predict_cli_keys_and_provenance(tmp_path):
    save_profile(synthetic_profile(), host_profile_path("fp32", 1))
    r = CliRunner().invoke(cli, ["predict", "--target", "host", "--threads", "1", "--phi", "0.5", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in ("latency_ms", "memory_mb", "provenance", "heldout_error_pct", "profile", "params", "macs",
                "resolution", "family"):
        assert key in d
    assert d["provenance"] == "measured"
    r = CliRunner().invoke(cli, ["predict", "--target", "jetson-nano", "--family", "resnet50", "--phi", "0"])
    assert r.exit_code == 0 and "published" in r.output and "not measured" in r.output


def test_predict_from_onnx_matches_the_built_model(tmp_path):
    from pipeline.core.scaling import CompoundScaling
    from pipeline.export.onnx import export_onnx
    from pipeline.models import build, initialize

    save_profile(synthetic_profile(), host_profile_path("fp32", 1))
    scale = CompoundScaling().compound(-2)
    export_onnx(initialize(build("mobilenetv2", scale, 1000)), tmp_path / "m.onnx")
    runner = CliRunner()
    a = json.loads(runner.invoke(cli, ["predict", "--target", "host", "--threads", "1", "--onnx",
                                       str(tmp_path / "m.onnx"), "--json"]).output)
    b = json.loads(runner.invoke(cli, ["predict", "--target", "host", "--threads", "1", "--family", "mobilenetv2",
                                       "--phi", "-2", "--json"]).output)
    assert a["macs"] == b["macs"]
    assert a["latency_ms"] == pytest.approx(b["latency_ms"], rel=0.02)


def test_published_profile_predictions_say_so():
    pred = load_predictor(load_target("rtx-4090"), "fp16")
    p = pred.predict(scale_cost("resnet50", CompoundScaling().compound(0)))
    assert p.provenance == "roofline" and p.heldout_error_pct is None and "roofline" in p.note


def test_quick_calibrate_on_a_tiny_suite(tmp_path):
    suite = tuple(SuiteEntry("resnet18", p) for p in (-4.0, -3.5)) + (SuiteEntry("efficientnet", -4.0),)
    out = tmp_path / "p.json"
    profile = calibrate(load_target("host"), "fp32", threads=1, out=out, suite=suite,
                        settings=TimingSettings(warmup=1, min_repeats=5, min_time_s=0.05))
    assert out.is_file() and profile.provenance == "measured" and len(profile.records) == 3
    rec = profile.records[0]
    assert rec["latency_ms"]["p50"] > 0 and rec["peak_memory_mb"] > 0 and rec["repeats"] >= 5
    assert profile.device["threads"] == 1 and profile.device["cpu_model"] == host_machine()["cpu_model"]
    assert profile.runtime["name"] == "onnxruntime" and profile.method["statistic"]


def test_a_probe_record_carries_its_op_list_and_refits_from_the_profile_alone(tmp_path):
    """A probe is costed from its ONNX export once; the profile file is enough to cost it again."""
    from pipeline.cost.onnx import onnx_cost
    from pipeline.export.onnx import DEFAULT_OPSET, export_onnx, fast_exporter
    from pipeline.models.probes import build_probe
    from pipeline.predict.predictor import record_cost

    suite = (*(SuiteEntry("resnet18", p) for p in (-4.0, -3.5)), SuiteEntry("probe", probe="odd-channels"))
    out = tmp_path / "p.json"
    calibrate(load_target("host"), "fp32", threads=1, out=out, suite=suite,
              settings=TimingSettings(warmup=1, min_repeats=5, min_time_s=0.05))
    probe = load_profile(out).records[-1]  # read back: validated by the profile schema
    assert probe["family"] == "probe" and probe["probe"] == "odd-channels" and probe["latency_ms"]["p50"] > 0
    # the suite exports with fit's fast exporter; the record describes the very file that was timed
    export_onnx(build_probe("odd-channels"), tmp_path / "probe.onnx", exporter=fast_exporter(DEFAULT_OPSET))
    assert record_cost(probe).ops == onnx_cost(tmp_path / "probe.onnx").ops
    bad = {**json.loads(out.read_text()), "records": [{k: v for k, v in probe.items() if k != "ops"}]}
    with pytest.raises(ProfileInvalid, match="'probe'"):
        Profile.from_dict(bad)


def test_a_tail_budget_on_a_median_only_profile_is_refused():
    r = CliRunner().invoke(cli, ["fit", "--target", "jetson-nano", "--latency", "20ms", "--percentile", "99"],
                           catch_exceptions=False)
    assert r.exit_code == 1, r.output
    assert "no p99 latencies" in r.stderr and "--percentile 50" in r.stderr and r.stderr.count("\n") == 1


def test_measured_tails_come_from_the_records():
    prof = synthetic_profile()
    recs = [{**r, "latency_ms": {"p50": r["latency_ms"]["p50"], "p90": r["latency_ms"]["p50"] * 1.1,
                                 "p99": r["latency_ms"]["p50"] * 1.5}} for r in prof.to_dict()["records"]]
    pred = Predictor.fit(Profile.from_dict({**prof.to_dict(), "records": recs}))
    p = pred.predict(scale_cost("efficientnet", CompoundScaling().compound(-1)))
    assert p.latency_at(90) == pytest.approx(p.latency_ms * 1.1, rel=1e-3)
    assert p.latency_at(99) == pytest.approx(p.latency_ms * 1.5, rel=1e-3)  # not p90 × a constant


def test_gpu_memory_adds_the_sourced_runtime_context():
    """A GPU target's memory counts the CUDA/TensorRT context (its [hardware] figure) and says where it is from."""
    target = load_target("jetson-nano")
    context = target.hardware["runtime_context_mb"]["value"]
    cost = scale_cost("mobilenetv2", CompoundScaling().compound(0))
    p = load_predictor(target, "fp16").predict(cost, "mobilenetv2")
    static = (cost.weight_bytes["fp16"] + cost.activation_bytes) / 2**20
    assert p.memory_mb == pytest.approx(static + context, abs=0.01)
    assert f"{context:g} MiB for the runtime's context" in p.note and "tensorrtx" in p.note
    cpu = load_predictor(load_target("raspberry-pi-4"), "fp32").predict(cost, "mobilenetv2")
    assert cpu.memory_mb == pytest.approx((cost.weight_bytes["fp32"] + cost.activation_bytes) / 2**20, abs=0.01)
