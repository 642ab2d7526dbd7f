"""The sparse-autoencoder objective: parameters, the sparsity term, and the
assembly of the cost and gradient from partial sums over chunks.

`Objective` is the objective as one object: its per-batch kernels (the
partial sums of each pass, as named tuples), the sparsity term and the
assembly; the decoder is a variant of it (`SigmoidObjective`,
`LinearObjective`), never a flag in the parameters.

The objective (rows of X are samples, m rows in the whole dataset)::

    J = 1/(2m) sum_i ||a3_i - x_i||^2
        + lambda/2 (||W1||_F^2 + ||W2||_F^2)
        + beta sum_j KL(rho || rho_hat_j),      rho_hat = mean_i a2_i

`reference_cost_and_grad` is a plain NumPy implementation on an in-memory
array, kept deliberately independent of the kernels so that tests can
compare the two.
"""

import functools
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from . import _kernels as K
from ._constants import DECODERS, PARAM_NAMES
from ._errors import NumericalError, ParameterError


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


def make_hyper(rho, beta, weight_decay, decoder="sigmoid"):
    """Validated `Hyper`; raises ParameterError naming the bad value."""
    if decoder not in DECODERS:
        raise ParameterError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}; "
                             "use 'linear' for real-valued (e.g. whitened) data")
    if not 0.0 < rho < 1.0:
        raise ParameterError(f"rho must be in (0, 1), got {rho}; a typical value is 0.01 to 0.1")
    if not 0.0 <= beta < np.inf:  # also refuses NaN
        raise ParameterError(
            f"beta must be finite and >= 0, got {beta}; use 0 to turn sparsity off")
    if not 0.0 <= weight_decay < np.inf:
        raise ParameterError(
            f"weight_decay must be finite and >= 0, got {weight_decay}; use 0 to turn it off")
    return Hyper(float(rho), float(beta), float(weight_decay), str(decoder))


# ---------------------------------------------------------------- partial sums of the passes
# Named tuples: `streamae._tree.add_parts` adds them field by field (and
# keeps their type), so that they travel the reduction tree as one object.

def _from_packed(cls, vector, bad, shapes):
    """An instance of the named tuple ``cls`` from a packed float64 vector (the
    fields but ``bad`` in order, each of its shape in ``shapes``; () for a
    scalar) and the ``bad`` record, if ``cls`` has one."""
    values, at = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        values.append(float(vector[at]) if shape == () else vector[at:at + size].reshape(shape))
        at += size
    if "bad" in cls._fields:
        values.append(bad)
    return cls(*values)


class HiddenSums(NamedTuple):
    """Pass 1 of two-pass and cached."""

    sum_a2: np.ndarray
    """ndarray of shape (s,), float64: sum_i a2_i."""

    @classmethod
    def from_packed(cls, vector, bad, s, n):
        """From a row of `streamae._kernels.hidden_sum_batches`."""
        return _from_packed(cls, vector, bad, [(s,)])


class GradientSums(NamedTuple):
    """Pass 2 of two-pass and cached, with the sparsity term in d2."""

    sq: float
    """sum_i ||a3_i - x_i||^2."""
    gW1: np.ndarray
    """ndarray of shape (s, n), float64: sum_i d2_i^T x_i."""
    gb1: np.ndarray
    """ndarray of shape (s,), float64: sum_i d2_i."""
    gW2: np.ndarray
    """ndarray of shape (n, s), float64: sum_i d3_i^T a2_i."""
    gb2: np.ndarray
    """ndarray of shape (n,), float64: sum_i d3_i."""
    bad: np.ndarray
    """ndarray of shape (2,), int64: [values the decoder refuses, first such row or -1]."""

    @classmethod
    def from_packed(cls, vector, bad, s, n):
        """From a row of `streamae._kernels.backprop_batches` and its bad record."""
        return _from_packed(cls, vector, bad, [(), (s, n), (s,), (n, s), (n,)])


class OnePassSums(NamedTuple):
    """The one-pass sums: d2's sparsity term (c) is added after the reduction
    (`with_sparsity`), from rho_hat of the whole dataset."""

    sum_a2: np.ndarray
    sq: float
    gW1_rest: np.ndarray
    """ndarray of shape (s, n): sum_i [(d3 W2) * f'(z2)]_i^T x_i."""
    gb1_rest: np.ndarray
    """ndarray of shape (s,): sum_i (d3 W2) * f'(z2)."""
    gW2: np.ndarray
    gb2: np.ndarray
    fp_X: np.ndarray
    """ndarray of shape (s, n): sum_i f'(z2_i)^T x_i."""
    sum_fp: np.ndarray
    """ndarray of shape (s,): sum_i f'(z2_i)."""
    bad: np.ndarray

    @classmethod
    def from_packed(cls, vector, bad, s, n):
        """From a row of `streamae._kernels.one_pass_batches` and its bad record."""
        return _from_packed(cls, vector, bad,
                            [(s,), (), (s, n), (s,), (n, s), (n,), (s, n), (s,)])

    def with_sparsity(self, c):
        """The `GradientSums` for sparsity coefficient ``c`` (ndarray of shape (s,))."""
        return GradientSums(self.sq, self.gW1_rest + c[:, None] * self.fp_X,
                            self.gb1_rest + c * self.sum_fp, self.gW2, self.gb2, self.bad)


