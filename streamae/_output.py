"""New row-chunked Zarr arrays, written safely.

A local output is built under a temporary name beside the target and moved
into place when complete (`streamae._atomic.staged`), so an interrupted or
failed run never leaves a half-written store where the user expects one, and
an existing store survives a failed ``--overwrite``. Object-store URLs
cannot be renamed; they are written in place (after the same existence
check).
"""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import zarr

from ._atomic import staged
from ._store import check_writable, is_url

# Default size of one chunk of a store written by streamae (the unit of one
# task when training): large enough to amortise Dask's per-task overhead,
# small enough that a few in flight per core stay far below memory.
CHUNK_BYTES = 16 * 2**20


def default_chunk_rows(rows: int, width: int, itemsize: int) -> int:
    """Rows per chunk: about 16 MiB, and at least 4 chunks when that leaves
    each of them 1024 rows or more (so small stores still use several cores)."""
    budget = max(1, CHUNK_BYTES // max(1, width * itemsize))
    quarter = max(1024, -(-rows // 4))
    return max(1, min(rows, budget, quarter))


def plain_json(value):
    """``value`` with NumPy scalars and arrays turned into plain JSON types."""
    return json.loads(json.dumps(value, default=lambda v: np.asarray(v).tolist()))


@contextlib.contextmanager
def staged_array(path, *, shape, chunks, dtype, shards=None, overwrite=False,
                 storage_options=None, what="output", compressors="auto"):
    """Create a Zarr v3 array for writing; yields the path to write to.

    Parameters
    ----------
    path : str or os.PathLike
        Final location (local directory or fsspec URL).
    shape, chunks, dtype, shards
        As for ``zarr.create_array``.
    compressors : "auto" or None
        Zarr's default compression, or none.
    overwrite : bool
        Replace an existing ``path``; without it an existing path raises
        `OutputExistsError` before anything is written.

    Yields
    ------
    str
        Where the array was created (a temporary sibling for local paths).
        Open it with ``zarr.open_array(target, mode="r+")``.
    """
    path = os.fspath(path)
    check_writable(path, overwrite, storage_options, what=what)
    kwargs = dict(shape=shape, chunks=chunks, dtype=dtype, shards=shards,
                  compressors=compressors)
    if is_url(path):
        zarr.create_array(path, overwrite=overwrite, storage_options=storage_options, **kwargs)
        yield path
        return
    with staged(path, what) as tmp:
        zarr.create_array(tmp, **kwargs)
        yield tmp


def open_for_writing(target, storage_options=None):
    """Open an array created by `staged_array` for writing (in a task)."""
    kwargs = {"storage_options": storage_options} if is_url(target) and storage_options else {}
    # Every chunk is written, even one of zeros: Zarr's check for chunks equal
    # to the fill value compares every value, half the cost of a local write.
    return zarr.open_array(target, mode="r+", **kwargs).with_config({"write_empty_chunks": True})


def set_attrs(target, attrs, storage_options=None):
    """Store ``attrs`` (made plain JSON) on the array at ``target``."""
    open_for_writing(target, storage_options).attrs.update(plain_json(attrs))


def write_output(data_pass, out, kernel, *consts, width, dtype, chunk_rows, attrs,
                overwrite=False, storage_options=None):
    """A written pass (`streamae._passes.Pass.write`) into a new Zarr array.

    The array is uncompressed: computed floats (whitened data, activations)
    shrink by about 8% with Zarr's default zstd, which costs half as much
    time again as the write itself, and the next pass reads uncompressed
    chunks straight from their files (`streamae._chunkread`).

    Parameters
    ----------
    data_pass : Pass
        The input's batches and where the tasks run.
    out : str or os.PathLike
        The array to create, shape (m, width), in chunks of ``chunk_rows``
        rows (whole input batches, or all the rows); written by
        `staged_array`: nothing is left at ``out`` on failure.
    kernel : callable
        ``kernel(batch, first_row, *consts)`` -> ndarray of shape (rows, width).
    attrs : dict
        Recorded on the array once every chunk is written.

    Returns
    -------
    zarr.Array
        The written array, open for reading.
    """
    from ._passes import OutputChunks

    m = data_pass.dataset.shape[0]
    with staged_array(out, shape=(m, width), chunks=(chunk_rows, width), dtype=dtype,
                      overwrite=overwrite, storage_options=storage_options,
                      what="output store", compressors=None) as target:
        data_pass.write(OutputChunks(target, chunk_rows, dtype, storage_options), kernel,
                        *consts)
        set_attrs(target, attrs, storage_options)
    kwargs = {"storage_options": storage_options} if is_url(out) and storage_options else {}
    return zarr.open_array(os.fspath(out), mode="r", **kwargs)
