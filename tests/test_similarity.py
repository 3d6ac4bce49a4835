"""CKA/CCA against the google-research `representation_similarity` demo values and their invariances."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analysis import similarity as sim
from pipeline.core.errors import DeployError


@pytest.fixture(scope="module")
def demo():
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    return x, y


def test_reference_values(demo):
    x, y = demo
    assert round(sim.linear_cka(x, y), 5) == 0.55761
    assert round(sim.rbf_cka(x, y, threshold=0.5), 5) == 0.65483
    assert round(sim.debiased_cka(x, y), 5) == 0.51346
    assert round(sim.mean_squared_cca(x, y), 5) == 0.54312


def test_self_similarity_is_one(demo):
    x, _ = demo
    for method in sim.METHODS:
        assert sim.similarity(x, x, method) == pytest.approx(1.0, abs=1e-9), method
    assert sim.mean_squared_cca(x, x) == pytest.approx(1.0)


def test_invariances(demo):
    x, y = demo
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    base = sim.linear_cka(x, y)
    assert sim.linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert sim.linear_cka(7.5 * x, y) == pytest.approx(base, abs=1e-10)
    assert sim.rbf_cka(x @ q * 3.0, y) == pytest.approx(sim.rbf_cka(x, y), abs=1e-10)
    assert sim.debiased_cka(x @ q, 0.1 * y) == pytest.approx(sim.debiased_cka(x, y), abs=1e-10)
    a = rng.standard_normal((10, 10)) @ np.diag(np.geomspace(0.05, 20, 10))  # invertible, far from orthogonal
    assert np.linalg.matrix_rank(a) == 10
    assert abs(sim.linear_cka(x @ a, y) - base) > 0.05
    # CCA is invariant to any invertible linear map, which is the difference between the two families
    assert sim.mean_squared_cca(x @ a, y, center=True) == pytest.approx(sim.mean_squared_cca(x, y, center=True))


def test_minibatch_one_batch_equals_debiased(demo):
    x, y = demo
    assert sim.minibatch_cka([x], [y]) == pytest.approx(sim.debiased_cka(x, y), abs=1e-12)
    # the written-out Song et al. estimator agrees with the centred-Gram form
    kx, ky = x @ x.T, y @ y.T
    n = x.shape[0]
    direct = sim.center_gram(kx, True).ravel() @ sim.center_gram(ky, True).ravel() / (n * (n - 3))
    assert sim.unbiased_hsic(kx, ky) == pytest.approx(direct, rel=1e-10)


def test_minibatch_accumulates_not_averages(demo):
    x, y = demo
    acc = sim.MinibatchCKA()
    for i in range(0, 100, 25):
        acc.update(x[i:i + 25], y[i:i + 25])
    chunks = [(x[i:i + 25], y[i:i + 25]) for i in range(0, 100, 25)]
    expected = sum(sim.unbiased_hsic(a @ a.T, b @ b.T) for a, b in chunks) / np.sqrt(acc.hsic_xx * acc.hsic_yy)
    assert acc.value() == pytest.approx(expected)
    averaged = np.mean([sim.debiased_cka(x[i:i + 25], y[i:i + 25]) for i in range(0, 100, 25)])
    assert acc.value() != pytest.approx(averaged, abs=1e-6)
    assert acc.batches == 4 and acc.samples == 100


def test_debiased_near_zero_for_independent_wide_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((50, 500)), rng.standard_normal((50, 500))
    assert abs(sim.debiased_cka(a, b)) < 0.05
    assert sim.linear_cka(a, b) > 0.5


def test_cca_refuses_fewer_samples_than_neurons():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((40, 64)), rng.standard_normal((40, 64))
    for fn in (sim.svcca, sim.pwcca, sim.mean_squared_cca):
        with pytest.raises(DeployError, match="got 40 samples for 64 neurons; use at least 65 samples"):
            fn(a, b)


def test_pwcca_weights_come_from_first_representation():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 6)) * np.array([10, 5, 1, 0.1, 0.1, 0.1])
    y = np.hstack([x[:, :2] + 0.1 * rng.standard_normal((400, 2)), rng.standard_normal((400, 4))])
    rho, h = sim.cca(x, y)
    w = np.abs(h.T @ (x - x.mean(0))).sum(1)
    assert sim.pwcca(x, y) == pytest.approx(float(np.sum(w / w.sum() * rho)))
    # x's variance sits in the two directions y shares, so PWCCA(x, y) is high and plain mean CCA is not
    assert sim.pwcca(x, y) > 0.8 and sim.svcca(x, y, keep=1.0) < 0.5
    assert sim.pwcca(x, y) != pytest.approx(sim.pwcca(y, x), abs=1e-3)


def test_dead_neurons_do_not_break_cca():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 8))
    x[:, 3] = 0.0  # a dead ReLU channel
    assert sim.svcca(x, x) == pytest.approx(1.0)
    assert sim.pwcca(x, x) == pytest.approx(1.0)


def test_bad_inputs():
    with pytest.raises(DeployError, match="same inputs"):
        sim.linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(DeployError, match="samples x features"):
        sim.linear_cka(np.ones((5, 2, 2)), np.ones((5, 2)))
    with pytest.raises(DeployError, match="unknown similarity method"):
        sim.similarity(np.ones((5, 2)), np.ones((5, 2)), "cosine")
    with pytest.raises(DeployError, match="constant"):
        sim.linear_cka(np.ones((5, 2)), np.random.default_rng(0).standard_normal((5, 2)))
