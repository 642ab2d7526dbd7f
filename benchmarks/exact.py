"""The exact objective that scores every subject: float64 NumPy, over every row.

Written here from the UFLDL formulas and nothing of streamae's (no kernel,
no evaluator), so that the scores do not depend on the code under test:

    a2 = sigmoid(X W1^T + b1)                 (m, s)
    a3 = sigmoid(a2 W2^T + b2)  or  a2 W2^T + b2 (linear decoder)
    rho_hat = mean of a2 over all m rows
    J = 1/(2m) sum ||a3 - x||^2 + lambda/2 (||W1||^2 + ||W2||^2)
        + beta sum_j KL(rho || rho_hat_j)

The rows are taken in blocks (float64 copies of one block at a time), so
memory stays at a few blocks whatever m is.
"""

import numpy as np
from datasets import unflat

BLOCK_ROWS = 32_768


def _sigmoid(z):
    """1 / (1 + exp(-z)) in place, without overflow warnings for large |z|."""
    np.negative(z, out=z)
    np.clip(z, -700.0, 700.0, out=z)
    np.exp(z, out=z)
    z += 1.0
    np.reciprocal(z, out=z)
    return z


def exact_cost(X, theta, dataset, block_rows=BLOCK_ROWS):
    """J(theta) over every row of ``X`` in float64; inf for non-finite weights.

    Parameters
    ----------
    X : ndarray of shape (m, n)
        The data (any float dtype; each block is converted to float64).
    theta : ndarray of shape (2 n s + n + s,)
        W1, b1, W2, b2 flattened in that order.
    dataset : datasets.Dataset
        Gives s, rho, beta, lambda and the decoder.

    Returns
    -------
    float
    """
    theta = np.asarray(theta, np.float64)
    if not np.all(np.isfinite(theta)):
        return float("inf")
    m, n = X.shape
    s = dataset.n_hidden
    W1, b1, W2, b2 = unflat(theta, n, s)
    squares, hidden = 0.0, np.zeros(s)
    for start in range(0, m, block_rows):
        x = np.asarray(X[start:start + block_rows], np.float64)
        a2 = _sigmoid(x @ W1.T + b1)
        out = a2 @ W2.T + b2
        if dataset.decoder == "sigmoid":
            _sigmoid(out)
        out -= x
        squares += float(np.einsum("ij,ij->", out, out))
        hidden += a2.sum(axis=0)
    rho, rho_hat = dataset.rho, hidden / m
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    cost = (0.5 * squares / m + 0.5 * dataset.weight_decay * (np.sum(W1 * W1) + np.sum(W2 * W2))
            + dataset.beta * kl)
    return float(cost) if np.isfinite(cost) else float("inf")