@dataclass(frozen=True)
class Objective:
    """The objective of ``hyper``: the kernels of each pass over a batch, the
    sparsity term and the assembly of the cost and gradient.

    Use `Objective.of`: the decoder is the subclass (`SigmoidObjective`,
    `LinearObjective`), whose ``linear`` the Numba kernels take as a
    compile-time constant. Picklable: its kernels travel to the workers as
    bound methods.

    Every kernel takes ``(batch, first_row, p, ...)``: the batch (rows, n) of
    any dtype, its global first row (for error reports) and ``p``, the
    parameters W1 (s, n), b1 (s,), W2 (n, s), b2 (n,) in the arithmetic dtype.
    """

    hyper: Hyper
    linear: ClassVar[bool] = False

    @staticmethod
    def of(hyper):
        """The objective of ``hyper``, by its decoder."""
        return (LinearObjective if hyper.linear else SigmoidObjective)(hyper)

    # ------------------------------------------------------------ the passes' kernels
    def hidden_sum(self, block, row0, p, block_rows):
        """Pass 1 of two-pass: `HiddenSums`."""
        X = _as_input(block, p["W1"].dtype)
        return HiddenSums(K.hidden_sum(X, p["W1"], p["b1"], block_rows))

    def hidden_keep(self, block, row0, p, block_rows):
        """Pass 1 of cached: (a2 of shape (rows, s), `HiddenSums`)."""
        X = _as_input(block, p["W1"].dtype)
        a2, sum_a2 = K.hidden_activations(X, p["W1"], p["b1"], block_rows)
        return a2, HiddenSums(sum_a2)

    def backprop(self, block, row0, p, c, block_rows):
        """Pass 2 of two-pass: `GradientSums` with sparsity coefficient ``c`` (s,)."""
        X = _as_input(block, p["W1"].dtype)
        return GradientSums(*K.backprop_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], c, row0,
                                             block_rows, self.linear))

    def backprop_cached(self, block, row0, p, c, block_rows, a2):
        """Pass 2 of cached, from the batch's kept ``a2``: `GradientSums`."""
        X = _as_input(block, p["W1"].dtype)
        return GradientSums(*K.backprop_sums_cached(X, a2, p["W2"], p["b2"], c, row0,
                                                    block_rows, self.linear))

    def one_pass(self, block, row0, p, block_rows):
        """The one-pass sums: `OnePassSums`."""
        X = _as_input(block, p["W1"].dtype)
        return OnePassSums(*K.one_pass_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], row0,
                                            block_rows, self.linear))

    # ------------------------------------------------------------ over runs of batches
    # The same partial sums, one call per block of consecutive batches (rows
    # ``offsets[k]`` to ``offsets[k + 1]`` of ``block`` for batch k): (parts,
    # bads), each batch's sums packed in a row of ``parts`` (see `unpacker`).

    def hidden_sum_batches(self, block, offsets, row0, p, block_rows):
        X = _as_input(block, p["W1"].dtype)
        parts = K.hidden_sum_batches(X, offsets, p["W1"], p["b1"], block_rows)
        return parts, None

    def backprop_batches(self, block, offsets, row0, p, c, block_rows):
        X = _as_input(block, p["W1"].dtype)
        return K.backprop_batches(X, offsets, p["W1"], p["b1"], p["W2"], p["b2"], c, row0,
                                  block_rows, self.linear)

    def one_pass_batches(self, block, offsets, row0, p, block_rows):
        X = _as_input(block, p["W1"].dtype)
        return K.one_pass_batches(X, offsets, p["W1"], p["b1"], p["W2"], p["b2"], row0,
                                  block_rows, self.linear)

    @staticmethod
    def unpacker(kernel, s, n):
        """``unpack(vector, bad)``: the named partial sums of a batched kernel's row."""
        kind = {"hidden_sum_batches": HiddenSums, "backprop_batches": GradientSums,
                "one_pass_batches": OnePassSums}[kernel.__name__]
        return functools.partial(kind.from_packed, s=s, n=n)

    # ------------------------------------------------------------ after the reduction
    def sparsity(self, sum_a2, m):
        """(rho_hat, KL, c): `sparsity_terms`."""
        return sparsity_terms(sum_a2, m, self.hyper)

    def assemble(self, params, m, sums, kl):
        """(cost, grad, terms) from the dataset's `GradientSums`: `assemble`."""
        return assemble(params, self.hyper, m, float(sums.sq), kl, sums.gW1, sums.gb1,
                        sums.gW2, sums.gb2)


@dataclass(frozen=True)
class SigmoidObjective(Objective):
    """The sigmoid decoder: a3 = f(z3), data in [0, 1]."""

    linear: ClassVar[bool] = False


@dataclass(frozen=True)
class LinearObjective(Objective):
    """The linear decoder: a3 = z3, any finite data."""

    linear: ClassVar[bool] = True


def _as_input(block, dtype):
    return np.ascontiguousarray(block, dtype=dtype)
