import pytest

from pipeline.core.errors import BudgetInfeasible
from pipeline.core.scaling import CompoundScaling
from pipeline.cost.plan import scale_cost
from pipeline.fit.search import Budget, enumerate_architectures, search
from pipeline.models import signature


@pytest.fixture(scope="module")
def archs():
    return enumerate_architectures("resnet18", -3.0, 1.0)


def macs_predictor(a):
    """Synthetic predictor with known truth: 1 ms per 100 M MACs, memory 10 MiB per 100 M MACs."""
    macs = scale_cost(a.family, a.scale).macs
    return macs / 1e8, macs / 1e7


def test_architectures_are_distinct_plateaus(archs):
    sigs = [signature("resnet18", a.scale) for a in archs]
    assert len(set(sigs)) == len(sigs)
    assert [a.phi for a in archs] == sorted(a.phi for a in archs)
    s = CompoundScaling()
    for a in archs[::7]:  # every φ inside a plateau gives the same network
        mid = (a.phi + a.phi_max) / 2
        assert signature("resnet18", s.compound(mid)) == signature("resnet18", a.scale)
    # plateaus and jumps: far fewer distinct networks than grid points, but more than a handful
    assert 20 < len(archs) < 400


def test_search_picks_largest_that_fits(archs):
    r = search(archs, macs_predictor, Budget(latency_ms=8.0), margin_pct=0.0)
    fits = [i for i, a in enumerate(archs) if macs_predictor(a)[0] <= 8.0]
    assert r.chosen.index == max(fits)
    assert r.next_larger is not None and not r.next_larger.fits
    assert "> 8 ms budget" in r.next_larger.reason


def test_margin_makes_the_choice_smaller(archs):
    plain = search(archs, macs_predictor, Budget(latency_ms=8.0), margin_pct=0.0)
    safe = search(archs, macs_predictor, Budget(latency_ms=8.0), margin_pct=20.0)
    assert safe.chosen.index < plain.chosen.index
    assert safe.chosen.latency_ms * 1.2 <= 8.0


def test_memory_budget_alone(archs):
    r = search(archs, macs_predictor, Budget(memory_mb=50.0), margin_pct=0.0)
    assert r.chosen.memory_mb <= 50.0 and r.next_larger.memory_mb > 50.0


def test_memory_is_padded_by_its_own_margin(archs):
    exact = search(archs, macs_predictor, Budget(memory_mb=100.0), margin_pct=40.0, memory_margin_pct=0.0)
    assert exact.chosen.memory_mb <= 100.0 and exact.next_larger.memory_mb > 100.0  # the latency margin is not used
    padded = search(archs, macs_predictor, Budget(memory_mb=100.0), margin_pct=0.0, memory_margin_pct=25.0)
    assert padded.chosen.memory_mb * 1.25 <= 100.0 and padded.chosen.index < exact.chosen.index
    assert "25.0% memory margin" in padded.next_larger.reason and padded.memory_margin_pct == 25.0


def test_infeasible_names_the_smallest(archs):
    with pytest.raises(BudgetInfeasible) as exc:
        search(archs, macs_predictor, Budget(latency_ms=0.01), margin_pct=0.0)
    assert exc.value.exit_code == 3
    assert f"φ={archs[0].phi:g}" in str(exc.value) and "ms" in str(exc.value) and "MiB" in str(exc.value)


def test_search_is_fast_once_costs_are_cached(archs):
    search(archs, macs_predictor, Budget(latency_ms=5.0), margin_pct=5.0)
    r = search(archs, macs_predictor, Budget(latency_ms=5.0), margin_pct=5.0)
    assert r.seconds < 5.0  # generous: the point is no re-tracing, not an absolute time


def test_empty_range():
    with pytest.raises(BudgetInfeasible):
        enumerate_architectures("resnet18", 1.0, 1.0)
