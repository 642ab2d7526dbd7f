"""Shared fixtures of the core trainer tests (kernels, objective, engine,
estimator, CLI, memory).

Randomness comes only from ``np.random.default_rng(seed)`` fixtures; nothing
sets a global seed.
"""

import os
import uuid

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


# ---------------------------------------------------------------- the store-kind matrix

STORE_KINDS = ("local", "compressed", "sharded", "memory", "s3")


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (bucket ``data``) and its credentials in this
    process's environment, for the tests of one module."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from cluster_fixtures import MotoServer

    with MotoServer(tmp_path_factory.mktemp("moto") / "moto") as server, \
            pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            mp.delenv(key)
        for key, value in server.env().items():
            mp.setenv(key, value)
        server.create_bucket("data")
        server.require_auth()
        yield server


@pytest.fixture(params=STORE_KINDS)
def store_kind(request, tmp_path):
    """``(kind, put)``: ``put(X, chunk_rows) -> data`` holding ``X`` (m, n) as one kind
    of input: a local Zarr v3 store uncompressed, compressed (Zarr's default zstd)
    or sharded (shards of 4 chunks), the NumPy array itself, or a store at an
    s3:// URL on the local moto server."""
    kind = request.param
    if kind == "s3":
        request.getfixturevalue("s3_env")

    def put(X, chunk_rows):
        X = np.asarray(X)
        if kind == "memory":
            return X
        n = X.shape[1]
        kw = {"compressors": None} if kind == "local" else {}
        if kind == "sharded":
            kw["shards"] = (4 * chunk_rows, n)
        name = f"{kind}-{uuid.uuid4().hex}.zarr"
        where = f"s3://data/{name}" if kind == "s3" else str(tmp_path / name)
        z = zarr.create_array(where, shape=X.shape, chunks=(chunk_rows, n), dtype=X.dtype, **kw)
        z[...] = X
        return where

    return kind, put
