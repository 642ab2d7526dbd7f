"""Streaming PCA/ZCA whitening: the scatter kernel and the exact merge against
NumPy, the whitened store against an in-memory NumPy ZCA/PCA, independence
of chunking and scheduler, bad inputs, and the round trip through training,
encode and show.

Tolerances (float64): 1e-10 absolute against the in-memory NumPy whitening
(measured: about 1e-14 for data of unit scale, 1e-12 with column means of
1e3); the whitened covariance is the identity to 1e-6 with epsilon 0
(measured: about 1e-14).
"""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

from streamae import DataError, ParameterError, SparseAutoencoder, encode, show, whiten
from streamae import _kernels as K
from streamae._whiten import dewhiten, merge_moments
from streamae.cli import main


def correlated(rng, m=500, n=6, offset=0.0):
    """Rows with correlated columns of different scales, shifted by ``offset``."""
    return rng.normal(size=(m, n)) @ rng.normal(size=(n, n)) + offset + rng.normal(size=n)


def numpy_whitening(X, kind="zca", k=None, epsilon=0.0):
    """The exercise's whitening in memory: (X - mean) M^T, eigenvectors signed
    so that each one's largest-magnitude entry is positive."""
    Xc = X - X.mean(axis=0)
    S, U = np.linalg.eigh(Xc.T @ Xc / X.shape[0])
    S, U = S[::-1], U[:, ::-1]
    U = U * np.sign(U[np.abs(U).argmax(axis=0), np.arange(U.shape[1])])
    k = k or X.shape[1]
    M = np.diag(1 / np.sqrt(S[:k] + epsilon)) @ U[:, :k].T
    if kind == "zca":
        M = U @ M
    return Xc @ M.T, M


# ----------------------------------------------------------------- pass 1 pieces

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize("block_rows", [1, 7, 1000])
def test_centred_scatter_matches_numpy(rng, dtype, block_rows):
    X = (correlated(rng, 50, 5) * 10).astype(dtype)
    count, mean, C = K.centred_scatter(X, block_rows)
    x = X.astype(np.float64)
    assert count == 50
    assert_allclose(mean, x.mean(axis=0), rtol=1e-13)
    assert_allclose(C, (x - x.mean(0)).T @ (x - x.mean(0)), rtol=1e-12, atol=1e-9)


def test_merge_moments_is_exact(rng):
    X = correlated(rng, 90, 4, offset=100.0)
    parts = [K.centred_scatter(X[a:b], 16) for a, b in ((0, 13), (13, 60), (60, 90))]
    m, mean, C = merge_moments(merge_moments(parts[0], parts[1]), parts[2])
    Xc = X - X.mean(axis=0)
    assert m == 90
    assert_allclose(mean, X.mean(axis=0), rtol=1e-14)
    assert_allclose(C, Xc.T @ Xc, rtol=1e-11, atol=1e-10 * np.abs(C).max())


# ----------------------------------------------------------------- the whitened store

