"""Streaming PCA and ZCA whitening of data larger than memory.

Two passes over the rows (`streamae._passes.Pass`: tasks stream runs of
batches with read-ahead, so the tasks per pass do not grow with the chunk
count):

1. A reduction: every batch's row count, column means and centred scatter
   matrix (`streamae._kernels.centred_scatter`, float64) are merged exactly
   (`streamae._tree.merge_moments`) in the fixed-shape tree into the
   dataset's mean and covariance::

       Sigma = (1/m) sum_i (x_i - mean)^T (x_i - mean)       (n, n)

2. On the client, Sigma = U diag(S) U^T (``numpy.linalg.eigh``, eigenvalues
   in decreasing order), and the whitening matrix M is::

       ZCA:  M = U diag(1 / sqrt(S + epsilon)) U^T                  (n, n)
       PCA:  M = diag(1 / sqrt(S_k + epsilon)) U_k^T, k < K         (K, n)

   A written pass then stores y_i = M (x_i - mean), i.e. ``(X - mean) M^T``,
   in a new Zarr array chunked for the next pass (about 16 MiB per chunk,
   `streamae._passes.output_chunk_rows`), whatever the input's chunks.

Memory: a few batches and one output chunk per running task, plus O(n^2)
for the partial sums and M.
The transform (mean, M, epsilon, kind, K) is recorded in the output's
``streamae`` attribute ("whitening"), so that a model trained on it can apply
the same transform to new raw data (`streamae encode`) and draw its filters
in the raw space (W1 M, `dewhiten`).
"""

from __future__ import annotations

import os

import numpy as np
import zarr

from . import _kernels as K
from ._cluster import make_runner
from ._data import as_readable, describe_bad_values, input_name
from ._errors import DataError, ParameterError
from ._options import with_legacy_options
from ._output import write_output
from ._passes import Pass, open_input, output_chunk_rows
from ._store import is_url
from ._tree import merge_moments

KINDS = ("zca", "pca")
DEFAULT_EPSILON = 0.1  # the UFLDL exercises' value, in units of the data's variance
_BLOCK_ROWS = 4096  # rows centred and multiplied at a time (larger blocks: faster BLAS)


# ---------------------------------------------------------------- the passes' kernels

def _scatter(block, row0, block_rows):
    """(count, column means, centred scatter) of one batch (pass 1's kernel)."""
    return K.centred_scatter(as_readable(block), block_rows)


def covariance(data_pass):
    """Mean and covariance of the data, in one reduction pass.

    Parameters
    ----------
    data_pass : streamae._passes.Pass

    Returns
    -------
    mean : ndarray of shape (n,), float64
    sigma : ndarray of shape (n, n), float64
        (1/m) sum_i (x_i - mean)^T (x_i - mean) (population covariance).
    """
    m, mean, C = data_pass.reduce(_scatter, _BLOCK_ROWS, combine=merge_moments)
    return mean, C / m


def whiten_rows(block, row0, mean, M, dtype):
    """(X - mean) M^T for one batch, in float64, rounded to ``dtype`` (pass 2's kernel).

    Parameters
    ----------
    block : ndarray of shape (rows, n)
    mean : ndarray of shape (n,); M : ndarray of shape (K, n)

    Returns
    -------
    ndarray of shape (rows, K)
    """
    X = as_readable(block)
    out = np.empty((X.shape[0], M.shape[0]), dtype)
    K.whiten_rows(X, np.asarray(mean, np.float64), np.ascontiguousarray(M.T, np.float64), out,
                  _BLOCK_ROWS)
    return out


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
            if is_url(data) and storage_options else {}
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

def _refuse_non_finite(data_pass):
    """Name the first chunk and rows holding NaN or Inf (one more pass)."""
    row = data_pass.first_bad_row()
    if row >= 0:
        raise DataError(describe_bad_values(data_pass.dataset, row, "linear")
                        .replace("the linear decoder needs", "whitening needs"))


def _output_dtype(dtype, data_dtype):
    if dtype is not None and str(dtype) not in ("float32", "float64"):
        raise ParameterError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    data_dtype = np.dtype(data_dtype)
    return np.dtype(dtype or (data_dtype if data_dtype.kind == "f" else np.float64))


