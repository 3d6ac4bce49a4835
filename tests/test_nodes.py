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
    """A tiny host calibration with node times (30 grid layers) written beside the profile."""
    from conftest import tiny_suite, tiny_timing

    from pipeline.fit.calibrate import calibrate
    from pipeline.predict.targets import load_target

    out = tmp_path_factory.mktemp("nodes") / "host.json"
    calibrate(load_target("host"), "fp32", threads=1, out=out, suite=tiny_suite(), settings=tiny_timing(),
              node_grid=30)
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
    assert data["profile_created"] == profile.created and len(data["grid"]) == 30
    assert len(data["models"]) == len(profile.records)
    assert all(m["unprofiled_ms"] > 0 and m["nodes"] for m in data["models"])
    errors = data["heldout"]["errors_pct"]  # leave-one-family-out over the three families
    assert len(errors) == len(profile.records) and data["heldout"]["stated_error_pct"] > 0

    target = load_target("host")
    predictor = load_predictor(target, "fp32", 1, node_profile)
    pred = predictor.predict_onnx(foreign_onnx)
    assert pred.method.startswith("per-node model on ONNX Runtime's executed graph")
    assert pred.error_case == "leave-one-group-out"
    assert pred.heldout_error_pct == data["heldout"]["stated_error_pct"]
    assert pred.memory_mb > 0 and pred.latency_ms_p90 >= pred.latency_ms
    measured = LocalDevice(target, 1).measure(foreign_onnx, TimingSettings(warmup=5, min_repeats=30, min_time_s=0.3))
    assert 0.5 < pred.latency_ms / measured.latency.p50_ms < 2.0  # a 30-layer grid: right order, not ±10%


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
