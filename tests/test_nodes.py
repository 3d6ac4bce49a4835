"""The per-node model behind ``deploy predict --onnx``: ORT's executed graph, node profiles, the fit, the files.

Real ONNX Runtime sessions on small real models throughout; the one calibration here is a tiny
suite with a 30-layer grid, shared by the module.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from pipeline.cli import cli
from pipeline.core.errors import ProfileInvalid


class Foreign(nn.Module):
    """A model edgefit did not build: dilated, plain-layout grouped and 58-channel depthwise convs, 5×5, a residual."""

    resolution = 64

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.dilated = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 2, dilation=2), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(16, 32, 3, 1, 1, groups=4), nn.ReLU())  # 4 per group: not blocked
        self.odd = nn.Sequential(nn.Conv2d(32, 58, 1), nn.ReLU(), nn.Conv2d(58, 58, 3, 2, 1, groups=58), nn.ReLU())
        self.k5 = nn.Sequential(nn.Conv2d(58, 32, 5, 1, 2), nn.BatchNorm2d(32))
        self.skip = nn.Conv2d(58, 32, 1)
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.odd(self.grouped(self.dilated(self.stem(x))))
        return self.head(torch.relu(self.k5(x) + self.skip(x)))


@pytest.fixture(scope="module")
def foreign_onnx(tmp_path_factory):
    from pipeline.export.onnx import export_onnx

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("foreign") / "foreign.onnx"
    export_onnx(Foreign().eval(), path)
    return path


@pytest.fixture(scope="module")
def node_profile(tmp_path_factory):
    """A tiny host calibration with node times (120 grid layers) written beside the profile.

    Besides the tiny suite, two ResNet-34s and two EfficientNet-Lites: held out, each is covered by a
    relative (ResNet-18, MobileNetV2), so the held-out error has enough covered cases to be stated.
    """
    from conftest import tiny_suite, tiny_timing

    from pipeline.fit.calibrate import SuiteEntry, calibrate
    from pipeline.predict.targets import load_target

    out = tmp_path_factory.mktemp("nodes") / "host.json"
    suite = tiny_suite() + tuple(SuiteEntry(f, p) for f in ("resnet34", "efficientnet-lite") for p in (-4.0, -3.5))
    calibrate(load_target("host"), "fp32", threads=1, out=out, suite=suite, settings=tiny_timing(), node_grid=120)
    return out


def test_the_executed_graph_is_what_ort_runs_with_the_shapes_its_profiler_reports(foreign_onnx):
    from pipeline.cost.ort_graph import executed_graph
    from pipeline.measure.node_profile import profile_graph

    run = profile_graph(foreign_onnx, runs=3, warmup=1)
    assert run.shape_mismatches == ()
    assert run.unprofiled_ms > 0
    graph = executed_graph(foreign_onnx)
    # the same ops in the same order (node names of ORT's layout copies differ between sessions)
    assert [n.op for n in graph] == [n.op for n, _ in run.nodes]
    convs = [n for n in graph if n.op in ("Conv", "FusedConv")]
    blocked = {n.weight[:2]: n.blocked for n in convs}
    assert blocked[(32, 4)] is False and blocked[(58, 1)] is False  # plain layout: im2col + GEMM per group
    assert blocked[(16, 16)] is True  # the dilated 3×3, channels padded to the block
    dilated = next(n for n in convs if n.attrs.get("dilations") == [2, 2])
    assert dilated.output == (1, 16, 32, 32)
    assert any(n.op == "ReorderOutput" for n in graph) and any(n.op == "ReorderInput" for n in graph)


def test_executed_graph_of_a_broken_file_is_a_clear_error(tmp_path):
    from pipeline.core.errors import ModelInvalid
    from pipeline.cost.ort_graph import executed_graph

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelInvalid, match="bad.onnx"):
        executed_graph(bad)


def test_window_taps_that_fall_into_the_padding():
    from pipeline.predict.nodes import _taps

    # 3 taps, dilation 8, padding 8 on a 20-wide map: the outer taps miss for the first and last 8 outputs
    inside, border = _taps(20, 20, 3, 1, 8, 8)
    assert inside == pytest.approx(44 / 60) and border == pytest.approx(16 / 20)
    assert _taps(10, 10, 1, 1, 1, 0) == (1.0, 0.0)


def test_calibration_writes_node_times_and_predict_onnx_uses_them(node_profile, foreign_onnx):
    from pipeline.measure.device import LocalDevice
    from pipeline.measure.settings import TimingSettings
    from pipeline.predict.predictor import load_predictor
    from pipeline.predict.profile import load_profile
    from pipeline.predict.targets import load_target

    profile = load_profile(node_profile)
    sidecar = node_profile.with_name("host.nodes.json")
    assert profile.method["node_times"] == sidecar.name and sidecar.exists()
    data = json.loads(sidecar.read_text())
    assert data["profile_created"] == profile.created and len(data["grid"]) == 120
    assert len(data["models"]) == len(profile.records)
    assert all(m["unprofiled_ms"] > 0 and m["nodes"] for m in data["models"])
    errors = data["heldout"]["errors_pct"]  # leave-one-family-out over the five families
    outside = data["heldout"]["outside_calibration_pct"]  # held-out models the fit without them does not cover
    assert len(errors) + len(outside) == len(profile.records) and len(errors) >= 5
    assert data["heldout"]["stated_error_pct"] > 0

    target = load_target("host")
    predictor = load_predictor(target, "fp32", 1, node_profile)
    pred = predictor.predict_onnx(foreign_onnx)
    assert pred.method.startswith("per-node model on ONNX Runtime's executed graph")
    assert pred.error_case == "leave-one-group-out"
    assert pred.heldout_error_pct == data["heldout"]["stated_error_pct"]
    assert pred.memory_mb > 0 and pred.latency_ms_p90 >= pred.latency_ms
    measured = LocalDevice(target, 1).measure(foreign_onnx, TimingSettings(warmup=5, min_repeats=30, min_time_s=0.3))
    assert 0.5 < pred.latency_ms / measured.latency.p50_ms < 2.0  # a 120-layer grid: right order, not ±10%


def test_a_custom_suite_writes_no_node_times_unless_asked(tiny_profile):
    from pipeline.predict.profile import load_profile

    assert "node_times" not in load_profile(tiny_profile).method
    assert not tiny_profile.with_name(f"{tiny_profile.stem}.nodes.json").exists()


def _install(profile, sidecar_text: str | None = None):
    """Copy the node profile (and its node times, possibly altered) to this machine's host profile place."""
    from pipeline.predict.targets import host_profile_path

    dest = host_profile_path("fp32", 1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(profile, dest)
    sidecar = profile.with_name("host.nodes.json")
    (dest.parent / sidecar.name).write_text(sidecar_text if sidecar_text is not None else sidecar.read_text())
    return dest


def test_cli_predict_onnx_states_the_per_node_method(node_profile, foreign_onnx):
    _install(node_profile)
    r = CliRunner().invoke(cli, ["predict", "--target", "host", "--threads", "1", "--onnx", str(foreign_onnx),
                                 "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["method"].startswith("per-node model") and out["error_case"] == "leave-one-group-out"
    assert out["heldout_error_pct"] > 0 and out["latency_ms"] > 0


@pytest.mark.parametrize("damage, message", [
    (lambda d: "{not json", "not a valid node-times file"),
    (lambda d: json.dumps({**d, "profile_created": "2001-01-01T00:00:00+00:00"}), "recalibrate"),
    (lambda d: json.dumps({**d, "schema_version": 99}), "schema_version"),
])
def test_broken_or_stale_node_times_are_an_error_never_a_silent_fallback(node_profile, foreign_onnx, damage,
                                                                         message):
    data = json.loads(node_profile.with_name("host.nodes.json").read_text())
    _install(node_profile, damage(data))
    r = CliRunner().invoke(cli, ["predict", "--target", "host", "--threads", "1", "--onnx", str(foreign_onnx)])
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "nodes.json" in lines[0]
    assert "Traceback" not in r.output


def test_load_node_times_refuses_a_missing_file(node_profile, tmp_path):
    from pipeline.predict.nodes import load_node_times

    with pytest.raises(ProfileInvalid, match="missing"):
        load_node_times(tmp_path / "gone.nodes.json", "x")


# --- beyond 2-D classifiers: batch, 1-D, transposed convolutions, attention; and what the calibration covers ----

def _node(op, inputs, output, weight=None, domain="", **attrs):
    from pipeline.cost.ort_graph import Node

    return Node("n", op, domain, tuple(tuple(s) for s in inputs), tuple(output), weight, attrs)


def test_conv_macs_count_every_image_and_see_1d_and_transposed_convolutions_as_2d():
    from pipeline.predict.nodes import conv_features, conv_macs, conv_view, is_conv

    conv = _node("Conv", [(4, 16, 32, 32)], (4, 32, 32, 32), (32, 16, 3, 3), strides=[1, 1], pads=[1, 1, 1, 1])
    assert conv_macs(conv) == 4 * 32 * 16 * 9 * 32 * 32  # batch 4: four images' work
    one_d = _node("Conv", [(1, 8, 100)], (1, 16, 48), (16, 8, 5), strides=[2], pads=[0, 0], dilations=[1])
    v = conv_view(one_d)
    assert v.x == (1, 8, 1, 100) and v.w == (16, 8, 1, 5) and v.y == (1, 16, 1, 48) and v.strides == (1, 2)
    assert conv_macs(one_d) == 16 * 8 * 5 * 48 and len(conv_features(one_d, 1.0)) == len(conv_features(conv, 1.0))
    # ConvTranspose's weight is (in, out per group, k, k); it computes over its input map
    up = _node("ConvTranspose", [(2, 64, 12, 12)], (2, 32, 24, 24), (64, 32, 2, 2), strides=[2, 2])
    assert is_conv(up) and conv_view(up).transposed and conv_view(up).w == (32, 64, 2, 2)
    assert conv_macs(up) == 2 * 64 * 32 * 4 * 12 * 12
    assert conv_features(up, 1.0)[-1] == 1.0 and conv_features(conv, 1.0)[-1] == 0.0
    three_d = _node("Conv", [(1, 4, 8, 8, 8)], (1, 8, 8, 8, 8), (8, 4, 3, 3, 3))
    assert conv_view(three_d) is None and not is_conv(three_d)


class _Decoderish(nn.Module):
    """Bilinear upsampling ORT runs in its blocked layout (NCHWc Upsample), a transposed conv, a concat."""

    resolution = 32

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 1, 1)
        self.up = nn.ConvTranspose2d(16, 16, 2, 2)

    def forward(self, x):
        y = torch.relu(self.b(torch.relu(self.a(x))))
        z = nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear")
        return torch.cat([z, self.up(y)], 1).mean((2, 3))


class _Encoderish(nn.Module):
    """PyTorch's own transformer encoder layer on patch tokens: ORT fuses its attention into transBatch MatMuls."""

    resolution = 32

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 32, 8, 8)
        self.enc = nn.TransformerEncoderLayer(32, 2, 64, batch_first=True)

    def forward(self, x):
        return self.enc(self.patch(x).flatten(2).transpose(1, 2)).mean(1)


@pytest.mark.parametrize("model", [_Decoderish, _Encoderish])
def test_shapes_of_upsampling_and_attention_match_the_profiler(model, tmp_path):
    from pipeline.export.onnx import export_onnx
    from pipeline.measure.node_profile import profile_graph

    torch.manual_seed(0)
    path = export_onnx(model().eval(), tmp_path / "m.onnx").path
    run = profile_graph(path, runs=2, warmup=1)
    assert run.shape_mismatches == ()
    if model is _Encoderish:  # the attention scores: 16 tokens × 16 tokens per head, not the batch's transpose
        scores = [n for n, _ in run.nodes if n.op == "FusedMatMul" and n.attrs.get("transBatchA")]
        assert scores and all(n.output[-2:] == (16, 16) for n in scores)


def test_the_bounded_run_constant_and_coverage(node_profile):
    from pipeline.predict.nodes import RUN_US_MAX, load_node_times

    model = load_node_times(node_profile.with_name("host.nodes.json"),
                            json.loads(node_profile.read_text())["created"]).model
    assert 0 <= model.total[2] <= RUN_US_MAX
    never = _node("Erf", [(1, 64, 56, 56)], (1, 64, 56, 56))
    assert "never timed" in model.outside(never)
    huge = _node("Conv", [(1, 16, 64, 64)], (1, 16, 64, 64), (16, 16, 31, 31), strides=[1, 1], pads=[15] * 4)
    assert "kernel" in model.outside(huge)
    assert "3-D" in model.outside(_node("Conv", [(1, 4, 8, 8, 8)], (1, 8, 8, 8, 8), (8, 4, 3, 3, 3)))
    cov = model.coverage([never, huge])
    assert cov.outside_pct == pytest.approx(100) and len(cov.parts) == 2 and "Erf" in cov.describe()


def test_heldout_errors_count_only_the_cases_the_model_covers(node_profile):
    from pipeline.predict.nodes import OUTSIDE_LIMIT_PCT

    data = json.loads(node_profile.with_name("host.nodes.json").read_text())["heldout"]
    outside = data["outside_calibration_pct"]
    assert data["outside_limit_pct"] == OUTSIDE_LIMIT_PCT
    assert all(pct > OUTSIDE_LIMIT_PCT for pct in outside.values())
    assert not set(outside) & set(data["errors_pct"])
    assert len(outside) + len(data["errors_pct"]) == len(json.loads(node_profile.read_text())["records"])


class _Sequence(nn.Module):
    """A 1-D convolution over a 4096-step sequence: a map no calibration grid comes near."""

    resolution = 64

    def __init__(self):
        super().__init__()
        self.c, self.fc = nn.Conv1d(3, 32, 5), nn.Linear(32, 8)

    def forward(self, x):
        return self.fc(self.c(x.flatten(2)).amax(2))


def test_predict_onnx_states_no_error_for_a_model_outside_the_calibration(node_profile, tmp_path):
    from pipeline.export.onnx import export_onnx

    torch.manual_seed(0)
    path = export_onnx(_Sequence().eval(), tmp_path / "seq.onnx").path
    _install(node_profile)
    r = CliRunner().invoke(cli, ["predict", "--target", "host", "--threads", "1", "--onnx", str(path), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["heldout_error_pct"] is None and out["error_case"] == "outside-calibration"
    assert "map width beyond the calibrated range" in out["note"] and out["latency_ms"] > 0
    r = CliRunner().invoke(cli, ["predict", "--target", "host", "--threads", "1", "--onnx", str(path)])
    assert "error unknown" in r.output and "outside-calibration (" in r.output
