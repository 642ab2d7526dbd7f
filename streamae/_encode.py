"""``streamae encode``: hidden activations of every row, written to Zarr.

The activations are `SparseAutoencoder.transform_dask` (the graph that
`SparseAutoencoder.transform` computes in memory): one Numba kernel task per
row chunk. Here each task's result is written straight into its own chunk
(or shard) of the output, so memory holds a few chunks, never the whole
output. The output is chunked like the input: same rows per chunk (and per
shard, if the input is sharded), all hidden units in one chunk.
"""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import zarr

from ._cluster import make_runner
from ._data import open_zarr_array
from ._errors import DataError, ParameterError
from ._output import default_chunk_rows, open_for_writing, set_attrs, staged_array


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


def _whitened_input(model, data, task_rows, storage_options):
    """(data, whether encode whitens it): raw data of a model trained on whitened
    data gets the model's whitening; data already whitened must match it."""
    from ._data import open_dataset
    from ._whiten import apply_whitening, whitening_of

    record = getattr(model, "whitening_", None)
    if record is None:
        return data, False
    own = whitening_of(data, storage_options)
    if own is None:
        raw = open_dataset(data, chunk_rows=task_rows, storage_options=storage_options)
        return apply_whitening(raw.array, record, model.dtype), True
    if own["mean"] != record["mean"] or own["matrix"] != record["matrix"]:
        raise DataError("the data was whitened with another transform than the model's "
                        "training data; give the raw data (encode whitens it as in training) "
                        "or data from the same `streamae whiten` run")
    return data, False


def encode(model, data, out, *, chunk_rows=None, overwrite=False, scheduler=None,
           workers=None, block_rows=2048, storage_options=None):
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
    chunk_rows : int, optional
        Rows per output chunk (and per task); default the input's chunk rows
        (a sharded input keeps its shards: one task writes one shard).
    overwrite : bool
        Replace an existing ``out``.
    scheduler, workers
        Where the tasks run, as for `SparseAutoencoder.transform`; default
        the local threaded scheduler.

    Returns
    -------
    zarr.Array
        The written array, open for reading.
    """
    from ._estimator import SparseAutoencoder

    model_path = None
    if not isinstance(model, SparseAutoencoder):
        model_path = os.fspath(model)
        model = SparseAutoencoder.load(model_path, storage_options=storage_options)
    if chunk_rows is not None and chunk_rows < 1:
        raise ParameterError(f"chunk_rows must be >= 1, got {chunk_rows}")
    from ._store import check_writable
    check_writable(out, overwrite, storage_options, what="output store")

    data, rows, shard, described = _input_layout(data, storage_options)
    if chunk_rows:
        rows, shard = int(chunk_rows), None
    task_rows = shard or rows
    data, whitened = _whitened_input(model, data, task_rows, storage_options)
    # Raises DataError (one line) if the widths differ, before anything is written.
    H = model.transform_dask(data, chunk_rows=task_rows, block_rows=block_rows,
                             storage_options=storage_options)
    m, s = H.shape
    rows, task_rows = min(rows, m), min(task_rows, m)
    shards = (task_rows, s) if shard else None
    with staged_array(out, shape=(m, s), chunks=(rows, s), shards=shards, dtype=H.dtype,
                      overwrite=overwrite, storage_options=storage_options,
                      what="output store") as target:
        z = open_for_writing(target, storage_options)
        # One task per output chunk (or shard): it computes and writes its rows.
        stored = da.store(H.rechunk({0: task_rows}), z, lock=False, compute=False)
        runner = make_runner(scheduler, workers)
        with runner.session():
            runner.compute(stored)
        set_attrs(target, {"streamae": {
            "kind": "encoding", "model": model_path, "data": described,
            "n_hidden": s, "n_visible": model.n_visible_, "dtype": np.dtype(H.dtype).name,
            "activation": "a2 = sigmoid(X W1^T + b1)", "chunk_rows": rows,
            "whitened_by_encode": whitened,
        }}, storage_options)
    kwargs = {"storage_options": storage_options} if "://" in os.fspath(out) and \
        storage_options else {}
    return zarr.open_array(os.fspath(out), mode="r", **kwargs)
