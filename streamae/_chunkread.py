"""Reading whole chunks of an uncompressed local Zarr array with one copy.

A Zarr read of one chunk copies every byte twice (file to a bytes object,
bytes object to the output array) and fills the output first; for an
uncompressed chunk on local disk the file already *is* the array, so it can
be read straight into a new NumPy array. On the benchmark machine one 16 MiB
chunk takes about 1 ms this way against about 4 ms through Zarr, which is a
tenth of an evaluation when the kernels are light (case S in
docs/benchmarks.md).

`DirectChunks.for_array` accepts only what it can read exactly like Zarr
(local store, no compression, filters or sharding, little-endian or one-byte
values, C order, one chunk across the columns) and returns None for
anything else, which is then read through Zarr. A chunk whose file is
missing (never written: Zarr returns the fill value) or does not have the
expected size is read through Zarr too, so every answer is Zarr's own.
"""

import os

import numpy as np


class DirectChunks:
    """An array-like over a Zarr array that reads whole row chunks directly.

    Dask calls ``obj[rows, cols]`` once per chunk (see `as_dask`); a
    selection that is exactly one whole row chunk with all columns is read
    from its file, anything else is passed to Zarr.

    Parameters
    ----------
    array : zarr.Array of shape (m, n)
        Must pass `for_array`'s checks.
    """

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = 2
        self.chunk_rows = int(array.chunks[0])
        store_path = array.store_path
        self.root = os.path.join(os.fspath(store_path.store.root), store_path.path)

    @classmethod
    def for_array(cls, array):
        """A `DirectChunks` for ``array``, or None if its chunks need Zarr's decoding."""
        try:
            from zarr.codecs import BytesCodec
            from zarr.storage import LocalStore
        except ImportError:  # another zarr layout: always read through zarr
            return None
        if array.ndim != 2 or not isinstance(array.store_path.store, LocalStore):
            return None
        if array.shards is not None or array.compressors or array.filters:
            return None
        if array.chunks[1] != array.shape[1]:
            return None
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "fiub" or dtype.byteorder == ">":
            return None
        if array.metadata.zarr_format == 3:
            serializer = array.serializer
            if not isinstance(serializer, BytesCodec):
                return None
            endian = getattr(serializer.endian, "value", serializer.endian)
            if dtype.itemsize > 1 and endian != "little":
                return None
        elif getattr(array.metadata, "order", "C") != "C":
            return None
        return cls(array)

    def __dask_tokenize__(self):
        return ("streamae-direct-chunks", self.root, self.shape, self.dtype.str,
                self.chunk_rows)

    def __getitem__(self, selection):
        data = self._read_whole_chunk(selection)
        return self.array[selection] if data is None else data

    def _read_whole_chunk(self, selection):
        """The chunk that ``selection`` is exactly, read from its file; else None."""
        if not (isinstance(selection, tuple) and len(selection) == 2
                and all(isinstance(s, slice) for s in selection)):
            return None
        m, n = self.shape
        rows, cols = selection
        start, stop, step = rows.indices(m)
        if step != 1 or start % self.chunk_rows or cols.indices(n) != (0, n, 1):
            return None
        if stop != min(start + self.chunk_rows, m):
            return None
        key = self.array.metadata.encode_chunk_key((start // self.chunk_rows, 0))
        path = os.path.join(self.root, *key.split("/"))
        # Zarr stores edge chunks at full size.
        out = np.empty((self.chunk_rows, n), self.dtype)
        try:
            with open(path, "rb", buffering=0) as f:
                if os.fstat(f.fileno()).st_size != out.nbytes:
                    return None
                view = memoryview(out).cast("B")
                done = 0
                while done < out.nbytes:  # readinto may return less than asked
                    got = f.readinto(view[done:])
                    if not got:
                        return None
                    done += got
        except FileNotFoundError:  # never written: Zarr fills it
            return None
        return out[:stop - start]


def as_dask(array, rows):
    """``array`` (zarr.Array of shape (m, n)) as a Dask array of ``rows``-row chunks.

    Whole chunks of an uncompressed local array are read with one copy
    (`DirectChunks`); everything else through ``dask.array.from_zarr``.
    """
    import dask.array as da
    from dask.base import tokenize

    n = array.shape[1]
    direct = DirectChunks.for_array(array) if rows == array.chunks[0] else None
    if direct is None:
        return da.from_zarr(array, chunks=(rows, n))
    name = "read-zarr-" + tokenize(direct, rows)
    return da.from_array(direct, chunks=(rows, n), name=name, asarray=False, fancy=False,
                         lock=False, inline_array=False,
                         meta=np.empty((0, 0), direct.dtype))
