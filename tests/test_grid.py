"""deploy grid: the grid and its references, a tiny grid end to end, resuming from the per-point cache."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.core.scaling import flops_factor
from pipeline.measure.device import Device, DeviceMeasurement
from pipeline.measure.settings import TimingSettings
from pipeline.measure.timing import Timing
from pipeline.research.grid import GridOptions, grid_points, run_grid
from pipeline.research.points import PointCache, PointSpec, run_point

DATA = "builtin:shapes:samples=40,size=32"


class FileSizeDevice(Device):
    """A stand-in device: latency proportional to the ONNX file's size (no timing in unit tests)."""

    name = "fake"

    def __init__(self):
        self.calls = 0

    def facts(self) -> dict:
        return {"cpu_model": "fake"}

    def measure(self, model, settings: TimingSettings, *, precision="fp32", memory=True) -> DeviceMeasurement:
        from pathlib import Path

        self.calls += 1
        ms = Path(model).stat().st_size / 1e6
        t = Timing(ms, ms * 1.1, ms * 1.2, ms, 0.0, ms, ms, 0.1, 20, 2, 0.1, 1, (ms, ms * 1.05))
        return DeviceMeasurement(t, 30.0, "fake device", {"name": "fake"}, 1, settings, "now", "0" * 64)


def test_grid_keeps_the_flops_constraint_and_adds_the_references():
    pts = grid_points(2.0, 0.1, 0.1)
    grid = [p for p in pts if p.on_grid]
    assert len(grid) == 22 and all(min(p.alpha, p.beta, p.gamma) >= 1 for p in grid)
    assert all(abs(flops_factor(p.alpha, p.beta, p.gamma) - 2) <= 0.1 + 1e-9 for p in grid)
    refs = {r: p for p in pts for r in p.references}
    assert (refs["efficientnet"].alpha, refs["efficientnet"].beta, refs["efficientnet"].gamma) == (1.2, 1.1, 1.15)
    assert flops_factor(refs["dollar-fast"].alpha, refs["dollar-fast"].beta, refs["dollar-fast"].gamma) \
        == pytest.approx(2.0, rel=1e-5)
    on = {r for p in grid_points(2.0, 0.1, 0.05) if p.on_grid for r in p.references}
    assert on == {"efficientnet"}  # on the 0.05 grid EfficientNet's constants are a grid point, labelled


def test_tiny_grid_writes_json_report_and_resumes_without_retraining(tmp_path, monkeypatch):
    import pipeline.train.trainer as trainer

    trained = []
    real_train = trainer.train
    monkeypatch.setattr(trainer, "train", lambda *a, **k: trained.append(a[1]) or real_train(*a, **k))
    device = FileSizeDevice()
    # no grid point has α·β²·γ² = 1.5 on a step of 1: the grid is the two references (Dollár's for ratio 1.5)
    opts = GridOptions("resnet18", DATA, phi=-4, flops_ratio=1.5, step=1.0, tolerance=0.1, seeds=1, epochs=1,
                       opset=17)
    out = tmp_path / "g"
    result = run_grid(opts, out, device=device)
    assert len(trained) == 2 and device.calls == 2
    data = json.loads((out / "grid.json").read_text())
    assert data["complete"] and len(data["points"]) == 2 == len({(p["alpha"], p["beta"], p["gamma"])
                                                                 for p in data["points"]})
    assert {r for p in data["points"] for r in p["references"]} == {"efficientnet", "dollar-fast"}
    top = data["points"][0]
    assert top["rank"] == 1 and data["scaling"]["alpha"] == top["alpha"] == data["winner"]["alpha"]
    row = top["rows"][0]
    for key in ("val_accuracy", "latency_ms", "macs", "params", "activation_mb", "resolution", "provenance"):
        assert row[key] is not None
    assert row["provenance"] == "measured" and row["resolution"] == 32 and row["data"]["classes"] == 10
    assert (out / "grid.png").stat().st_size > 5000
    report = (out / "report.md").read_text()
    assert "![accuracy against latency](grid.png)" in report and "dollar-fast" in report and "**Winner" in report
    # "killed" after one point: the other's result and grid.json are gone; the rerun trains only that one
    victim = PointCache(out).path(top["rows"][0]["key"])
    victim.unlink()
    (out / "grid.json").unlink()
    again = run_grid(opts, out, device=device)
    assert len(trained) == 3  # only the point whose result was lost
    assert [p["name"] for p in again["points"]] == [p["name"] for p in result["points"]]
    assert sum(r["cached"] for p in again["points"] for r in p["rows"]) == 1
    # the winner as a scaling: by folder, and saved by name
    from pipeline.cli.grid import grid_text
    from pipeline.core.scalings import lookup
    from pipeline.research.grid import save_winner

    assert lookup(str(out)).alpha == top["alpha"]
    save_winner(again, "tiny-winner")
    assert lookup("tiny-winner").beta == top["beta"]
    text = grid_text({**again, "out": str(out), "saved_as": "tiny-winner"})
    assert "winner α=" in text and "saved as scaling 'tiny-winner'" in text and "dollar-fast" in text


