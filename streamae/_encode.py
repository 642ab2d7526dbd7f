"""Hidden activations of every row: the lazy graph, and ``streamae encode``
writing it to Zarr.

`hidden_graph` is the graph behind `SparseAutoencoder.transform`: one Numba
kernel task per row chunk. Here each task's result is written straight into its own chunk
(or shard) of the output, so memory holds a few chunks, never the whole
output. The output is chunked like the input: same rows per chunk (and per
shard, if the input is sharded), all hidden units in one chunk.
"""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import zarr

from . import _kernels as K
from ._cluster import make_runner
from ._data import open_dataset, open_zarr_array
from ._errors import DataError
from ._options import as_run_options
from ._output import default_chunk_rows, write_array
from ._store import check_writable, read_model
from ._validation import check_width, require_fitted


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


def _encode_block(block, W1, b1, block_rows, decoder="sigmoid", block_info=None):
    X = np.ascontiguousarray(block, dtype=W1.dtype)
    if decoder == "linear":
        if not np.isfinite(X).all():
            row0 = block_info[0]["array-location"][0][0] if block_info else 0
            bad = np.flatnonzero(~np.isfinite(X).all(axis=1)) + row0
            raise DataError(f"cannot encode: {bad.size} row(s) with NaN or inf, first row "
                            f"{bad[0]}; clean the data")
        return K.hidden_activations(X, W1, b1, block_rows)[0]
    # NaN fails both comparisons, so this also refuses NaN and Inf.
    if X.size and not (X.min() >= 0 and X.max() <= 1):
        row0 = block_info[0]["array-location"][0][0] if block_info else 0
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


def _input_layout(data, storage_options=None):
    """(data to pass on, chunk rows, shard rows or None, description)."""
    if isinstance(data, (str, os.PathLike)):
        z = open_zarr_array(data, storage_options)
        return data, z.chunks[0], (z.shards[0] if z.shards else None), os.fspath(data)
    if isinstance(data, zarr.Array):
        return data, data.chunks[0], (data.shards[0] if data.shards else None), \
            f"Zarr array '{data.store_path}'"
    if isinstance(data, da.Array):
        return data, data.chunks[0][0], None, "a Dask array"
    arr = np.asarray(data)
    rows = default_chunk_rows(arr.shape[0], arr.shape[-1] if arr.ndim else 1, arr.itemsize) \
        if arr.ndim == 2 and arr.size else 1
    return arr, rows, None, "a NumPy array"


def _whitened_input(whitening, dtype, data, task_rows, storage_options):
    """(data, whether encode whitens it): raw data of a model trained on whitened
    data gets the model's whitening; data already whitened must match it."""
    from ._whiten import apply_whitening, whitening_of

    if whitening is None:
        return data, False
    own = whitening_of(data, storage_options)
    if own is None:
        raw = open_dataset(data, chunk_rows=task_rows, storage_options=storage_options)
        return apply_whitening(raw.array, whitening, dtype), True
    if own["mean"] != whitening["mean"] or own["matrix"] != whitening["matrix"]:
        raise DataError("the data was whitened with another transform than the model's "
                        "training data; give the raw data (encode whitens it as in training) "
                        "or data from the same `streamae whiten` run")
    return data, False


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
        ``block_rows``, and ``chunk_rows``: rows per output chunk (and per
        task); default the input's chunk rows (a sharded input keeps its
        shards: one task writes one shard).

    Returns
    -------
    zarr.Array
        The written array, open for reading.
    """
    options = as_run_options(run_options)
    storage_options, chunk_rows = options.storage_options, options.chunk_rows
    W1, b1, dtype, decoder, whitening, model_path = _weights(model, storage_options)
    check_writable(out, overwrite, storage_options, what="output store")

    data, rows, shard, described = _input_layout(data, storage_options)
    if chunk_rows:
        rows, shard = int(chunk_rows), None
    task_rows = shard or rows
    data, whitened = _whitened_input(whitening, dtype, data, task_rows, storage_options)
    dataset = open_dataset(data, chunk_rows=task_rows, storage_options=storage_options,
                           page_cache=options.page_cache)
    # One line (DataError) if the widths differ, before anything is written.
    check_width(dataset, W1.shape[1])
    H = hidden_graph(dataset, W1, b1, dtype, options.block_rows, decoder)
    rows = min(rows, H.shape[0])
    meta = {"kind": "encoding", "model": model_path, "data": described,
            "n_hidden": H.shape[1], "n_visible": W1.shape[1], "dtype": np.dtype(H.dtype).name,
            "activation": "a2 = sigmoid(X W1^T + b1)", "chunk_rows": rows,
            "whitened_by_encode": whitened}
    task_rows = min(task_rows, H.shape[0])
    runner = make_runner(options.scheduler, options.workers)
    with runner.session():  # one task per output chunk (or shard): it computes and writes
        write_array(H.rechunk({0: task_rows}), out, rows=rows,
                    shards=(task_rows, H.shape[1]) if shard else None, attrs={"streamae": meta},
                    runner=runner, overwrite=overwrite, storage_options=storage_options)
    kwargs = {"storage_options": storage_options} if "://" in os.fspath(out) and \
        storage_options else {}
    return zarr.open_array(os.fspath(out), mode="r", **kwargs)
