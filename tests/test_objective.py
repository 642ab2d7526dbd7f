"""The objective: finite-difference gradient checks of every strategy, the
NumPy reference against a per-sample transcription of the seed's formulas,
and the pieces in streamae._objective."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from streamae import STRATEGIES, NumericalError, SparseAutoencoder, reference_cost_and_grad
from streamae._gradcheck import check_gradient, random_problem, relative_difference
from streamae._objective import (
    PARAM_NAMES,
    assemble,
    flatten,
    init_params,
    make_hyper,
    param_shapes,
    sparsity_terms,
    unflatten,
)

# The exercise's criterion: central differences with eps 1e-4,
# norm(num - ana) / norm(num + ana) below 1e-9 (measured: 1.1e-10 for every
# strategy on this problem; the float64 truncation error of the differences).
GRADCHECK_TOL = 1e-9


# ----------------------------------------------------------------- gradient checks

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradient_check_every_strategy(strategy, hyper_kw):
    X, params = random_problem(m=60, n_visible=8, n_hidden=5, seed=0)

    def evaluate(p):
        # 17-row chunks: 4 chunks, the last one shorter.
        model = SparseAutoencoder.from_weights(
            **p, **hyper_kw, dtype="float64", strategy=strategy,
            run_options={"chunk_rows": 17, "scheduler": "synchronous"})
        return model.cost_and_grad(X)

    diff = check_gradient(evaluate, params)
    assert diff < GRADCHECK_TOL


def test_gradient_check_reference(hyper):
    X, params = random_problem(m=40, n_visible=6, n_hidden=4, seed=1)
    diff = check_gradient(lambda p: reference_cost_and_grad(X, p, hyper), params)
    assert diff < GRADCHECK_TOL


def test_gradient_check_detects_a_wrong_gradient(hyper):
    """The instrument itself: a gradient missing the weight-decay term fails."""
    X, params = random_problem(m=40, n_visible=6, n_hidden=4, seed=1)

    def wrong(p):
        cost, grad = reference_cost_and_grad(X, p, hyper)
        grad = dict(grad, W2=grad["W2"] - hyper.weight_decay * p["W2"])
        return cost, grad

    assert check_gradient(wrong, params) > 1e-4


def test_relative_difference():
    a = np.array([1.0, 2.0, 3.0])
    assert relative_difference(a, a) == 0.0
    assert relative_difference(a, a + 1e-6) == pytest.approx(
        np.linalg.norm(np.full(3, 1e-6)) / np.linalg.norm(2 * a + 1e-6), rel=1e-12)


# ----------------------------------------------------------------- the reference

def _per_sample(X, params, rho, beta, lam):
    """The seed's formulas, one sample at a time with explicit sums."""
    W1, b1, W2, b2 = (params[k] for k in PARAM_NAMES)
    m, n = X.shape
    s = W1.shape[0]

    def f(z):
        return 1.0 / (1.0 + np.exp(-z))

    a2s = [f(W1 @ x + b1) for x in X]
    rho_hat = sum(a2s) / m
    sparse = beta * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
    cost = 0.0
    gW1, gb1 = np.zeros((s, n)), np.zeros(s)
    gW2, gb2 = np.zeros((n, s)), np.zeros(n)
    for x, a2 in zip(X, a2s, strict=True):
        a3 = f(W2 @ a2 + b2)
        cost += 0.5 * np.sum((a3 - x) ** 2)
        d3 = (a3 - x) * a3 * (1 - a3)
        d2 = (W2.T @ d3 + sparse) * a2 * (1 - a2)
        gW1 += np.outer(d2, x)
        gb1 += d2
        gW2 += np.outer(d3, a2)
        gb2 += d3
    kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    cost = cost / m + lam / 2 * (np.sum(W1 ** 2) + np.sum(W2 ** 2)) + beta * kl
    grad = {"W1": gW1 / m + lam * W1, "b1": gb1 / m, "W2": gW2 / m + lam * W2, "b2": gb2 / m}
    return cost, grad


def test_reference_matches_per_sample_formulas(make_problem, hyper):
    X, params = make_problem(30, 6, 4)
    cost, grad = reference_cost_and_grad(X, params, hyper)
    cost1, grad1 = _per_sample(X, params, hyper.rho, hyper.beta, hyper.weight_decay)
    assert cost == pytest.approx(cost1, rel=1e-12)
    for k in PARAM_NAMES:
        assert_allclose(grad[k], grad1[k], rtol=1e-12, atol=1e-12 * np.abs(grad1[k]).max())


