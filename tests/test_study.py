"""deploy study: strategies at matched MACs, the Table-3-shaped report, and the plain verdict against the paper."""

from __future__ import annotations

import json

import pytest
from test_grid import DATA, FileSizeDevice

from pipeline.research.study import StudyOptions, direction, matched_delta, run_study, verdict


def test_a_tiny_study_writes_the_table_the_plot_and_a_verdict(tmp_path):
    opts = StudyOptions(("resnet18",), DATA, flops_ratios=(2.0,), seeds=1, epochs=1, phi=-4.0,
                        winner=(2.0, 1.0, 1.0), winner_name="deep", opset=17)
    result = run_study(opts, tmp_path / "s", device=FileSizeDevice())
    f = result["families"]["resnet18"]
    rows = f["ratios"]["2"]["rows"]
    assert [r["strategy"] for r in rows] == ["depth", "width", "resolution", "compound (EfficientNet)",
                                             "compound (deep)"]
    for r in rows:
        assert 1.4 < r["macs_ratio"] < 2.9, r  # matched as closely as rounding allows
        assert r["macs"] == pytest.approx(2 * f["baseline"]["macs"], rel=0.45)
    depth = rows[0]
    assert depth["width_vs_base"] == 1 and depth["resolution_vs_base"] == 1 and depth["depth_vs_base"] > 1
    assert rows[4]["direction"] == [pytest.approx(3.801784), 0.0, 0.0]  # 2/1/1 scales depth only
    assert len(f["ratios"]["2"]["verdicts"]) == 2
    saved = json.loads((tmp_path / "s" / "study.json").read_text())
    assert saved["paper"]["compound_ahead_points"] == [0.6, 2.0]
    report = (tmp_path / "s" / "report.md").read_text()
    assert "| scale by width (×2) |" in report and "## What this run says" in report
    assert (tmp_path / "s" / "study.png").stat().st_size > 5000
    from pipeline.cli.study import study_text

    text = study_text({**result, "out": str(tmp_path / "s")})
    assert "compound (deep) ×2" in text and "baseline" in text


def test_verdict_is_judged_against_the_seed_spread():
    def s(name, mean, std):
        return {"strategy": name, "val_accuracy_mean": mean, "val_accuracy_std": std}

    singles = [s("depth", 0.70, 0.004), s("width", 0.72, 0.005)]
    ahead = verdict(s("compound (EfficientNet)", 0.735, 0.004), singles)
    assert ahead["agrees"] and ahead["best_single"] == "width" and ahead["within_paper_range"]
    assert ahead["difference_points"] == pytest.approx(1.5)
    assert verdict(s("compound (EfficientNet)", 0.722, 0.01), singles)["agrees"] is False  # within the spread
    behind = verdict(s("compound (EfficientNet)", 0.69, 0.004), singles)
    assert behind["agrees"] is False and "disagrees" in behind["call"]
    assert verdict(s("c", 0.8, None), [s("depth", 0.7, None)])["agrees"] is None  # one seed: no call


def test_matched_delta_reaches_the_ratio_along_a_direction():
    delta, reached = matched_delta("resnet18", direction((1.0, 1.1, 1.0)), -3.0, 2.0, 64, 10)
    assert delta > 0 and reached == pytest.approx(2.0, rel=0.1)
