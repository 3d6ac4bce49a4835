import pytest

from pipeline.core.errors import BudgetInfeasible
from pipeline.fit.search import Budget
from pipeline.measure.loop import MAX_MEASUREMENTS, Measurement, closed_loop, measured_fits

TRUE_MS = [2.0 + 0.5 * i for i in range(40)]  # the device: 2.0, 2.5, ... ms


def make(bias: float, budget_ms: float = 10.0):
    """A predictor that is off by ``bias`` (0.8 = 20% optimistic) and a device that tells the truth."""
    calls = []

    def predicted(i):
        return TRUE_MS[i] * bias, 10.0

    def measure(i):
        calls.append(i)
        t = TRUE_MS[i]
        return Measurement(i, i / 10, 100, predicted(i)[0], t, t * 1.1, t * 1.2, 10.0, 30, 1,
                           measured_fits(t, 10.0, budget), 0.0, "")

    budget = Budget(latency_ms=budget_ms)
    return predicted, measure, budget, calls


@pytest.mark.parametrize("bias, start", [(1.0, 15), (0.8, 19), (1.3, 11), (1.0, 3), (1.0, 30)])
def test_loop_ends_on_a_measured_bracket(bias, start):
    predicted, measure, budget, calls = make(bias)
    chosen, ms = closed_loop(len(TRUE_MS), start, predicted, measure, budget)
    limit = 10.0 * (1 - budget.noise_margin_pct / 100)
    assert TRUE_MS[chosen] <= limit < TRUE_MS[chosen + 1]
    assert chosen + 1 in calls  # the next larger one was measured and failed
    assert len(calls) <= MAX_MEASUREMENTS and len(calls) == len(set(calls))


def test_nothing_fits_on_the_device():
    predicted, measure, budget, calls = make(1.0, budget_ms=1.0)
    with pytest.raises(BudgetInfeasible, match="nothing measured fits"):
        closed_loop(len(TRUE_MS), 5, predicted, measure, budget)
    assert len(calls) <= 2  # the smallest is tried at once, no walk down


@pytest.mark.parametrize("margin", [0.0, 5.0, 20.0])
def test_noise_margin_moves_the_bracket(margin):
    """A model measured just under the budget is not taken while it is inside the noise margin."""
    calls = []
    budget = Budget(latency_ms=10.0, noise_margin_pct=margin)

    def predicted(i):
        return TRUE_MS[i], 10.0

    def measure(i):
        calls.append(i)
        t = TRUE_MS[i]
        return Measurement(i, i / 10, 100, t, t, t, t, 10.0, 30, 1, measured_fits(t, 10.0, budget), 0.0, "")

    chosen, _ = closed_loop(len(TRUE_MS), 10, predicted, measure, budget)
    assert TRUE_MS[chosen] <= 10.0 * (1 - margin / 100) < TRUE_MS[chosen + 1]
    assert chosen == {0.0: 16, 5.0: 15, 20.0: 12}[margin]  # 10.0, 9.5 and 8.0 ms


def test_a_next_larger_far_over_the_limit_is_not_measured_to_confirm():
    """Architectures 20% apart: once the pick measures in, the next one's corrected prediction is clearly over."""
    true = [2.0 * 1.2 ** i for i in range(20)]
    calls, notes = [], []
    budget = Budget(latency_ms=11.5)  # limit 11.27 ms: 10.32 ms fits, the next (12.38 ms) is 10% over

    def predicted(i):
        return true[i] * 0.9, 10.0  # 10% optimistic, consistently

    def measure(i):
        calls.append(i)
        return Measurement(i, i / 10, 100, predicted(i)[0], true[i], true[i], true[i], 10.0, 30, 1,
                           measured_fits(true[i], 10.0, budget), 0.0, "")

    chosen, _ = closed_loop(len(true), 9, predicted, measure, budget, notes=notes)
    assert chosen == 9 and chosen + 1 not in calls
    assert calls == [9] and "not measured" in notes[0]