def whiten(src, out, kind="zca", n_components=None, epsilon=DEFAULT_EPSILON, *,
           dtype=None, overwrite=False, run_options=None, chunk_rows=None, scheduler=None,
           workers=None, split_every=None, storage_options=None):
    """Whiten a dataset larger than memory into a new Zarr array, in two passes.

    Parameters
    ----------
    src : path, URL, zarr.Array, dask.array.Array or ndarray of shape (m, n)
    out : str or os.PathLike
        Zarr array to create, shape (m, n) for ZCA or (m, K) for PCA;
        written atomically (`streamae._output`).
    kind : {"zca", "pca"}
    n_components : int, optional
        PCA only: components K kept, 1 <= K <= n (default n).
    epsilon : float, default 0.1
        Regulariser added to each eigenvalue (in the data's variance units),
        >= 0. With 0, a constant column or dependent columns are an error.
    dtype : {"float32", "float64"}, optional
        Output dtype; default the input's float dtype, float64 for integers.
    overwrite : bool
    run_options : RunOptions or dict, optional
        Where the tasks run (``scheduler``, ``workers``), ``storage_options``,
        ``split_every`` (pass 1's reduction tree), ``read_ahead``,
        ``page_cache``, and ``chunk_rows``: rows per output chunk; default
        about 16 MiB of output per chunk (whole input batches), whatever the
        input's chunks.
    chunk_rows, scheduler, workers, split_every, storage_options
        Deprecated: give them in ``run_options`` (a `FutureWarning`).

    Returns
    -------
    zarr.Array
        The whitened array, open for reading; its ``attrs["streamae"]
        ["whitening"]`` holds the transform (`whitening_transform`).
    """
    from ._store import check_writable

    options = with_legacy_options(run_options, "whiten", chunk_rows=chunk_rows,
                                  scheduler=scheduler, workers=workers,
                                  split_every=split_every, storage_options=storage_options)
    check_writable(out, overwrite, options.storage_options, what="output store")
    dataset = open_input(src, options)
    m, n = dataset.shape
    _check_options(kind, n_components, epsilon, n)
    dtype = _output_dtype(dtype, dataset.array.dtype)
    runner = make_runner(options.scheduler, options.workers)
    with runner.session():
        data_pass = Pass(dataset, runner, options.split_every, options.read_ahead)
        if options.chunk_rows is None:  # output chunks of our choice: large batches
            data_pass = data_pass.coarse()
        mean, sigma = covariance(data_pass)
        if not (np.all(np.isfinite(sigma)) and np.all(np.isfinite(mean))):
            _refuse_non_finite(data_pass)
        record = whitening_transform(mean, sigma, kind, n_components, epsilon,
                                     source=dataset.source)
        return _write_whitened(data_pass, record, out, input_name(src), dtype, overwrite,
                               options)


def _write_whitened(data_pass, record, out, name, dtype, overwrite, options):
    """Pass 2 of `whiten`: every row through ``record``'s transform into ``out``."""
    m = data_pass.dataset.shape[0]
    mean, M = _arrays(record)
    k = M.shape[0]
    rows = min(options.chunk_rows or output_chunk_rows(data_pass.batch_rows, m, k,
                                                       dtype.itemsize), m)
    attrs = _output_attrs(record, name, m, rows, dtype)
    return write_output(data_pass, out, whiten_rows, mean, M, dtype, width=k, dtype=dtype,
                        chunk_rows=rows, attrs=attrs, overwrite=overwrite,
                        storage_options=options.storage_options)


def _output_attrs(record, described, m, rows, dtype):
    kind, k, eps = record["kind"], record["n_components"], record["epsilon"]
    return {"streamae": {"kind": "whitened", "source": described, "rows": m,
                         "chunk_rows": rows, "dtype": np.dtype(dtype).name,
                         "whitening": record},
            "description": f"{kind.upper()}-whitened data ({k} columns, epsilon {eps:g}), "
                           "streamae whiten"}
