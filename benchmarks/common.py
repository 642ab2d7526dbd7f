"""Helpers shared by the benchmark scripts: making stores, and evicting them
from the page cache (what a run records about itself is `provenance`).

``evict`` drops every chunk file's pages from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)``, which needs no privileges (the files
must have been written back: ``os.sync()`` after writing).
"""

import os

import numpy as np
import zarr


def uniform_block(rng, rows, n):
    """``rows`` x ``n`` float32 values uniform in [0.05, 0.95]."""
    return rng.uniform(0.05, 0.95, size=(rows, n)).astype(np.float32)


def make_store(path, m, n, chunk_rows, *, compressed=True, seed=0, block=uniform_block,
               X=None):
    """A Zarr v3 array of ``m`` x ``n`` float32 at ``path`` in chunks of
    ``chunk_rows`` rows (zstd with ``compressed``, else none), kept if it exists
    with that shape and chunking. Its values: the rows of ``X`` (ndarray of shape
    (m, n)) if given, the same whatever the chunking; else ``block(rng, rows, n)``
    chunk by chunk from ``numpy.random.default_rng(seed)``."""
    if os.path.exists(path):
        z = zarr.open_array(path, mode="r")
        if z.shape == (m, n) and z.chunks[0] == chunk_rows:
            return path
        raise SystemExit(f"{path} exists with another shape or chunking; remove it")
    kw = {} if compressed else {"compressors": None}
    z = zarr.create_array(path, shape=(m, n), chunks=(chunk_rows, n), dtype="float32", **kw)
    if X is not None:
        z[...] = X
        return path
    rng = np.random.default_rng(seed)
    for start in range(0, m, chunk_rows):
        stop = min(m, start + chunk_rows)
        z[start:stop] = block(rng, stop - start, n)
    return path


def uniform_data(m, n, seed=0):
    """``m`` x ``n`` float32 values uniform in [0.05, 0.95] (the same for every chunking)."""
    return np.random.default_rng(seed).uniform(0.05, 0.95, (m, n)).astype(np.float32)


def chunk_files(path):
    """The chunk files of the Zarr array at ``path`` (no metadata), sorted."""
    out = []
    for root, _, files in os.walk(path):
        out += [os.path.join(root, f) for f in files if not f.startswith(("zarr.json", "."))]
    return sorted(out)


def evict(files):
    """Drop the files' pages from the page cache (no privileges needed)."""
    for name in files:
        fd = os.open(name, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
