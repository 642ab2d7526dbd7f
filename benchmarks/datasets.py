"""The two datasets of the time-to-quality benchmark, made with streamae's own tools.

patches
    Whitened 8x8 grey patches of the built-in photographs, normalised into
    [0.1, 0.9] (``write_patches(builtin=True)``, the pipeline of
    ``streamae demo`` at more rows): 64 -> 25 units, sigmoid decoder, the UFLDL
    exercise's rho 0.01, beta 3, lambda 1e-4.
colour
    8x8x3 colour patches of the built-in colour photographs
    (``write_patches(channels="rgb", whiten_images=False)``), ZCA-whitened by
    ``streamae.whiten`` with epsilon 0.1: 192 -> 100 units, linear decoder,
    the colour exercise's rho 0.035, beta 5, lambda 3e-3. More weights per
    row (38,692 against 3,289). The exercise's 400 units would make one
    evaluation of 200,000 rows take several seconds on a 2-core machine, too
    long for a grid of peers at a shared budget; 100 units keep its shape of
    problem (a model with far more weights than the patches', on fewer rows).
"""

import dataclasses
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: its store, shape and the objective's settings."""

    name: str
    store: str
    rows: int
    n_visible: int
    n_hidden: int
    rho: float
    beta: float
    weight_decay: float
    decoder: str

    @property
    def hyper(self):
        """Keyword arguments of `streamae.SparseAutoencoder` for the objective."""
        return {"n_hidden": self.n_hidden, "rho": self.rho, "beta": self.beta,
                "weight_decay": self.weight_decay, "decoder": self.decoder}

    def describe(self):
        return {**dataclasses.asdict(self), "weights": n_weights(self.n_visible, self.n_hidden)}


DEFAULT_ROWS = {"patches": 1_000_000, "colour": 200_000}


def n_weights(n, s):
    """Parameters of an n -> s -> n autoencoder: W1, b1, W2, b2."""
    return 2 * n * s + n + s


def make(name, rows, workdir):
    """The dataset ``name`` with ``rows`` rows, its store written once into ``workdir``."""
    os.makedirs(workdir, exist_ok=True)
    if name == "patches":
        store = os.path.join(workdir, f"patches-{rows}.zarr")
        if not os.path.exists(store):
            from streamae import write_patches

            write_patches(store, builtin=True, count=rows, seed=0)
        return Dataset("patches", store, rows, 64, 25, 0.01, 3.0, 1e-4, "sigmoid")
    if name == "colour":
        store = os.path.join(workdir, f"colour-zca-{rows}.zarr")
        if not os.path.exists(store):
            from streamae import whiten, write_patches

            raw = os.path.join(workdir, f"colour-raw-{rows}.zarr")
            write_patches(raw, builtin=True, channels="rgb", whiten_images=False,
                          count=rows, seed=0, overwrite=True)
            whiten(raw, store, kind="zca", epsilon=0.1)
        return Dataset("colour", store, rows, 192, 100, 0.035, 5.0, 3e-3, "linear")
    raise SystemExit(f"unknown dataset {name!r}: choose 'patches' or 'colour'")


def load(dataset):
    """The store's values in memory, float32, shape (rows, n_visible)."""
    import zarr

    X = zarr.open_array(dataset.store, mode="r")[...]
    return np.ascontiguousarray(X, dtype=np.float32)


def initial_theta(dataset):
    """The flat float64 weights ``SparseAutoencoder(random_state=0)`` starts from."""
    from streamae._objective import flatten, init_params

    return flatten(init_params(dataset.n_visible, dataset.n_hidden, np.random.default_rng(0)))


def unflat(theta, n, s, dtype=np.float64):
    """W1 (s, n), b1 (s,), W2 (n, s), b2 (n,) of a flat vector (views when the dtype agrees)."""
    theta = np.asarray(theta, dtype)
    sizes = np.cumsum([s * n, s, n * s])
    W1, b1, W2, b2 = np.split(theta, sizes)
    return W1.reshape(s, n), b1, W2.reshape(n, s), b2
