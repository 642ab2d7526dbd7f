"""Hidden activations of every row: the lazy graph, and ``streamae encode``
writing them to Zarr.

`hidden_graph` is the lazy graph behind `SparseAutoencoder.transform_dask`:
one Numba kernel task per row chunk. `hidden_rows`, behind
`SparseAutoencoder.transform`, is a collected pass
(`streamae._passes.Pass.collect`) and `encode` a written pass
(`streamae._passes.Pass.write`): tasks stream runs of the input's batches
(with read-ahead), each writing whole output chunks, so the tasks per pass
do not grow with the input's chunk count and memory holds a few batches and
one output chunk per running task. The output is chunked for the next pass
(about 16 MiB per chunk, `streamae._passes.output_chunk_rows`), whatever the
input's chunking, unless ``chunk_rows`` is given.
"""

from __future__ import annotations

import os

import dask.array as da
import numpy as np

from . import _kernels as K
from ._cluster import make_runner
from ._data import input_name
from ._errors import DataError
from ._options import as_run_options
from ._output import write_output
from ._passes import Pass, open_input, output_chunk_rows
from ._store import check_writable, read_model
from ._validation import check_width, require_fitted
from ._whiten import whiten_rows, whitening_of


def hidden_graph(dataset, W1, b1, dtype, block_rows, decoder="sigmoid"):
    """Lazy hidden activations a2 = sigmoid(X W1^T + b1), chunked like the data.

    Parameters
    ----------
    dataset : Dataset
        The data, shape (m, n).
    W1 : ndarray of shape (n_hidden, n)
    b1 : ndarray of shape (n_hidden,)
    dtype : {"float32", "float64"}
        Arithmetic and output dtype.
    block_rows : int
        Rows per kernel block.
    decoder : {"sigmoid", "linear"}
        The model's output layer: what values the data may hold.

    Returns
    -------
    dask.array.Array of shape (m, n_hidden)
        One task per row chunk of ``dataset``; a task refuses rows that are not
        finite, or (sigmoid decoder) outside [0, 1] (`DataError`).
    """
    dtype = np.dtype(dtype)
    W1 = np.ascontiguousarray(W1, dtype)
    b1 = np.ascontiguousarray(b1, dtype)
    return da.map_blocks(_encode_block, dataset.array, W1, b1, int(block_rows), decoder,
                         chunks=(dataset.array.chunks[0], (W1.shape[0],)), dtype=dtype)


def hidden_rows(dataset, runner, W1, b1, dtype, options, decoder="sigmoid"):
    """Hidden activations of every row, in memory: a collected pass over the
    data (`streamae._passes.Pass.collect`: tasks stream runs of batches, as
    every pass does, whatever the input's chunk count).

    Parameters
    ----------
    dataset : Dataset
        The data, shape (m, n).
    runner : Runner
    W1 : ndarray of shape (n_hidden, n), b1 : ndarray of shape (n_hidden,)
    dtype : {"float32", "float64"}
        Arithmetic and output dtype.
    options : RunOptions
        ``block_rows``, ``split_every`` and ``read_ahead``.

    Returns
    -------
    ndarray of shape (m, n_hidden)
    """
    dtype = np.dtype(dtype)
    data_pass = Pass(dataset, runner, options.split_every, options.read_ahead,
                     dtype.itemsize)
    return data_pass.collect(encode_rows, np.ascontiguousarray(W1, dtype),
                             np.ascontiguousarray(b1, dtype), int(options.block_rows),
                             decoder)


def _encode_block(block, W1, b1, block_rows, decoder="sigmoid", block_info=None):
    row0 = block_info[0]["array-location"][0][0] if block_info else 0
    return encode_rows(block, row0, W1, b1, block_rows, decoder)


def encode_rows(block, row0, W1, b1, block_rows, decoder="sigmoid", whitening=None):
    """Hidden activations of one batch of rows (the kernel of `encode`'s pass).

    Parameters
    ----------
    block : ndarray of shape (rows, n)
    row0 : int
        Global index of the batch's first row (for error reports).
    W1 : ndarray of shape (n_hidden, n), b1 : ndarray of shape (n_hidden,)
        In the arithmetic dtype.
    whitening : (ndarray of shape (n_raw,), ndarray of shape (n, n_raw)), optional
        Mean and matrix of the training data's whitening, applied first to raw rows.

    Returns
    -------
    ndarray of shape (rows, n_hidden), dtype of W1

    Raises
    ------
    DataError
        For rows that are not finite or (sigmoid decoder) outside [0, 1].
    """
    if whitening is not None:
        block = whiten_rows(block, row0, *whitening, W1.dtype)
    X = np.ascontiguousarray(block, dtype=W1.dtype)
    if decoder == "linear":
        if not np.isfinite(X).all():
            bad = np.flatnonzero(~np.isfinite(X).all(axis=1)) + row0
            raise DataError(f"cannot encode: {bad.size} row(s) with NaN or inf, first row "
                            f"{bad[0]}; clean the data")
    # NaN fails both comparisons, so this also refuses NaN and Inf.
    elif X.size and not (X.min() >= 0 and X.max() <= 1):
        bad = np.flatnonzero(~((X >= 0) & (X <= 1)).all(axis=1)) + row0
        raise DataError(f"cannot encode: {bad.size} row(s) with values outside [0, 1], NaN or "
                        f"inf, first row {bad[0]}; clean or rescale the data as it was for "
                        "training")
    return K.hidden_activations(X, W1, b1, block_rows)[0]


