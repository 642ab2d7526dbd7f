"""Reading row chunks of a local Zarr array: with one copy, and never silently.

A Zarr read of one chunk copies every byte twice (file to a bytes object,
bytes object to the output array) and fills the output first; for an
uncompressed chunk on local disk the file already *is* the array, so it can
be read straight into a new NumPy array. On the benchmark machine one 16 MiB
chunk takes about 1 ms this way against about 4 ms through Zarr, which is a
tenth of an evaluation when the kernels are light (case S in
docs/benchmarks.md).

Direct reads are used only for what can be read exactly like Zarr (no
compression, filters or sharding, little-endian or one-byte values, C order,
one chunk across the columns, tasks of whole chunks); anything else, and
a chunk whose file is missing or of an unexpected size, is read through
Zarr, so every answer is Zarr's own.

Zarr reads a missing chunk file as the fill value, which is right for a
chunk that was never written but silently wrong when the whole store has
gone: moved or deleted during training, or not visible on a Dask worker.
Every read of a local store therefore checks, when a chunk file is missing or
after a read through Zarr, that the array's metadata is still there.
"""

import os
import socket

import dask.array as da
import numpy as np
from dask.base import tokenize

from ._errors import DataError

_METADATA = {3: "zarr.json", 2: ".zarray"}


