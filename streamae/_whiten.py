"""Streaming PCA and ZCA whitening of data larger than memory.

Two passes over the rows, each one task per row chunk:

1. Every chunk's row count, column means and centred scatter matrix
   (`streamae._kernels.centred_scatter`, float64) are merged exactly, in a
   tree of fixed shape (groups of ``split_every`` consecutive chunks, as
   `streamae._engine.tree_sum`), into the dataset's mean and covariance::

       Sigma = (1/m) sum_i (x_i - mean)^T (x_i - mean)       (n, n)

2. On the client, Sigma = U diag(S) U^T (``numpy.linalg.eigh``, eigenvalues
   in decreasing order), and the whitening matrix M is::

       ZCA:  M = U diag(1 / sqrt(S + epsilon)) U^T                  (n, n)
       PCA:  M = diag(1 / sqrt(S_k + epsilon)) U_k^T, k < K         (K, n)

   Each chunk is then written as y_i = M (x_i - mean), i.e. ``(X - mean) M^T``,
   to a new Zarr array chunked like the input.

Memory: one chunk per running task plus O(n^2) for the partial sums and M.
The transform (mean, M, epsilon, kind, K) is recorded in the output's
``streamae`` attribute ("whitening"), so that a model trained on it can apply
the same transform to new raw data (`streamae encode`) and draw its filters
in the raw space (W1 M, `dewhiten`).
"""

from __future__ import annotations

import os

import dask
import numpy as np
import zarr

from . import _kernels as K
from ._cluster import make_runner
from ._data import describe_bad_values, open_dataset, task_rows
from ._errors import DataError, ParameterError
from ._output import write_array
from ._validation import check_int

KINDS = ("zca", "pca")
DEFAULT_EPSILON = 0.1  # the UFLDL exercises' value, in units of the data's variance
_BLOCK_ROWS = 1024  # rows centred and multiplied at a time in the scatter kernel


# ---------------------------------------------------------------- pass 1: mean and covariance

def merge_moments(a, b):
    """Exact merge of two (count, mean, scatter) triples (Chan et al.)::

        m = m_a + m_b,  delta = mean_b - mean_a
        mean = mean_a + delta m_b / m
        C = C_a + C_b + delta^T delta m_a m_b / m

    Parameters
    ----------
    a, b : tuple (int, ndarray of shape (n,), ndarray of shape (n, n))

    Returns
    -------
    tuple (int, ndarray of shape (n,), ndarray of shape (n, n))
    """
    ma, mean_a, Ca = a
    mb, mean_b, Cb = b
    if ma == 0:
        return b
    if mb == 0:
        return a
    m = ma + mb
    delta = mean_b - mean_a
    with np.errstate(invalid="ignore", over="ignore"):  # NaN data: reported by the caller
        mean = mean_a + delta * (mb / m)
        C = Ca + Cb + np.outer(delta, delta) * (ma * mb / m)
    return m, mean, C


def _merge_all(*parts):
    total = parts[0]
    for part in parts[1:]:
        total = merge_moments(total, part)
    return total


def _task_moments(block, block_rows):
    X = np.ascontiguousarray(block)
    if X.dtype.kind not in "fiu":
        X = X.astype(np.float64)
    return K.centred_scatter(X, block_rows)


