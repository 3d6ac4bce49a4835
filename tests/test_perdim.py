"""The per-dimension fill: the closed loop from a known measurement, and resolution-then-width ladders."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipeline.core.budget import Budget
from pipeline.core.scaling import CompoundScaling
from pipeline.cost.plan import scale_cost
from pipeline.fit.options import SearchOptions
from pipeline.fit.perdim import fill_gap, ladder
from pipeline.fit.search import Architecture, enumerate_architectures
from pipeline.measure.loop import Measurement, closed_loop, measured_fits

TRUE_MS = [2.0 + 0.5 * i for i in range(40)]


def test_closed_loop_starts_from_a_known_measurement():
    budget = Budget(latency_ms=10.0)
    calls = []

    def measure(i):
        calls.append(i)
        t = TRUE_MS[i]
        return Measurement(i, 0.0, 100, t, t, t, t, 10.0, 30, 1, measured_fits(t, 10.0, budget), 0.0, "")

    known = {4: Measurement(4, 0.0, 100, 4.0, 4.0, 4.0, 4.0, 10.0, 30, 1, True, 0.0, "")}
    chosen, done = closed_loop(len(TRUE_MS), 14, lambda i: (TRUE_MS[i], 10.0), measure, budget, known=known)
    limit = budget.latency_ms * (1 - budget.noise_margin_pct / 100)
    assert TRUE_MS[chosen] <= limit < TRUE_MS[chosen + 1] and 4 not in calls
    assert {m.index for m in done} == set(calls) | {4}


@dataclass
class FakeContext:
    """What fill_gap uses of a FitContext: a 'device' whose latency is MACs at a fixed rate, 30% above prediction."""

    budget: Budget
    archs: list
    family: str = "efficientnet"
    num_classes: int = 10
    search: SearchOptions = field(default_factory=SearchOptions)
    logs: list = field(default_factory=list)

    def log(self, msg):
        self.logs.append(msg)

    def predict_arch(self, i):
        return scale_cost(self.family, self.archs[i].scale, self.num_classes).macs / 20e6, 40.0

    def measure(self, i):
        predicted = self.predict_arch(i)[0]
        t = predicted * 1.3
        return Measurement(i, self.archs[i].phi, self.archs[i].scale.resolution, predicted, t, t, t, 40.0, 30, 1,
                           measured_fits(t, 40.0, self.budget), 30.0, "", t)


def test_fill_gap_raises_resolution_then_width_through_the_measured_loop():
    archs = enumerate_architectures("efficientnet", -4.0, -3.0)
    ctx = FakeContext(Budget(latency_ms=4.6), archs)
    chosen, measurements = closed_loop(len(archs), len(archs) - 1, ctx.predict_arch, ctx.measure, ctx.budget)
    n = len(archs)
    final, all_measured, summary = fill_gap(ctx, chosen, measurements, ctx.measure)
    assert final >= n  # a rung of a ladder, appended to the architectures
    by_index = {m.index: m for m in all_measured}
    assert by_index[final].fits and by_index[final].dims is not None
    c, f = summary["compound"], summary["chosen"]
    assert summary["basis"] == "measured" and f["utilisation"] > c["utilisation"] and f["utilisation"] <= 0.98
    assert summary["utilisation_gained_pp"] == pytest.approx(100 * (f["utilisation"] - c["utilisation"]), abs=0.01)
    assert f["resolution"] >= c["resolution"] and f["width_multiplier"] >= c["width_multiplier"]
    assert f["phi_depth"] == c["phi_depth"]  # depth is never raised
    # every ladder ended on a measured bracket: the next rung of the last ladder was measured over budget
    last = [s for s in summary["steps"] if s["dimension"] == "width"]
    assert any(s["fits"] is False for s in last) or "top of the ladder" in summary["reason_next_rejected"]
    assert chosen in by_index and sum(m.index == chosen for m in all_measured) == 1  # not measured twice


def test_ladder_raises_one_dimension_from_the_pick():
    arch = Architecture("efficientnet", -3.5, -3.4, CompoundScaling().compound(-3.5))
    ctx = FakeContext(Budget(latency_ms=6.0), [arch])
    res = ladder(ctx, arch, "resolution")
    assert res[0] is arch and len(res) > 5
    assert [a.scale.resolution for a in res] == sorted({a.scale.resolution for a in res})
    assert all(a.scale.width == arch.scale.width and a.scale.depth == arch.scale.depth for a in res)
    wid = ladder(ctx, arch, "width")
    assert all(a.scale.resolution == arch.scale.resolution for a in wid) and wid[-1].scale.width > arch.scale.width
