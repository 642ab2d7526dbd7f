"""Finite-difference check of the analytic gradient, as in the UFLDL exercise."""

import numpy as np

from ._objective import flatten, init_params, unflatten


def numerical_gradient(cost, theta, eps=1e-4):
    """Central differences (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps).

    Parameters
    ----------
    cost : callable
        theta -> float.
    theta : ndarray of shape (p,)

    Returns
    -------
    ndarray of shape (p,)
    """
    grad = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = eps
        grad[i] = (cost(theta + step) - cost(theta - step)) / (2 * eps)
    return grad


def relative_difference(numeric, analytic):
    """norm(num - ana) / norm(num + ana), the exercise's measure."""
    return float(np.linalg.norm(numeric - analytic) / np.linalg.norm(numeric + analytic))


def random_problem(m=60, n_visible=8, n_hidden=5, seed=0):
    """A small random dataset in [0, 1] and initial weights, for gradient checks.

    Returns
    -------
    X : ndarray of shape (m, n_visible)
    params : dict of float64 ndarrays
    """
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 1.0, size=(m, n_visible))
    params = init_params(n_visible, n_hidden, rng)
    params["b1"] = rng.normal(0.0, 0.1, n_hidden)
    params["b2"] = rng.normal(0.0, 0.1, n_visible)
    return X, params


def check_gradient(evaluate, params, eps=1e-4):
    """Relative difference between the analytic and numerical gradients.

    Parameters
    ----------
    evaluate : callable
        params dict -> (cost, grad dict).
    params : dict of ndarrays

    Returns
    -------
    float
    """
    n_hidden, n_visible = params["W1"].shape
    theta = flatten(params)

    def cost(t):
        return evaluate(unflatten(t, n_visible, n_hidden))[0]

    analytic = flatten(evaluate(params)[1])
    return relative_difference(numerical_gradient(cost, theta, eps), analytic)
