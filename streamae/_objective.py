"""The sparse-autoencoder objective: parameters, the sparsity term, and the
assembly of the cost and gradient from partial sums over chunks.

The objective (rows of X are samples, m rows in the whole dataset)::

    J = 1/(2m) sum_i ||a3_i - x_i||^2
        + lambda/2 (||W1||_F^2 + ||W2||_F^2)
        + beta sum_j KL(rho || rho_hat_j),      rho_hat = mean_i a2_i

`reference_cost_and_grad` is a plain NumPy implementation on an in-memory
array, kept deliberately independent of the kernels so that tests can
compare the two.
"""

from dataclasses import dataclass

import numpy as np

from ._errors import NumericalError

PARAM_NAMES = ("W1", "b1", "W2", "b2")
DECODERS = ("sigmoid", "linear")


@dataclass(frozen=True)
class Hyper:
    """Hyperparameters of the objective.

    Attributes
    ----------
    rho : float
        Target mean activation of each hidden unit, in (0, 1).
    beta : float
        Weight of the sparsity penalty, >= 0.
    weight_decay : float
        lambda, the L2 penalty on W1 and W2 (not on biases), >= 0.
    decoder : {"sigmoid", "linear"}, default "sigmoid"
        Output layer: a3 = f(z3) (data in [0, 1]) or a3 = z3 (any finite data).
    """

    rho: float
    beta: float
    weight_decay: float
    decoder: str = "sigmoid"

    @property
    def linear(self):
        """True for the linear decoder (the kernels' ``linear`` flag)."""
        return self.decoder == "linear"


def param_shapes(n_visible, n_hidden):
    """Shapes of W1, b1, W2, b2 for ``n_visible`` inputs and ``n_hidden`` units."""
    s, n = n_hidden, n_visible
    return {"W1": (s, n), "b1": (s,), "W2": (n, s), "b2": (n,)}


def param_blocks(n_visible, n_hidden):
    """[(start, stop)] of W1, b1, W2, b2 in the flat vector of `flatten`."""
    bounds = np.cumsum([0] + [int(np.prod(shape))
                              for shape in param_shapes(n_visible, n_hidden).values()])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def init_params(n_visible, n_hidden, rng, dtype=np.float64):
    """The exercise's initialisation: biases 0, weights U(-r, r),
    r = sqrt(6) / sqrt(n_hidden + n_visible + 1).

    Returns
    -------
    dict of ndarrays W1 (s, n), b1 (s,), W2 (n, s), b2 (n,)
    """
    r = np.sqrt(6.0) / np.sqrt(n_hidden + n_visible + 1)
    shapes = param_shapes(n_visible, n_hidden)
    W1 = rng.uniform(-r, r, size=shapes["W1"])
    W2 = rng.uniform(-r, r, size=shapes["W2"])
    params = {"W1": W1, "b1": np.zeros(n_hidden), "W2": W2, "b2": np.zeros(n_visible)}
    return {k: v.astype(dtype) for k, v in params.items()}


def flatten(params):
    """Concatenate W1, b1, W2, b2 into one float64 vector (the optimizer's theta)."""
    return np.concatenate([np.asarray(params[k], np.float64).ravel() for k in PARAM_NAMES])


def unflatten(theta, n_visible, n_hidden, dtype=np.float64):
    """Inverse of `flatten`: C-contiguous arrays of ``dtype``."""
    out, at = {}, 0
    for name, shape in param_shapes(n_visible, n_hidden).items():
        size = int(np.prod(shape))
        out[name] = np.ascontiguousarray(theta[at:at + size].reshape(shape), dtype=dtype)
        at += size
    return out


def sparsity_terms(sum_a2, m, hyper):
    """rho_hat, the KL penalty and the coefficient c of d2's sparsity term.

    Parameters
    ----------
    sum_a2 : ndarray of shape (s,)
        sum_i a2_i over the whole dataset.
    m : int
        Rows in the whole dataset.
    hyper : Hyper

    Returns
    -------
    rho_hat : ndarray of shape (s,)
    kl : float
        sum_j KL(rho || rho_hat_j) (not yet multiplied by beta).
    c : ndarray of shape (s,)
        beta (-rho / rho_hat + (1 - rho) / (1 - rho_hat)).

    Raises
    ------
    NumericalError
        If some rho_hat_j is exactly 0 or 1 in floating point, where the KL
        term is infinite (not raised when beta is 0: the term is then 0), or
        not a number. Its ``units`` attribute lists the hidden units.
    """
    rho = hyper.rho
    rho_hat = np.asarray(sum_a2, np.float64) / m
    nan = ~np.isfinite(rho_hat)
    if nan.any():
        raise _numerical_error(
            np.flatnonzero(nan), "is not a number (the hidden pre-activations overflowed)")
    saturated = (rho_hat <= 0.0) | (rho_hat >= 1.0)
    if saturated.any() and hyper.beta == 0.0:
        # No sparsity penalty: a saturated unit is harmless, and beta * KL would be 0 * inf.
        return rho_hat, 0.0, np.zeros_like(rho_hat)
    if saturated.any():
        raise _numerical_error(
            np.flatnonzero(saturated),
            "is exactly 0 or 1 in floating point, so the KL sparsity penalty is infinite; "
            "the hidden layer is saturated")
    kl = float(np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))))
    c = hyper.beta * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
    return rho_hat, kl, c


