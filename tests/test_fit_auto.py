"""`deploy fit --family auto`: every family searched, one chosen by the stated rule, all picks recorded."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.core.names import FAMILY_NAMES
from pipeline.cost.accuracy import RULE, expected_top1


def test_auto_lists_every_family_and_chooses_by_expected_top1(tmp_path):
    out = tmp_path / "auto"
    r = CliRunner().invoke(cli, ["fit", "--target", "jetson-nano", "--latency", "12ms", "--family", "auto",
                                 "--phi-min", "-4", "--phi-max", "-2", "--out", str(out), "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    choice = d["family_choice"]
    assert choice["rule"] == RULE and [p["family"] for p in choice["families"]] == list(FAMILY_NAMES)
    fitting = [p for p in choice["families"] if p["fits"]]
    best = max(fitting, key=lambda p: p["expected_top1"])
    assert choice["chosen"] == best["family"] == d["family"]
    for p in fitting:
        assert p["expected_top1"] == expected_top1(p["family"], p["macs"]).top1
        assert p["predicted_latency_ms"] * (1 + p["margin_pct"] / 100) <= 12
    assert d["phi"] == best["phi"]  # nothing measured on a predicted-only target: the pick stands
    report = (out / "report.md").read_text()
    assert "## Family choice" in report and "**chosen**" in report


def test_expected_top1_reproduces_published_points_and_interpolates_between():
    from pipeline.core.scaling import preset
    from pipeline.cost.plan import scale_cost

    b0, b1 = scale_cost("efficientnet", preset("b0")).macs, scale_cost("efficientnet", preset("b1")).macs
    assert expected_top1("efficientnet", b0).top1 == 77.1 and expected_top1("efficientnet", b0).how == "published"
    mid = expected_top1("efficientnet", (b0 * b1) ** 0.5)  # halfway in log(MACs)
    assert mid.how == "interpolated" and mid.top1 == round((77.1 + 79.1) / 2, 2)
    assert expected_top1("resnet50", 1e9).how == "extrapolated"
