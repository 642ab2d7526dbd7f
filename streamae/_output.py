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
from ._store import _is_url, check_writable

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
                 storage_options=None, what="output"):
    """Create a Zarr v3 array for writing; yields the path to write to.

    Parameters
    ----------
    path : str or os.PathLike
        Final location (local directory or fsspec URL).
    shape, chunks, dtype, shards
        As for ``zarr.create_array``; compression is Zarr's default.
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
    kwargs = dict(shape=shape, chunks=chunks, dtype=dtype, shards=shards)
    if _is_url(path):
        zarr.create_array(path, overwrite=overwrite, storage_options=storage_options, **kwargs)
        yield path
        return
    with staged(path, what) as tmp:
        zarr.create_array(tmp, **kwargs)
        yield tmp


def open_for_writing(target, storage_options=None):
    """Open an array created by `staged_array` for writing (in a task)."""
    kwargs = {"storage_options": storage_options} if _is_url(target) and storage_options else {}
    return zarr.open_array(target, mode="r+", **kwargs)


def set_attrs(target, attrs, storage_options=None):
    """Store ``attrs`` (made plain JSON) on the array at ``target``."""
    open_for_writing(target, storage_options).attrs.update(plain_json(attrs))


def write_array(Y, out, *, rows, shards, attrs, runner, overwrite=False,
                storage_options=None):
    """Compute ``Y`` (Dask array of shape (m, k)) into a new Zarr array at
    ``out``, in chunks of ``rows`` rows (and ``shards``, or none), one task per
    chunk of ``Y``, through ``runner``; then record ``attrs``. Written by
    `staged_array`: nothing is left at ``out`` on failure."""
    import dask.array as da

    m, k = Y.shape
    with staged_array(out, shape=(m, k), chunks=(rows, k), shards=shards, dtype=Y.dtype,
                      overwrite=overwrite, storage_options=storage_options,
                      what="output store") as target:
        z = open_for_writing(target, storage_options)
        runner.compute(da.store(Y, z, lock=False, compute=False))
        set_attrs(target, attrs, storage_options)