# ----------------------------------------------------------------- pieces

def test_init_params_follows_the_exercise(rng):
    n, s = 64, 25
    p = init_params(n, s, rng)
    r = np.sqrt(6) / np.sqrt(s + n + 1)
    assert {k: v.shape for k, v in p.items()} == param_shapes(n, s)
    assert_array_equal(p["b1"], 0)
    assert_array_equal(p["b2"], 0)
    for k in ("W1", "W2"):
        assert np.abs(p[k]).max() <= r
        assert np.abs(p[k]).max() > 0.9 * r  # spread over the whole range
    p32 = init_params(n, s, np.random.default_rng(3), dtype=np.float32)
    assert all(v.dtype == np.float32 for v in p32.values())
    again = init_params(n, s, np.random.default_rng(3), dtype=np.float32)
    for k in PARAM_NAMES:
        assert_array_equal(p32[k], again[k])


def test_flatten_unflatten_round_trip(problem):
    _, params = problem
    theta = flatten(params)
    s, n = params["W1"].shape
    assert theta.dtype == np.float64 and theta.size == 2 * s * n + s + n
    # Order W1, b1, W2, b2 (the optimizer's theta layout).
    assert_array_equal(theta[:s * n], params["W1"].ravel())
    assert_array_equal(theta[s * n:s * n + s], params["b1"])
    back = unflatten(theta, n, s)
    for k in PARAM_NAMES:
        assert_array_equal(back[k], params[k])
        assert back[k].flags.c_contiguous
    assert all(v.dtype == np.float32 for v in unflatten(theta, n, s, np.float32).values())


def test_sparsity_terms_formula(hyper):
    sum_a2 = np.array([3.0, 10.0, 25.0])
    m = 50
    rho_hat, kl, c = sparsity_terms(sum_a2, m, hyper)
    r = hyper.rho
    assert_allclose(rho_hat, sum_a2 / m, rtol=1e-15)
    expected_kl = np.sum(r * np.log(r / rho_hat) + (1 - r) * np.log((1 - r) / (1 - rho_hat)))
    assert kl == pytest.approx(expected_kl, rel=1e-14)
    assert_allclose(c, hyper.beta * (-r / rho_hat + (1 - r) / (1 - rho_hat)), rtol=1e-14)
    # KL is zero exactly at the target.
    _, kl0, c0 = sparsity_terms(np.full(2, hyper.rho * m), m, hyper)
    assert abs(kl0) < 1e-15 and np.abs(c0).max() < 1e-12


@pytest.mark.parametrize("value", [0.0, 50.0, np.nan])
def test_sparsity_terms_refuse_infinite_kl(hyper, value):
    sum_a2 = np.array([10.0, value, 20.0])
    with pytest.raises(NumericalError) as info:
        sparsity_terms(sum_a2, 50, hyper)
    msg = str(info.value)
    assert "\n" not in msg
    assert "rho_hat" in msg and "[1]" in msg  # names the unit


def test_assemble(problem):
    _, params = problem
    h = make_hyper(0.1, 2.0, 0.5)
    s, n = params["W1"].shape
    sums = {"gW1": np.ones((s, n)), "gb1": np.ones(s), "gW2": np.ones((n, s)),
            "gb2": np.ones(n)}
    cost, grad, terms = assemble(params, h, 4, 8.0, 0.25, **sums)
    assert terms["reconstruction"] == 0.5 * 8.0 / 4
    assert terms["sparsity"] == 2.0 * 0.25
    wd = 0.25 * (np.sum(params["W1"] ** 2) + np.sum(params["W2"] ** 2))
    assert terms["weight_decay"] == pytest.approx(wd, rel=1e-14)
    assert cost == pytest.approx(sum(terms.values()), rel=1e-15)
    assert_allclose(grad["W1"], 0.25 + 0.5 * params["W1"], rtol=1e-15)
    assert_allclose(grad["W2"], 0.25 + 0.5 * params["W2"], rtol=1e-15)
    assert_allclose(grad["b1"], 0.25, rtol=0)  # no weight decay on biases
    assert_allclose(grad["b2"], 0.25, rtol=0)