def _weights(model, storage_options):
    """(W1, b1, dtype, decoder, whitening record or None, model path or None) of a
    fitted model or a saved one's path."""
    if isinstance(model, (str, os.PathLike)):
        params, attrs = read_model(model, storage_options=storage_options)
        decoder = attrs.get("decoder", attrs.get("params", {}).get("decoder", "sigmoid"))
        return (params["W1"], params["b1"], attrs["dtype"], decoder, attrs.get("whitening"),
                os.fspath(model))
    require_fitted(model)
    return (model.W1_, model.b1_, model.dtype, model.decoder,
            getattr(model, "whitening_", None), None)


def _whitening_to_apply(whitening, data, storage_options):
    """The model's whitening as (mean, matrix) if ``data`` is raw data of a model
    trained on whitened data, else None; data already whitened must match it."""
    if whitening is None:
        return None
    own = whitening_of(data, storage_options)
    if own is None:
        return (np.asarray(whitening["mean"], np.float64),
                np.asarray(whitening["matrix"], np.float64))
    if own["mean"] != whitening["mean"] or own["matrix"] != whitening["matrix"]:
        raise DataError("the data was whitened with another transform than the model's "
                        "training data; give the raw data (encode whitens it as in training) "
                        "or data from the same `streamae whiten` run")
    return None


def encode(model, data, out, *, overwrite=False, run_options=None):
    """Write the hidden activations of every row of ``data`` to a Zarr array.

    Parameters
    ----------
    model : SparseAutoencoder or str
        A fitted model, or the path of a saved one.
    data : path, URL, zarr.Array, dask.array.Array or ndarray of shape (m, n)
        ``n`` must equal the model's input width. For a model trained on a
        store written by `streamae.whiten`, raw data (a store without a
        whitening record, or an in-memory array) is whitened first with the
        training data's transform (mean and matrix from the model).
    out : str or os.PathLike
        Zarr array to create, shape (m, n_hidden), dtype of the model.
    overwrite : bool
        Replace an existing ``out``.
    run_options : RunOptions or dict, optional
        Where the tasks run (``scheduler``, ``workers``), ``storage_options``,
        ``block_rows``, ``read_ahead``, ``page_cache``, and ``chunk_rows``:
        rows per output chunk; default about 16 MiB of output per chunk
        (whole input batches), whatever the input's chunks.

    Returns
    -------
    zarr.Array
        The written array, open for reading.
    """
    options = as_run_options(run_options)
    storage_options = options.storage_options
    W1, b1, dtype, decoder, whitening, model_path = _weights(model, storage_options)
    check_writable(out, overwrite, storage_options, what="output store")
    whiten_first = _whitening_to_apply(whitening, data, storage_options)
    dataset = open_input(data, options)
    # One line (DataError) if the widths differ, before anything is written.
    check_width(dataset, W1.shape[1] if whiten_first is None else whiten_first[0].size)
    dtype = np.dtype(dtype)
    m, s = dataset.shape[0], W1.shape[0]
    runner = make_runner(options.scheduler, options.workers)
    with runner.session():
        data_pass = Pass(dataset, runner, options.split_every, options.read_ahead,
                         dtype.itemsize)
        if options.chunk_rows is None:  # output chunks of our choice: large batches
            data_pass = data_pass.coarse()
        rows = options.chunk_rows or output_chunk_rows(data_pass.batch_rows, m, s,
                                                       dtype.itemsize)
        rows = min(rows, m)
        meta = {"kind": "encoding", "model": model_path, "data": input_name(data),
                "n_hidden": s, "n_visible": W1.shape[1], "dtype": dtype.name,
                "activation": "a2 = sigmoid(X W1^T + b1)", "chunk_rows": rows,
                "whitened_by_encode": whiten_first is not None}
        weights = (np.ascontiguousarray(W1, dtype), np.ascontiguousarray(b1, dtype))
        return write_output(data_pass, out, encode_rows, *weights, options.block_rows,
                            decoder, whiten_first, width=s, dtype=dtype, chunk_rows=rows,
                            attrs={"streamae": meta}, overwrite=overwrite,
                            storage_options=storage_options)