def test_accuracy_at_latency_asks_fit_for_the_largest_model_within_the_budget(tmp_path, monkeypatch):
    """On a predicted-only target (no timing in unit tests): fit's answer is cached, infeasible ones too."""
    import pipeline.fit.flow as flow
    from pipeline.research.grid import GridPoint, largest_fitting_phi

    opts = GridOptions("resnet18", DATA, objective="accuracy-at-latency", latency_ms=2.0, target="jetson-nano",
                       phi_min=-4, phi_max=-3).check()
    point = GridPoint(1.2, 1.1, 1.15, ("efficientnet",))
    got = largest_fitting_phi(opts, point, 32, 10, tmp_path, log=lambda _: None)
    assert got["fits"] and -4 <= got["phi"] <= -3 and got["fit_measured"] is False
    record = json.loads((tmp_path / "fits" / got["fit_run"].split("/")[-1] / "fit.json").read_text())
    assert record["scaling"]["alpha"] == 1.2 and record["scaling"]["base_resolution"] == 32
    tight = replace(opts, latency_ms=0.001)
    nothing = largest_fitting_phi(tight, point, 32, 10, tmp_path, log=lambda _: None)
    assert nothing["fits"] is False and nothing["phi"] is None and "Raise the budget" in nothing["reason"]
    monkeypatch.setattr(flow, "fit", lambda *a, **k: pytest.fail("a cached fit was run again"))
    assert largest_fitting_phi(opts, point, 32, 10, tmp_path, log=lambda _: None) == got
    assert largest_fitting_phi(tight, point, 32, 10, tmp_path, log=lambda _: None) == nothing


def test_a_point_is_keyed_by_what_changes_its_result(tmp_path):
    spec = PointSpec.compound("efficientnet", 1.2, 1.1, 1.15, -4, seed=0, data=DATA, epochs=1, label="a", opset=17)
    assert spec.key("f") == PointSpec.compound("efficientnet", 1.2, 1.1, 1.15, -4, seed=0, data=DATA, epochs=1,
                                               label="b", opset=17).key("f")
    assert spec.key("f") != PointSpec.compound("efficientnet", 1.2, 1.1, 1.15, -4, seed=1, data=DATA,
                                               epochs=1).key("f")
    assert spec.key("f") != spec.key("other data")
    row = run_point(spec, PointCache(tmp_path), device=FileSizeDevice())
    assert not row["cached"] and run_point(spec, PointCache(tmp_path), device=FileSizeDevice())["cached"]


@pytest.mark.parametrize("args, text", [
    (["--objective", "accuracy-at-latency"], "needs --latency"),
    (["--latency", "5ms"], "pass that objective"),
    (["--save-scaling", "Bad Name"], "lowercase"),
    (["--step", "0"], "--step must be"),
])
def test_grid_usage_errors(args, text, tmp_path):
    r = CliRunner().invoke(cli, ["grid", "--data", DATA, "--out", str(tmp_path / "g"), *args])
    assert r.exit_code == 2 and text in r.output