def tree_merge(parts, split_every=8):
    """Delayed merge of delayed (count, mean, scatter) triples, grouped by index.

    The grouping depends only on the number of parts, so the result is the
    same bits on every scheduler.
    """
    parts = list(parts)
    while len(parts) > 1:
        parts = [dask.delayed(_merge_all, pure=True)(*parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    return parts[0]


def covariance(array, runner, split_every=8):
    """Mean and covariance of a row-chunked Dask array, in one pass.

    Parameters
    ----------
    array : dask.array.Array of shape (m, n), chunked along rows only
    runner : streamae._cluster.Runner

    Returns
    -------
    mean : ndarray of shape (n,), float64
    sigma : ndarray of shape (n, n), float64
        (1/m) sum_i (x_i - mean)^T (x_i - mean) (population covariance).
    """
    tasks = [dask.delayed(_task_moments, pure=True)(b, _BLOCK_ROWS)
             for b in array.to_delayed().ravel()]
    (m, mean, C), = runner.compute(tree_merge(tasks, split_every))
    return mean, C / m


# ---------------------------------------------------------------- the transform

def _check_options(kind, n_components, epsilon, n):
    if kind not in KINDS:
        raise ParameterError(f"whitening kind must be 'zca' or 'pca', got {kind!r}")
    if not (isinstance(epsilon, (int, float, np.floating, np.integer))
            and np.isfinite(epsilon) and epsilon >= 0):
        raise ParameterError(f"epsilon must be a finite number >= 0, got {epsilon!r}; the "
                             f"exercises use {DEFAULT_EPSILON} (--epsilon)")
    if kind == "zca" and n_components is not None:
        raise ParameterError("ZCA whitening keeps every component; give n_components "
                             "(--pca K) only with kind='pca'")
    if kind == "pca" and n_components is not None and (
            isinstance(n_components, bool) or int(n_components) != n_components
            or not 1 <= n_components <= n):
        raise ParameterError(f"the number of PCA components must be an integer from 1 to the "
                             f"data's {n} columns, got {n_components!r} (--pca K)")


def _check_invertible(mean, sigma, S, k, epsilon, source):
    """With epsilon 0, refuse a zero variance among the kept components."""
    if epsilon > 0:
        return
    var = np.diag(sigma)
    tiny = (64 * np.finfo(np.float64).eps * np.abs(mean)) ** 2
    constant = np.flatnonzero(var <= tiny)
    if constant.size:
        cols = ", ".join(str(c) for c in constant[:5]) + (", ..." if constant.size > 5 else "")
        raise DataError(f"{source}: column(s) {cols} are constant (variance 0), so whitening "
                        "with epsilon 0 divides by 0; use epsilon > 0 (--epsilon, e.g. 0.1) "
                        "or drop the constant columns")
    floor = S[0] * sigma.shape[0] * np.finfo(np.float64).eps
    if S[k - 1] <= floor:
        zero = int(np.sum(S[:k] <= floor))
        raise DataError(f"{source}: the covariance has {zero} zero eigenvalue(s) among the "
                        f"{k} kept (columns are linearly dependent), so whitening with "
                        "epsilon 0 divides by 0; use epsilon > 0 (--epsilon, e.g. 0.1)"
                        + (" or fewer components (--pca K)" if k > 1 else ""))


def whitening_transform(mean, sigma, kind="zca", n_components=None, epsilon=DEFAULT_EPSILON,
                        source="the data"):
    """The whitening record for a mean and covariance.

    Eigenvectors are signed so that each one's largest-magnitude entry is
    positive (PCA output is then reproducible; ZCA does not depend on signs).

    Parameters
    ----------
    mean : ndarray of shape (n,)
    sigma : ndarray of shape (n, n), symmetric positive semi-definite
    kind : {"zca", "pca"}
    n_components : int, optional
        PCA only: K, default n.
    epsilon : float
        Added to every eigenvalue before the inverse square root, >= 0.

    Returns
    -------
    dict
        kind, epsilon, n_components K, n_features n, mean (n,), matrix M
        (K, n) as nested lists, eigenvalues S (n,), formula.
    """
    n = sigma.shape[0]
    _check_options(kind, n_components, epsilon, n)
    if not (np.all(np.isfinite(sigma)) and np.all(np.isfinite(mean))):
        raise DataError(f"{source}: the covariance is not finite (the data holds NaN or Inf, "
                        "or values too large for float64); clean the data")
    S, U = np.linalg.eigh(sigma)
    S, U = np.maximum(S[::-1], 0.0), U[:, ::-1]  # decreasing; round-off negatives are 0
    U = U * np.where(U[np.abs(U).argmax(axis=0), np.arange(n)] < 0, -1.0, 1.0)
    k = n if n_components is None else int(n_components)
    _check_invertible(mean, sigma, S, k, epsilon, source)
    scale = 1.0 / np.sqrt(S[:k] + epsilon)
    M = scale[:, None] * U[:, :k].T
    if kind == "zca":
        M = U @ M
    return {"kind": kind, "epsilon": float(epsilon), "n_components": k, "n_features": n,
            "mean": mean.tolist(), "matrix": M.tolist(), "eigenvalues": S.tolist(),
            "formula": "y = M (x - mean); ZCA M = U diag(1/sqrt(S+epsilon)) U^T, "
                       "PCA M = diag(1/sqrt(S_k+epsilon)) U_k^T"}


def _arrays(record):
    return (np.asarray(record["mean"], np.float64), np.asarray(record["matrix"], np.float64))


def _whiten_block(block, mean, M, dtype):
    """(X - mean) M^T for one chunk, in float64, cast to ``dtype``."""
    X = np.asarray(block, np.float64)
    return ((X - mean) @ M.T).astype(dtype, copy=False)


def apply_whitening(array, record, dtype=None):
    """Lazy whitening of a row-chunked Dask array with a recorded transform.

    Parameters
    ----------
    array : dask.array.Array of shape (m, n)
    record : dict
        As returned by `whitening_transform` (or read by `whitening_of`).

    Returns
    -------
    dask.array.Array of shape (m, K), chunked like ``array`` along rows
    """
    mean, M = _arrays(record)
    if array.shape[1] != mean.size:
        raise DataError(f"the data has {array.shape[1]} columns, but the recorded whitening "
                        f"expects {mean.size}; give raw data of the width it was computed on")
    dtype = np.dtype(dtype or (array.dtype if array.dtype.kind == "f" else np.float64))
    array = array.rechunk({1: -1})
    return array.map_blocks(_whiten_block, mean, M, dtype, dtype=dtype,
                            chunks=(array.chunks[0], (M.shape[0],)))


def dewhiten(W, record):
    """Filters in the raw data's space: W M, shape (s, n) from W (s, K).

    A hidden unit responds to W y = W M (x - mean), so row j of W M is the
    pattern in the raw data that unit j detects (the exercise's W1 * ZCAWhite).
    """
    return np.asarray(W, np.float64) @ _arrays(record)[1]


def whitening_of(data, storage_options=None):
    """The whitening recorded in a store written by `whiten`, or None.

    Parameters
    ----------
    data : path, URL, zarr.Array or anything else (None for in-memory data)
    """
    if isinstance(data, (str, os.PathLike)):
        kwargs = {"storage_options": storage_options} \
            if "://" in os.fspath(data) and storage_options else {}
        try:
            data = zarr.open_array(os.fspath(data), mode="r", **kwargs)
        except Exception:  # not a Zarr array: open_dataset reports it
            return None
    if not isinstance(data, zarr.Array):
        return None
    meta = data.attrs.get("streamae")
    if isinstance(meta, dict) and meta.get("kind") == "whitened":
        return meta.get("whitening")
    return None


# ---------------------------------------------------------------- the whole job

def _first_non_finite(block, block_info=None):
    rows = np.flatnonzero(~np.isfinite(np.asarray(block, np.float64)).all(axis=1))
    row0 = block_info[0]["array-location"][0][0] if block_info else 0
    return np.array([[row0 + rows[0] if rows.size else -1]], np.int64)


def _refuse_non_finite(dataset, runner):
    """Name the first chunk and rows holding NaN or Inf (one more pass)."""
    found, = runner.compute(dataset.array.map_blocks(_first_non_finite, chunks=(1, 1),
                                                     dtype=np.int64))
    rows = np.asarray(found).ravel()
    rows = rows[rows >= 0]
    if rows.size:
        raise DataError(describe_bad_values(dataset, int(rows[0]), "linear")
                        .replace("the linear decoder needs", "whitening needs"))


def _layout(src, chunk_rows, storage_options):
    """(dataset, output chunk rows, shard rows or None, description) of the input."""
    from ._encode import _input_layout

    data, rows, shard, described = _input_layout(src, storage_options)
    if chunk_rows:
        rows, shard = int(chunk_rows), None
    probe = open_dataset(data, chunk_rows=shard or rows, storage_options=storage_options)
    m, n = probe.shape
    rows = min(rows, m)
    per_task = shard or task_rows(rows, n * np.dtype(probe.array.dtype).itemsize, m)
    dataset = open_dataset(data, chunk_rows=per_task, storage_options=storage_options)
    return dataset, rows, shard, described


def whiten(src, out, kind="zca", n_components=None, epsilon=DEFAULT_EPSILON, *,
           chunk_rows=None, dtype=None, overwrite=False, scheduler=None, workers=None,
           split_every=8, storage_options=None):
    """Whiten a dataset larger than memory into a new Zarr array, in two passes.

    Parameters
    ----------
    src : path, URL, zarr.Array, dask.array.Array or ndarray of shape (m, n)
    out : str or os.PathLike
        Zarr array to create, shape (m, n) for ZCA or (m, K) for PCA, chunked
        (and sharded) like ``src``; written atomically (`streamae._output`).
    kind : {"zca", "pca"}
    n_components : int, optional
        PCA only: components K kept, 1 <= K <= n (default n).
    epsilon : float, default 0.1
        Regulariser added to each eigenvalue (in the data's variance units),
        >= 0. With 0, a constant column or dependent columns are an error.
    chunk_rows : int, optional
        Rows per output chunk; default the input's.
    dtype : {"float32", "float64"}, optional
        Output dtype; default the input's float dtype, float64 for integers.
    overwrite : bool
    scheduler, workers
        Where the tasks run, as for `SparseAutoencoder.fit`.
    split_every : int
        Fan-in of pass 1's reduction tree.

    Returns
    -------
    zarr.Array
        The whitened array, open for reading; its ``attrs["streamae"]
        ["whitening"]`` holds the transform (`whitening_transform`).
    """
    from ._store import check_writable

    split_every = check_int("split_every", split_every, 2)
    chunk_rows = check_int("chunk_rows", chunk_rows, 1, allow_none=True)
    if dtype is not None and str(dtype) not in ("float32", "float64"):
        raise ParameterError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    check_writable(out, overwrite, storage_options, what="output store")
    dataset, rows, shard, described = _layout(src, chunk_rows, storage_options)
    m, n = dataset.shape
    _check_options(kind, n_components, epsilon, n)
    runner = make_runner(scheduler, workers)
    with runner.session():
        mean, sigma = covariance(dataset.array, runner, split_every)
        if not (np.all(np.isfinite(sigma)) and np.all(np.isfinite(mean))):
            _refuse_non_finite(dataset, runner)
        record = whitening_transform(mean, sigma, kind, n_components, epsilon,
                                     source=dataset.source)
        Y = apply_whitening(dataset.array, record, dtype)
        shards = (dataset.array.chunks[0][0], Y.shape[1]) if shard else None
        write_array(Y, out, rows=rows, shards=shards, runner=runner, overwrite=overwrite,
                    attrs=_output_attrs(record, described, m, rows, Y.dtype),
                    storage_options=storage_options)
    kwargs = {"storage_options": storage_options} if "://" in os.fspath(out) and \
        storage_options else {}
    return zarr.open_array(os.fspath(out), mode="r", **kwargs)


def _output_attrs(record, described, m, rows, dtype):
    kind, k, eps = record["kind"], record["n_components"], record["epsilon"]
    return {"streamae": {"kind": "whitened", "source": described, "rows": m,
                         "chunk_rows": rows, "dtype": np.dtype(dtype).name,
                         "whitening": record},
            "description": f"{kind.upper()}-whitened data ({k} columns, epsilon {eps:g}), "
                           "streamae whiten"}
