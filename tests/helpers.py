"""Helpers shared by the tests: comparing bits, the plain NumPy sigmoid, and
model factories. Plain functions (fixtures live in conftest.py)."""

import numpy as np

from streamae import SparseAutoencoder

FITTED = ("W1_", "b1_", "W2_", "b2_")


def same_bits(a, b, names=FITTED):
    """Whether two fitted models (or any objects with ``names``) hold the same bits."""
    return all(np.asarray(getattr(a, k)).tobytes() == np.asarray(getattr(b, k)).tobytes()
               for k in names)


def sigmoid(z):
    """1 / (1 + exp(-z)) in NumPy: the reference the kernels are compared with."""
    return 1.0 / (1.0 + np.exp(-z))


def model_at(params, dtype="float64", **hyper):
    """A `SparseAutoencoder` at fixed weights ``params`` (W1, b1, W2, b2)."""
    hyper = {"rho": 0.1, "beta": 3.0, "weight_decay": 1e-3, **hyper}
    return SparseAutoencoder.from_weights(**params, **hyper, dtype=dtype)


def autoencoder(max_iter=5, chunk_rows=None, scheduler=None, **params):
    """A small `SparseAutoencoder` for fits in the tests (run options given)."""
    params = {"n_hidden": 5, "rho": 0.1, "random_state": 0, **params}
    return SparseAutoencoder(max_iter=max_iter, **params,
                             run_options={"chunk_rows": chunk_rows, "scheduler": scheduler})
