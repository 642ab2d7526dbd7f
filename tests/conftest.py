"""Shared fixtures of the core trainer tests (kernels, objective, engine,
estimator, CLI, memory).

Randomness comes only from ``np.random.default_rng(seed)`` fixtures; nothing
sets a global seed.
"""

import numpy as np
import pytest
import zarr

from streamae._objective import init_params, make_hyper

# Hyperparameters of the small test problems: a target activation the random
# initial weights are near (rho 0.1), so that every term of the objective and
# of the gradient is of a similar size and a mistake in any of them shows.
HYPER = {"rho": 0.1, "beta": 3.0, "weight_decay": 1e-3}


def _problem(rng, m, n, s, low=0.0, high=1.0, bias_scale=0.1):
    """Data uniform in [low, high] and the exercise's initial weights, with
    small random biases (zero biases would hide a bias-gradient mistake)."""
    X = rng.uniform(low, high, size=(m, n))
    params = init_params(n, s, rng)
    params["b1"] = rng.normal(0.0, bias_scale, s)
    params["b2"] = rng.normal(0.0, bias_scale, n)
    return X, params


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture
def hyper_kw():
    """The test hyperparameters as keyword arguments (rho, beta, weight_decay)."""
    return dict(HYPER)


@pytest.fixture
def hyper():
    return make_hyper(**HYPER)


@pytest.fixture
def make_problem(rng):
    """``make_problem(m, n, s, **kw) -> (X float64 (m, n), params dict float64)``."""

    def make(m=50, n=8, s=5, **kw):
        return _problem(rng, m, n, s, **kw)

    return make


@pytest.fixture
def problem(make_problem):
    """A small problem: 50 rows, 8 visible, 5 hidden."""
    return make_problem(50, 8, 5)


@pytest.fixture
def write_zarr(tmp_path):
    """``write_zarr(X, chunk_rows, name="x.zarr", **create_kw) -> str`` path of a
    Zarr v3 array in tmp_path chunked by rows (zarr.create_array)."""

    def write(X, chunk_rows, name="x.zarr", **create_kw):
        X = np.asarray(X)
        path = str(tmp_path / name)
        z = zarr.create_array(path, shape=X.shape, chunks=(chunk_rows, X.shape[1]),
                              dtype=X.dtype, **create_kw)
        z[...] = X
        return path

    return write


@pytest.fixture(autouse=True, scope="session")
def one_store_chunk_per_task():
    """Tasks of one Zarr chunk each, as the tests' small stores are chunked to
    give many tasks (by default streamae groups chunks smaller than 16 MiB;
    tests/test_chunkread.py tests the grouping). Session-wide, so that
    module-scoped fixtures see it too."""
    from streamae import _data

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_data, "TASK_BYTES", 0)
        yield
