"""Opening the user's data as a row-chunked Dask array, and describing it.

Accepted: a Zarr array path or fsspec URL, a ``zarr.Array``, a
``dask.array.Array`` or anything NumPy can turn into an array. The result is
a Dask array of shape (m, n) chunked along rows only, so that one task reads
one block of whole rows; nothing is loaded here.
"""

import os
from dataclasses import dataclass

import dask.array as da
import numpy as np
import zarr

from ._errors import DataError

# A NumPy array given directly is cut into tasks of about this many bytes.
_NUMPY_TASK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Dataset:
    """A row-chunked view of the user's data.

    Attributes
    ----------
    array : dask.array.Array of shape (m, n)
        One chunk along columns; row chunks are the unit of work.
    source : str
        How to name the data in messages (a path, URL or the input's type).
    """

    array: da.Array
    source: str

    @property
    def shape(self):
        return self.array.shape

    @property
    def row_starts(self):
        """Global index of the first row of each chunk, ndarray of shape (chunks + 1,)."""
        return np.concatenate([[0], np.cumsum(self.array.chunks[0])])

    def locate(self, row):
        """Chunk index and its [start, stop) rows for a global row."""
        starts = self.row_starts
        i = int(np.searchsorted(starts, row, side="right") - 1)
        return i, int(starts[i]), int(starts[i + 1])


def _is_url(text):
    return "://" in text


def open_zarr_array(path, storage_options=None):
    """Open a Zarr array read-only at a local path or fsspec URL.

    Raises
    ------
    DataError
        If nothing is there or it is not a Zarr array.
    """
    path = os.fspath(path)
    if not _is_url(path) and not os.path.exists(path):
        raise DataError(
            f"no data at '{path}': the path does not exist "
            "(check the path, or create a store with `streamae import`)"
        )
    kwargs = {"storage_options": storage_options} if _is_url(path) and storage_options else {}
    try:
        return zarr.open_array(path, mode="r", **kwargs)
    except (FileNotFoundError, KeyError) as exc:
        raise DataError(
            f"no Zarr array at '{path}' ({type(exc).__name__}: {exc}); "
            "point to the array itself, not a group or a plain folder"
        ) from None
    except (ValueError, TypeError) as exc:
        raise DataError(f"cannot open '{path}' as a Zarr array: {exc}") from None


def open_dataset(data, chunk_rows=None, storage_options=None):
    """Wrap the user's data as a `Dataset` without reading it.

    Parameters
    ----------
    data : str, os.PathLike, zarr.Array, dask.array.Array or array-like
        Shape (m, n), one sample per row.
    chunk_rows : int, optional
        Rows per task. Default: the Zarr array's chunk (or shard) rows; a Dask
        array's own row chunks; about 32 MiB per task for NumPy input.
    storage_options : dict, optional
        Passed to fsspec for URLs (endpoint, credentials).

    Returns
    -------
    Dataset
    """
    if isinstance(data, (str, os.PathLike)):
        source = f"'{os.fspath(data)}'"
        data = open_zarr_array(data, storage_options)
    elif isinstance(data, zarr.Array):
        source = f"Zarr array '{data.store_path}'"
    elif isinstance(data, da.Array):
        source = "the Dask array"
    else:
        source = "the NumPy array"
        data = np.asarray(data)

    _check_array_like(data, source)
    m, n = data.shape
    if isinstance(data, zarr.Array):
        rows = chunk_rows or (data.shards or data.chunks)[0]
        array = da.from_zarr(data, chunks=(rows, n))
    elif isinstance(data, da.Array):
        array = data.rechunk({0: chunk_rows or data.chunks[0], 1: -1})
    else:
        rows = chunk_rows or max(1, _NUMPY_TASK_BYTES // max(1, n * data.dtype.itemsize))
        array = da.from_array(data, chunks=(min(rows, m), n))
    return Dataset(array, source)


def _check_array_like(data, source):
    dtype = np.dtype(data.dtype)
    if data.ndim != 2:
        raise DataError(
            f"{source} has shape {tuple(data.shape)} ({data.ndim}-D); streamae needs a 2-D "
            "array of shape (samples, features): reshape it to one sample per row"
        )
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise DataError(
            f"{source} is empty (shape {tuple(data.shape)}); it needs at least one row "
            "and one column"
        )
    if dtype.kind not in "fiub":
        raise DataError(
            f"{source} has non-numeric dtype {dtype}; convert it to float32 or float64 "
            "with values in [0, 1]"
        )


def describe_bad_values(dataset, row):
    """One line naming what is wrong near ``row``: the chunk, rows and values.

    Reads only the chunk that holds ``row``.
    """
    i, start, stop = dataset.locate(row)
    block = np.asarray(dataset.array.blocks[i].compute(scheduler="synchronous"), np.float64)
    nan = np.isnan(block)
    inf = np.isinf(block)
    out = ~nan & ~inf & ((block < 0) | (block > 1))
    parts = []
    for mask, what in ((nan, "NaN"), (inf, "Inf")):
        if mask.any():
            rows = np.flatnonzero(mask.any(axis=1)) + start
            parts.append(f"{int(mask.sum())} {what} value(s) in rows {_rows(rows)}")
    if out.any():
        rows = np.flatnonzero(out.any(axis=1)) + start
        lo, hi = block[out].min(), block[out].max()
        parts.append(f"{int(out.sum())} value(s) outside [0, 1] (from {lo:g} to {hi:g}) "
                     f"in rows {_rows(rows)}")
    found = "; ".join(parts) or "values outside [0, 1]"
    return (f"{dataset.source}, chunk {i} (rows {start}-{stop - 1}): {found}; the sigmoid "
            "decoder needs finite values in [0, 1]: clean the data, or rescale it with "
            "`streamae import --scale minmax`")


def _rows(rows):
    shown = ", ".join(str(r) for r in rows[:5])
    return shown + (f", ... ({rows.size} rows)" if rows.size > 5 else "")