class LocalChunks:
    """An array-like over a local Zarr array, read by Dask one row chunk at a time.

    Dask calls ``obj[rows, cols]`` once per task (see `as_dask`). A
    selection of whole chunks is read from their files when the array's
    layout allows (``direct``); anything else is passed to Zarr.

    Parameters
    ----------
    array : zarr.Array of shape (m, n), in a ``zarr.storage.LocalStore``
    """

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = 2
        self.chunk_rows = int(array.chunks[0])
        store_path = array.store_path
        self.root = os.path.normpath(os.path.join(os.fspath(store_path.store.root),
                                                  store_path.path))
        self.metadata = os.path.join(self.root, _METADATA.get(array.metadata.zarr_format,
                                                              "zarr.json"))
        self.direct = _direct_layout(array)

    @classmethod
    def for_array(cls, array):
        """A `LocalChunks` for ``array``, or None if it is not in a local store."""
        try:
            from zarr.storage import LocalStore
        except ImportError:  # pragma: no cover - another zarr layout
            return None
        if array.ndim != 2 or not isinstance(array.store_path.store, LocalStore):
            return None
        return cls(array)

    def __dask_tokenize__(self):
        return ("streamae-local-chunks", self.root, self.shape, self.dtype.str,
                self.chunk_rows)

    def __getitem__(self, selection):
        data = self._read_whole_chunks(selection) if self.direct else None
        if data is None:
            try:
                data = self.array[selection]
            except (DataError, MemoryError):
                raise
            except Exception as exc:  # a chunk Zarr cannot read or decode
                self._require_store()
                raise self._damaged(selection, exc) from None
            self._require_store()
        return data

    def _damaged(self, selection, exc):
        return first_bad_chunk(self.array, selection, exc, self.root)

    def _require_store(self):
        """Raise DataError if the array's metadata is gone (see the module notes)."""
        if not os.path.exists(self.metadata):
            raise DataError(
                f"the Zarr store '{self.root}' is gone on {socket.gethostname()}: its "
                f"metadata '{os.path.basename(self.metadata)}' is missing, so its chunks "
                "would read as fill values; it was moved or deleted during training, or a "
                "Dask worker does not see this path (every worker must see the store at "
                "the same path: use a shared file system or an object store)")

    def _read_whole_chunks(self, selection):
        """The rows of ``selection`` read from their chunk files, if it is whole
        chunks with all columns (the last may end at the array's end); else None."""
        if not (isinstance(selection, tuple) and len(selection) == 2
                and all(isinstance(s, slice) for s in selection)):
            return None
        m, n = self.shape
        cr = self.chunk_rows
        rows, cols = selection
        start, stop, step = rows.indices(m)
        if step != 1 or start >= stop or start % cr or (stop % cr and stop != m):
            return None
        if cols.indices(n) != (0, n, 1):
            return None
        out = np.empty((stop - start, n), self.dtype)
        chunk_bytes = cr * n * self.dtype.itemsize  # edge chunks are stored full size
        for first in range(start, stop, cr):
            key = self.array.metadata.encode_chunk_key((first // cr, 0))
            part = out[first - start:min(first + cr, stop) - start]
            if not self._read_file(os.path.join(self.root, *key.split("/")), part,
                                   chunk_bytes):
                return None
        return out

    def _read_file(self, path, out, size):
        """Read the first ``out.nbytes`` bytes of ``path`` (of ``size`` bytes) into ``out``."""
        try:
            with open(path, "rb", buffering=0) as f:
                if os.fstat(f.fileno()).st_size != size:
                    return False
                view = memoryview(out).cast("B")
                done = 0
                while done < out.nbytes:  # readinto may return less than asked
                    got = f.readinto(view[done:])
                    if not got:
                        return False
                    done += got
        except FileNotFoundError:  # never written (Zarr fills it), or the store is gone
            self._require_store()
            return False
        return True


def chunk_error(store, index, start, stop, exc):
    """A one-line `DataError` for chunk ``index`` (rows ``start`` to ``stop - 1``) of
    ``store`` that could not be read or decoded (``exc``, Zarr's or the codec's error).

    Used where a task reads its rows, on every scheduler: the error pickles, so
    a process or cluster worker raises the same message in the client.
    """
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    fix = ("check that its file can be read (permissions, the disk)" if isinstance(exc, OSError)
           else "the chunk's file is damaged (cut short, or bytes that do not decode): restore "
                "the store from a good copy, or write it again (`streamae import`, "
                "`streamae patches`)")
    return DataError(f"cannot read '{store}', chunk {index} (rows {start}-{stop - 1}): "
                     f"{reason}; {fix}")


def first_bad_chunk(array, selection, exc, store):
    """The `chunk_error` for a failed read of ``selection`` (rows, columns) of the
    zarr.Array ``array``: the first of its chunks that cannot be read on its own,
    else the first chunk of the selection."""
    rows = selection[0] if isinstance(selection, tuple) else selection
    m, cr = array.shape[0], int(array.chunks[0])
    start, stop, _ = rows.indices(m) if isinstance(rows, slice) else (0, m, 1)
    first = start - start % cr
    for row in range(first, max(stop, start + 1), cr):
        try:
            array[row:min(row + cr, m)]
        except Exception as chunk_exc:
            return chunk_error(store, row // cr, row, min(row + cr, m), chunk_exc)
    return chunk_error(store, first // cr, first, min(first + cr, m), exc)


class ZarrChunks:
    """An array-like over a zarr.Array in any store, read by Dask one row chunk at a
    time; a chunk that cannot be decoded is a `chunk_error` (failures to reach the
    store, OSError, are left as they are: the caller describes those)."""

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = array.ndim
        self.store = str(array.store_path)

    def __dask_tokenize__(self):
        return ("streamae-zarr-chunks", tokenize(self.array))

    def __getitem__(self, selection):
        try:
            return self.array[selection]
        except (DataError, MemoryError, OSError):
            raise
        except Exception as exc:
            raise first_bad_chunk(self.array, selection, exc, self.store) from None


def _direct_layout(array):
    """Whether ``array``'s chunk files are its values as they are (see module notes)."""
    from zarr.codecs import BytesCodec

    if array.shards is not None or array.compressors or array.filters:
        return False
    if array.chunks[1] != array.shape[1]:
        return False
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "fiub" or dtype.byteorder == ">":
        return False
    if array.metadata.zarr_format == 3:
        serializer = array.serializer
        if not isinstance(serializer, BytesCodec):
            return False
        endian = getattr(serializer.endian, "value", serializer.endian)
        return dtype.itemsize == 1 or endian == "little"
    return getattr(array.metadata, "order", "C") == "C"


def as_dask(array, rows):
    """``array`` (zarr.Array of shape (m, n)) as a Dask array of ``rows``-row chunks.

    Local stores are read through `LocalChunks` (direct whole-chunk reads
    where possible, a check that the store is still there); other stores
    through `ZarrChunks`.
    """
    n = array.shape[1]
    local = LocalChunks.for_array(array)
    if local is None:
        remote = ZarrChunks(array)
        return da.from_array(remote, chunks=(rows, n), name="read-zarr-" + tokenize(remote, rows),
                             asarray=False, fancy=False, lock=False, inline_array=False,
                             meta=np.empty((0, 0), remote.dtype))
    name = "read-zarr-" + tokenize(local, rows)
    return da.from_array(local, chunks=(rows, n), name=name, asarray=False, fancy=False,
                         lock=False, inline_array=False, meta=np.empty((0, 0), local.dtype))