def _numerical_error(units, what):
    """A `NumericalError` naming the hidden ``units``; they are kept in ``.units``."""
    error = NumericalError(
        f"rho_hat of hidden unit(s) {_units(units)} {what} "
        "(check the data's scale, or use dtype='float64')")
    error.units = [int(u) for u in units]
    return error


def _units(units):
    shown = ", ".join(str(int(u)) for u in units[:10])
    return f"[{shown}{f', ... ({len(units)} units)' if len(units) > 10 else ''}]"


def weight_decay_cost(params, hyper):
    """lambda/2 (||W1||_F^2 + ||W2||_F^2), in float64."""
    W1 = np.asarray(params["W1"], np.float64)
    W2 = np.asarray(params["W2"], np.float64)
    return 0.5 * hyper.weight_decay * (float(np.sum(W1 * W1)) + float(np.sum(W2 * W2)))


def assemble(params, hyper, m, sq, kl, gW1, gb1, gW2, gb2):
    """Cost and gradient from the dataset-wide sums.

    ``gW1 .. gb2`` are sums over all rows of the backprop products (with the
    sparsity term already included in gW1 and gb1).

    Returns
    -------
    cost : float
    grad : dict of float64 ndarrays, shapes as the parameters
    terms : dict
        ``reconstruction``, ``weight_decay`` and ``sparsity`` parts of the cost.
    """
    lam = hyper.weight_decay
    terms = {
        "reconstruction": 0.5 * sq / m,
        "weight_decay": weight_decay_cost(params, hyper),
        "sparsity": hyper.beta * kl,
    }
    grad = {
        "W1": gW1 / m + lam * np.asarray(params["W1"], np.float64),
        "b1": gb1 / m,
        "W2": gW2 / m + lam * np.asarray(params["W2"], np.float64),
        "b2": gb2 / m,
    }
    return sum(terms.values()), grad, terms


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def reference_cost_and_grad(X, params, hyper):
    """Plain NumPy cost and gradient on an in-memory array, in float64.

    A direct transcription of the seed's vectorised backprop, used as the
    independent reference in tests and benchmarks. With ``hyper.decoder ==
    "linear"``: a3 = z3 and d3 = a3 - X (the tutorial's linear decoder).

    Parameters
    ----------
    X : ndarray of shape (m, n)
    params : dict with W1 (s, n), b1 (s,), W2 (n, s), b2 (n,)
    hyper : Hyper

    Returns
    -------
    cost : float
    grad : dict of ndarrays, shapes as the parameters
    """
    X = np.asarray(X, np.float64)
    W1, b1, W2, b2 = (np.asarray(params[k], np.float64) for k in PARAM_NAMES)
    m = X.shape[0]
    a2 = _sigmoid(X @ W1.T + b1)
    linear = getattr(hyper, "decoder", "sigmoid") == "linear"
    z3 = a2 @ W2.T + b2
    a3 = z3 if linear else _sigmoid(z3)
    rho, beta, lam = hyper.rho, hyper.beta, hyper.weight_decay
    rho_hat = a2.mean(axis=0)
    kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    cost = (0.5 * np.sum((a3 - X) ** 2) / m
            + 0.5 * lam * (np.sum(W1 ** 2) + np.sum(W2 ** 2)) + beta * kl)
    d3 = (a3 - X) if linear else (a3 - X) * a3 * (1 - a3)
    sparse = beta * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
    d2 = (d3 @ W2 + sparse) * a2 * (1 - a2)
    grad = {
        "W1": d2.T @ X / m + lam * W1,
        "b1": d2.mean(axis=0),
        "W2": d3.T @ a2 / m + lam * W2,
        "b2": d3.mean(axis=0),
    }
    return float(cost), grad