@pytest.mark.parametrize("chunk_rows", [500, 64, 7])
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_zca_matches_numpy(rng, write_zarr, tmp_path, chunk_rows, offset):
    X = correlated(rng, offset=offset)
    z = whiten(write_zarr(X, chunk_rows), tmp_path / "w.zarr", epsilon=0.1)
    expected, M = numpy_whitening(X, "zca", epsilon=0.1)
    assert_allclose(z[...], expected, rtol=0, atol=1e-10)
    record = z.attrs["streamae"]["whitening"]
    assert record["kind"] == "zca" and record["epsilon"] == 0.1
    assert_allclose(record["matrix"], M, atol=1e-12)
    assert_allclose(record["mean"], X.mean(axis=0), rtol=1e-14)
    # Chunked for the next pass, not like the input: whole input chunks, about
    # 16 MiB and at most a quarter of the rows (at least 1024 rows: here all 500).
    assert z.chunks == (500 // chunk_rows * chunk_rows, 6) and z.dtype == np.float64


@pytest.mark.parametrize("kind,k", [("zca", None), ("pca", None), ("pca", 3)])
def test_covariance_is_the_identity_with_epsilon_0(rng, write_zarr, tmp_path, kind, k):
    X = correlated(rng, 400, 6)
    z = whiten(write_zarr(X, 33), tmp_path / "w.zarr", kind=kind, n_components=k,
               epsilon=0.0)
    Y = z[...]
    assert Y.shape == (400, k or 6)
    assert_allclose(Y.mean(axis=0), 0, atol=1e-12)
    assert_allclose(Y.T @ Y / 400, np.eye(k or 6), atol=1e-6)


def test_pca_matches_numpy(rng, write_zarr, tmp_path):
    X = correlated(rng, 300, 6)
    z = whiten(write_zarr(X, 50), tmp_path / "w.zarr", kind="pca", n_components=4,
               epsilon=0.01)
    assert_allclose(z[...], numpy_whitening(X, "pca", 4, 0.01)[0], atol=1e-10)


def test_independent_of_chunking_and_scheduler(rng, write_zarr, tmp_path):
    X = correlated(rng, 500, 6, offset=3.0)
    one = whiten(write_zarr(X, 500, "a.zarr"), tmp_path / "a-w.zarr")[...]
    chunked = write_zarr(X, 13, "b.zarr")
    many = whiten(chunked, tmp_path / "b-w.zarr")[...]
    assert_allclose(many, one, rtol=0, atol=1e-12)
    runs = [whiten(chunked, tmp_path / f"{s}.zarr", run_options={"scheduler": s})[...]
            for s in ("synchronous", "threads", "processes")]
    for run in runs:
        assert_array_equal(run, many, strict=True)


def test_float32_input_gives_float32_output(rng, write_zarr, tmp_path):
    X = correlated(rng, 200, 4).astype(np.float32)
    z = whiten(write_zarr(X, 50), tmp_path / "w.zarr")
    assert z.dtype == np.float32
    assert_allclose(z[...], numpy_whitening(X.astype(np.float64), epsilon=0.1)[0],
                    atol=1e-5)


# ----------------------------------------------------------------- bad inputs

def _one_line(info, *words):
    msg = str(info.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg, msg


def test_constant_column_with_epsilon_0(rng, write_zarr, tmp_path):
    X = correlated(rng, 100, 5)
    X[:, 2] = 0.1
    path = write_zarr(X, 30)
    with pytest.raises(DataError) as info:
        whiten(path, tmp_path / "w.zarr", epsilon=0.0)
    _one_line(info, path, "column(s) 2 are constant", "epsilon > 0")
    assert not (tmp_path / "w.zarr").exists()
    whiten(path, tmp_path / "w.zarr", epsilon=0.1)  # regularised: fine


def test_dependent_columns_with_epsilon_0(rng, write_zarr, tmp_path):
    X = correlated(rng, 100, 5)
    X[:, 4] = X[:, 0] + X[:, 1]
    path = write_zarr(X, 30)
    with pytest.raises(DataError) as info:
        whiten(path, tmp_path / "w.zarr", epsilon=0.0)
    _one_line(info, "1 zero eigenvalue(s)", "epsilon > 0", "--pca K")
    whiten(path, tmp_path / "w.zarr", kind="pca", n_components=4, epsilon=0.0)


@pytest.mark.parametrize("kwargs,words", [
    ({"epsilon": -0.1}, ["epsilon must be a finite number >= 0", "-0.1"]),
    ({"epsilon": float("nan")}, ["epsilon must be a finite number >= 0"]),
    ({"kind": "pca", "n_components": 7}, ["from 1 to the data's 6 columns", "7"]),
    ({"kind": "pca", "n_components": 0}, ["from 1 to the data's 6 columns", "0"]),
    ({"kind": "zca", "n_components": 3}, ["only with kind='pca'"]),
    ({"kind": "pcz"}, ["'zca' or 'pca'"]),
])
def test_bad_options(rng, write_zarr, tmp_path, kwargs, words):
    path = write_zarr(correlated(rng, 50, 6), 10)
    with pytest.raises(ParameterError) as info:
        whiten(path, tmp_path / "w.zarr", **kwargs)
    _one_line(info, *words)


def test_nan_is_named_by_chunk_and_row(rng, write_zarr, tmp_path):
    X = correlated(rng, 100, 4)
    X[57, 1] = np.nan
    with pytest.raises(DataError) as info:
        whiten(write_zarr(X, 20), tmp_path / "w.zarr")
    _one_line(info, "chunk 2 (rows 40-59)", "1 NaN value(s) in rows 57", "whitening needs "
              "finite values")


def test_cli(rng, write_zarr, tmp_path, capsys):
    path = write_zarr(correlated(rng, 120, 6), 40)
    assert main(["whiten", path, str(tmp_path / "p.zarr"), "--pca", "2", "--quiet"]) == 0
    assert "PCA-whitened 120 rows of 6 columns into 2" in capsys.readouterr().out
    assert zarr.open_array(str(tmp_path / "p.zarr")).shape == (120, 2)
    assert main(["whiten", path, str(tmp_path / "z.zarr"), "--zca", "--epsilon", "0",
                 "--quiet"]) == 0
    assert main(["whiten", path, str(tmp_path / "z.zarr"), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["whiten", path, str(tmp_path / "q.zarr"), "--pca", "9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pca K" in err


# ----------------------------------------------------------------- train, encode, show

@pytest.fixture
def trained(rng, write_zarr, tmp_path):
    """A linear-decoder model trained on a ZCA-whitened store of 3*4*4 columns."""
    X = correlated(rng, 300, 48) * 0.1 + 0.5
    raw = write_zarr(X, 64)
    white = whiten(raw, tmp_path / "white.zarr", epsilon=0.1)
    model = SparseAutoencoder(n_hidden=5, rho=0.1, dtype="float64", decoder="linear",
                              max_iter=5)
    model.fit(str(tmp_path / "white.zarr"))
    model.save(tmp_path / "m.zarr")
    return raw, white, model, str(tmp_path / "m.zarr")


def test_model_records_the_whitening(trained):
    _, white, model, path = trained
    loaded = SparseAutoencoder.load(path)
    assert loaded.whitening_ == white.attrs["streamae"]["whitening"] == model.whitening_


def test_encode_whitens_raw_data_once(trained, tmp_path):
    raw, white, model, path = trained
    expected = model.transform(white[...])
    from_raw = encode(path, raw, tmp_path / "h1.zarr")
    assert_allclose(from_raw[...], expected, rtol=0, atol=1e-12)
    assert from_raw.attrs["streamae"]["whitened_by_encode"] is True
    from_white = encode(path, str(tmp_path / "white.zarr"), tmp_path / "h2.zarr")
    assert_allclose(from_white[...], expected, rtol=0, atol=1e-15)
    assert from_white.attrs["streamae"]["whitened_by_encode"] is False
    assert main(["encode", path, raw, str(tmp_path / "h3.zarr"), "--quiet"]) == 0
    assert_array_equal(zarr.open_array(str(tmp_path / "h3.zarr"))[...], from_raw[...])


def test_show_draws_dewhitened_filters(trained, tmp_path):
    _, white, model, path = trained
    M = np.asarray(white.attrs["streamae"]["whitening"]["matrix"])
    assert_allclose(dewhiten(model.W1_, model.whitening_), model.W1_ @ M, rtol=1e-15)
    written = show(path, tmp_path / "pictures")
    from PIL import Image

    with Image.open(written["filters.png"]) as picture:
        assert picture.mode == "RGB"  # 48 = 3 x 4 x 4: colour


# ----------------------------------------------------------------- memory

def test_memory_does_not_grow_with_the_rows(tmp_path):
    """Peak traced memory (tracemalloc sees Numba's arrays, tests/test_memory.py)
    of whitening 10 and 40 chunks of 1 MiB into chunks of the same rows, one
    task at a time (by default the output chunks grow with the rows up to 16
    MiB: a bound, not growth in proportion to the rows). Measured:
    about 4.4 and 5.5 chunks (read buffer, decoded chunk, its float64 centred
    copy and product, the output chunk); holding the data would add 30. The
    bound is loose: only growth in proportion to the rows fails it."""
    import gc
    import tracemalloc

    rows, cols = 2048, 64
    chunk = rows * cols * 8
    rng = np.random.default_rng(5)
    peaks = {}
    for chunks in (10, 40):
        path = str(tmp_path / f"x{chunks}.zarr")
        z = zarr.create_array(path, shape=(rows * chunks, cols), chunks=(rows, cols),
                              dtype="float64", compressors=None)
        for i in range(chunks):
            z[i * rows:(i + 1) * rows] = rng.normal(size=(rows, cols))
        options = {"scheduler": "synchronous", "chunk_rows": rows}
        whiten(path, tmp_path / f"warm{chunks}.zarr", run_options=options)
        runs = []
        for k in range(2):  # smallest of two: read buffers may wait for the collector
            gc.collect()
            tracemalloc.start()
            whiten(path, tmp_path / f"w{chunks}-{k}.zarr", run_options=options)
            runs.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        peaks[chunks] = min(runs)
    assert peaks[40] < peaks[10] + 3 * chunk, {c: p / chunk for c, p in peaks.items()}
