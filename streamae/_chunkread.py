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

Stores larger than memory
-------------------------
A store that cannot stay in the page cache only churns it: every byte read
goes through the cache, evicting other pages, and is evicted before the next
evaluation needs it. The page-cache mode (`PAGE_CACHE_MODES`; the run option
``page_cache``) says how local uncompressed chunks are read:
``"auto"`` (default) is ``"direct"`` when the store is larger than half the
machine's memory and ``"keep"`` otherwise; ``"direct"`` reads with O_DIRECT
into page-aligned buffers that a stream of reads reuses (`ReadBuffers`):
the disk writes straight into them, with no copy out of the page cache and
no fresh pages to fault in (measured on cold data: the least CPU per byte,
and the fastest, see docs/benchmarks.md); it falls back to ``"drop"`` where
the file system refuses O_DIRECT, as tmpfs does, or a chunk's size is not a
multiple of the page. ``"drop"`` reads through the cache and then drops the
file's pages (``posix_fadvise(POSIX_FADV_DONTNEED)``); ``"keep"`` reads
through the cache and leaves it be.

Streaming with read-ahead
-------------------------
A `RowSource` reads the batches of rows the kernels work on (one or more
whole chunks each) by index; `RowSource.stream` yields a run of consecutive
batches while the next ``read_ahead`` batches are already being read (and,
for a compressed store, decoded) in a small per-process thread pool, so
reads overlap the kernels' compute. A task streaming its batches holds at
most ``read_ahead + 1`` reads at once (a read is one batch, or consecutive
batches of up to `READ_BYTES` together). The batches are the same whatever
the read-ahead, so results do not depend on it.
"""

import collections
import errno
import mmap
import os
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import dask.array as da
import numpy as np
from dask.base import tokenize

from . import _chunkfiles
from ._errors import DataError
from ._options import PAGE_CACHE_MODES

_METADATA = {3: "zarr.json", 2: ".zarray"}

#: Reads ahead of the one being computed, per streaming task (memory:
#: ``(READ_AHEAD + 1) x max(batch bytes, READ_BYTES)`` per running task). Two keep a local
#: disk or a compressed store busy while the kernels compute; object stores
#: with a long latency per request may want more.
READ_AHEAD = 2

#: Threads of the per-process pool that does the reads ahead.
READ_THREADS = 8

#: Consecutive batches smaller than this (bytes) are read together, in one
#: read of their rows: a read through Zarr costs about 0.5 ms whatever its
#: size, and a hand-over between threads tens of microseconds.
READ_BYTES = 8 * 2**20

_PAGE = mmap.PAGESIZE

_pool_lock = threading.Lock()
_pool = {}  # pid -> ThreadPoolExecutor (a forked child starts its own)
_buffers = {}  # pid -> ReadBuffers


class LocalChunks:
    """An array-like over a local Zarr array, read by Dask one row chunk at a time.

    Dask calls ``obj[rows, cols]`` once per task (see `as_dask`). A
    selection of whole chunks is read from their files when the array's
    layout allows (``direct``); anything else is passed to Zarr.

    Parameters
    ----------
    array : zarr.Array of shape (m, n), in a ``zarr.storage.LocalStore``
    page_cache : {"auto", "direct", "drop", "keep"}
        How whole chunks read from their files use the page cache (module notes).
    """

    def __init__(self, array, page_cache="auto"):
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
        self.cache_mode = _cache_mode(array, self.direct, page_cache)

    @classmethod
    def for_array(cls, array, page_cache="auto"):
        """A `LocalChunks` for ``array``, or None if it is not in a local store."""
        try:
            from zarr.storage import LocalStore
        except ImportError:  # pragma: no cover - another zarr layout
            return None
        if array.ndim != 2 or not isinstance(array.store_path.store, LocalStore):
            return None
        return cls(array, page_cache)

    def __dask_tokenize__(self):
        return ("streamae-local-chunks", self.root, self.shape, self.dtype.str,
                self.chunk_rows, self.cache_mode)

    def __getitem__(self, selection):
        return self.read(selection)

    def read(self, selection, buffers=None):
        """``self[selection]``; whole chunks read from their files go into a
        buffer of ``buffers`` (a `ReadBuffers`) when given."""
        data = self._read_whole_chunks(selection, buffers) if self.direct else None
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

    def _read_whole_chunks(self, selection, buffers=None):
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
        chunk_bytes = cr * n * self.dtype.itemsize  # edge chunks are stored full size
        direct = self.cache_mode == "direct"
        # With O_DIRECT, whole chunks go into a page-aligned buffer, the batch a view of it.
        alloc = -(-(stop - start) // cr) * cr if direct else stop - start
        if buffers is not None:
            out = buffers.take(alloc, n, self.dtype)
        elif direct:
            out = _aligned_empty(alloc, n, self.dtype)
        else:
            out = np.empty((alloc, n), self.dtype)
        encode = self.array.metadata.encode_chunk_key
        root = self.root + os.sep
        # Zarr's keys use "/" (or "."), which os.sep is wherever O_DIRECT and
        # posix_fadvise exist (the only places direct reads are used).
        paths = [root + encode((first // cr, 0)) for first in range(start, stop, cr)]
        if not direct and _chunkfiles.AVAILABLE and len(paths) > 1:
            return self._read_compiled(paths, out, start, stop, chunk_bytes)
        for k, first in enumerate(range(start, stop, cr)):
            part = out[first - start:(first + cr if direct else min(first + cr, stop)) - start]
            if not self._read_file(paths[k], part, chunk_bytes):
                return None
        return out[:stop - start]

    def _read_compiled(self, paths, out, start, stop, chunk_bytes):
        """Rows [start, stop) (whole chunks) read from their files into ``out`` by
        `streamae._chunkfiles.read_files`; a file it could not read is read again
        by `_read_file`, whose answer (and error) is the reference."""
        cr, row_bytes = self.chunk_rows, self.shape[1] * self.dtype.itemsize
        firsts = np.arange(start, stop, cr, dtype=np.int64)
        names, name_starts = _chunkfiles.packed_names(paths)
        status = _chunkfiles.read_files(
            names, name_starts, out.reshape(-1).view(np.uint8), (firsts - start) * row_bytes,
            (np.minimum(firsts + cr, stop) - firsts) * row_bytes, chunk_bytes,
            self.cache_mode == "drop")
        for k in np.flatnonzero(status):
            first = int(firsts[k])
            if not self._read_file(paths[k], out[first - start:min(first + cr, stop) - start],
                                   chunk_bytes):
                return None
        return out[:stop - start]

    def write_chunks(self, start, rows):
        """Write ``rows`` (ndarray of shape (k, n), C-contiguous, of the array's
        dtype) at row ``start`` (a chunk boundary) straight into the chunk files,
        as Zarr would store them (edge chunks stored full size, padded with
        zeros, the fill value); False, writing nothing, where the layout does not
        allow it (the caller writes through Zarr).

        Used by written passes into a new array: each chunk has one writer, and
        the array is only moved into place once every chunk is written.
        """
        m, n = self.shape
        cr = self.chunk_rows
        if (not self.direct or sys.byteorder != "little" or start % cr
                or rows.dtype != self.dtype or not rows.flags.c_contiguous
                or self.array.fill_value not in (0, None) or rows.shape[1] != n
                or (start + len(rows)) % cr and start + len(rows) != m):
            return False
        for first in range(start, start + len(rows), cr):
            part = rows[first - start:first - start + cr]
            if len(part) < cr:  # the array's last chunk
                padded = np.zeros((cr, n), self.dtype)
                padded[:len(part)] = part
                part = padded
            key = self.array.metadata.encode_chunk_key((first // cr, 0))
            path = os.path.join(self.root, *key.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb", buffering=0) as f:
                view = memoryview(part).cast("B")
                done = 0
                while done < len(view):  # write may write less than asked
                    done += f.write(view[done:])
                # On disk now, by this task, while other tasks compute: the
                # output's publish (which fsyncs everything) then waits for nothing.
                os.fsync(f.fileno())
        return True

    def _read_file(self, path, out, size):
        """Read the first ``out.nbytes`` bytes of ``path`` (of ``size`` bytes) into ``out``."""
        try:
            if self.cache_mode == "direct":
                done = _read_direct(path, out, size)
                if done is not None:
                    return done
                self.cache_mode = "drop"  # O_DIRECT refused here: the next best
            fd = os.open(path, os.O_RDONLY)  # no file object: a small chunk's read is
            try:                             # mostly the calls around it
                if os.fstat(fd).st_size != size:
                    return False
                done = _readv_into(fd, out)
                if self.cache_mode != "keep":
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                return done
            finally:
                os.close(fd)
        except FileNotFoundError:  # never written (Zarr fills it), or the store is gone
            self._require_store()
            return False


def _readv_into(fd, out):
    """Fill ``out`` from the file descriptor ``fd``; False if the file ends first."""
    view = memoryview(out).cast("B")
    done = 0
    while done < out.nbytes:  # a read may return less than asked
        got = os.readv(fd, [view[done:]])
        if not got:
            return False
        done += got
    return True


def _read_into(f, out):
    """Fill ``out`` from the file object ``f``; False if the file ends first."""
    view = memoryview(out).cast("B")
    done = 0
    while done < out.nbytes:  # readinto may return less than asked
        got = f.readinto(view[done:])
        if not got:
            return False
        done += got
    return True


def _read_direct(path, out, size):
    """Read ``path`` (``size`` bytes) into ``out`` with O_DIRECT.

    True or False as `LocalChunks._read_file`; None if O_DIRECT cannot be used
    here (the file system refuses it, or sizes or addresses are not aligned).
    """
    address = out.__array_interface__["data"][0]
    if size % _PAGE or address % _PAGE or out.nbytes != size or not out.flags.c_contiguous:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise
    try:
        if os.fstat(fd).st_size != size:
            return False
        with open(fd, "rb", buffering=0, closefd=False) as f:
            return _read_into(f, out)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise
    finally:
        os.close(fd)


class ReadBuffers:
    """Page-aligned read buffers, reused once no array refers to them.

    One pool per process (`read_buffers`): each read takes a buffer; when
    the kernels have dropped every view of it, a later read reuses it
    instead of allocating (and page-faulting) fresh memory, so a process
    holds about as many buffers as it ever had reads in flight at once (at
    most ``read_ahead + 2`` per running task) and its memory does not creep
    from one evaluation to the next. Thread-safe.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._allocations = []  # uint8 arrays owning their memory

    def take(self, rows, n, dtype):
        """An uninitialised page-aligned ndarray of shape (rows, n)."""
        nbytes = rows * n * np.dtype(dtype).itemsize
        with self._lock:
            pool = self._allocations
            # Every view of a buffer refers to it (NumPy collapses view chains to
            # the owner), so a free one has two references: the list's and the call's.
            free = [i for i in range(len(pool)) if sys.getrefcount(pool[i]) == 2]
            fits = [i for i in free if pool[i].nbytes >= nbytes + _PAGE]
            if fits:
                raw = pool[fits[0]]
            else:  # free buffers too small for this read would never be used again
                self._allocations = pool = [b for i, b in enumerate(pool) if i not in free]
                raw = np.empty(nbytes + _PAGE, np.uint8)
                pool.append(raw)
            skip = -raw.__array_interface__["data"][0] % _PAGE
            return raw[skip:skip + nbytes].view(dtype).reshape(rows, n)

    def clear(self):
        """Forget every buffer (those in use stay alive until their views go)."""
        with self._lock:
            self._allocations = []


def _per_process(table, make):
    """``table``'s object for this process, ``make()`` on first use (a forked
    child makes its own)."""
    pid = os.getpid()
    with _pool_lock:
        obj = table.get(pid)
        if obj is None:
            table.clear()
            obj = table[pid] = make()
        return obj


def read_buffers():
    """This process's `ReadBuffers`."""
    return _per_process(_buffers, ReadBuffers)


def _aligned_empty(rows, n, dtype):
    """An uninitialised ndarray of shape (rows, n) on fresh pages (page-aligned)."""
    nbytes = rows * n * np.dtype(dtype).itemsize
    buffer = mmap.mmap(-1, max(nbytes, 1))
    return np.frombuffer(buffer, dtype, rows * n).reshape(rows, n)


def _cache_mode(array, direct, mode):
    """The page-cache mode for ``array`` ("auto" decided by its size against the memory)."""
    if mode not in PAGE_CACHE_MODES:
        raise ValueError(f"page_cache must be one of {', '.join(PAGE_CACHE_MODES)}, "
                         f"got {mode!r}")
    if mode == "auto":
        import psutil

        mode = "direct" if array.nbytes > psutil.virtual_memory().total // 2 else "keep"
    if not direct or not hasattr(os, "posix_fadvise"):
        return "keep"  # read through Zarr, or a system without these calls
    return "drop" if mode == "direct" and not hasattr(os, "O_DIRECT") else mode


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


def as_dask(array, rows, local=None):
    """``array`` (zarr.Array of shape (m, n)) as a Dask array of ``rows``-row chunks.

    Local stores are read through ``local`` (a `LocalChunks`: direct
    whole-chunk reads where possible, a check that the store is still
    there; default: one in the "auto" page-cache mode); other stores through
    `ZarrChunks`.
    """
    n = array.shape[1]
    local = local or LocalChunks.for_array(array)
    if local is None:
        remote = ZarrChunks(array)
        return da.from_array(remote, chunks=(rows, n), name="read-zarr-" + tokenize(remote, rows),
                             asarray=False, fancy=False, lock=False, inline_array=False,
                             meta=np.empty((0, 0), remote.dtype))
    name = "read-zarr-" + tokenize(local, rows)
    return da.from_array(local, chunks=(rows, n), name=name, asarray=False, fancy=False,
                         lock=False, inline_array=False, meta=np.empty((0, 0), local.dtype))


def _read_pool():
    """This process's pool of `READ_THREADS` reader threads (started on first use)."""
    return _per_process(_pool, lambda: ThreadPoolExecutor(READ_THREADS,
                                                          thread_name_prefix="streamae-read"))


class RowSource:
    """Batches of rows of a Zarr array, read by index inside the tasks that use them.

    Picklable (it travels to processes and cluster workers once per
    evaluation, as one graph key shared by every task).

    Parameters
    ----------
    reader : LocalChunks or zarr.Array of shape (m, n)
        What ``reader[rows, cols]`` is read from.
    starts : sequence of int, length batches + 1
        First row of each batch, then m.
    source : str
        How messages name the store.
    unit_rows : int
        Rows per chunk (or shard) of the store, the chunks messages name.
    """

    def __init__(self, reader, starts, source, unit_rows):
        self.reader = reader
        self.starts = np.asarray(starts, np.int64)
        self.source = source
        self.unit_rows = int(unit_rows)
        self.n = int(reader.shape[1])

    def __len__(self):
        return len(self.starts) - 1

    def rows(self, i):
        """[start, stop) rows of batch ``i``."""
        return int(self.starts[i]), int(self.starts[i + 1])

    def read_rows(self, i, stop, buffers=None):
        """The rows of batches [i, stop), ndarray of shape (rows, n), read in one
        read (into a buffer of ``buffers``, a `ReadBuffers`, for a local store).

        Raises
        ------
        DataError
            Naming the store, its chunks and rows, if the read fails for a
            reason other than a missing or forbidden file (those are left to
            the caller, who knows where the read ran).
        """
        start, end = int(self.starts[i]), int(self.starts[stop])
        selection = slice(start, end), slice(0, self.n)
        try:
            if isinstance(self.reader, LocalChunks):
                rows = self.reader.read(selection, buffers)
            else:
                rows = np.asarray(self.reader[selection])
        except (DataError, FileNotFoundError, PermissionError):
            raise
        except Exception as exc:
            raise self._unreadable(start, end, exc) from None
        return rows

    def read(self, i, stop=None, buffers=None):
        """`read_rows`, cut into its batches (a list of views)."""
        stop = i + 1 if stop is None else stop
        rows, start = self.read_rows(i, stop, buffers), int(self.starts[i])
        return [rows[self.starts[k] - start:self.starts[k + 1] - start] for k in range(i, stop)]

    def _unreadable(self, start, end, exc):
        """The `chunk_error` naming the first of the store's chunks in rows
        [start, end) that cannot be read (each is read again on its own to find
        it), as every other read of a store names it (`first_bad_chunk`)."""
        if isinstance(self.reader, LocalChunks):
            array, store = self.reader.array, self.reader.root
        elif hasattr(self.reader, "store_path"):
            array, store = self.reader, str(self.reader.store_path)
        else:  # another source of rows (streamae import's)
            return DataError(f"cannot read rows {start}-{end - 1} of {self.source} ({exc})")
        return first_bad_chunk(array, (slice(start, end), slice(0, self.n)), exc, store)

    def reads(self, first, stop):
        """[i, j) runs of batches in [first, stop) read together: a batch, or
        consecutive batches of fewer than `READ_BYTES` bytes in all."""
        row_bytes = self.n * np.dtype(self.reader.dtype).itemsize
        runs, i = [], first
        while i < stop:
            j = i + 1
            while j < stop and (self.starts[j + 1] - self.starts[i]) * row_bytes <= READ_BYTES:
                j += 1
            runs.append((i, j))
            i = j
        return runs

    def stream_reads(self, first, stop, read_ahead=READ_AHEAD):
        """Yield (i, j, rows of batches [i, j)) for the reads of batches [first,
        stop) (see `reads`), in order, ``read_ahead`` reads ahead.

        The consumer should drop each read's rows before asking for the next,
        so that at most ``read_ahead + 1`` reads are alive; the reads of a
        local store reuse the buffers of dropped ones (`read_buffers`).
        """
        runs = self.reads(first, stop)
        buffers = read_buffers()
        if read_ahead < 1 or len(runs) < 2:
            for i, j in runs:
                yield i, j, self.read_rows(i, j, buffers)
            return
        pool = _read_pool()
        pending = collections.deque()
        ahead = 0
        try:
            for k, (i, j) in enumerate(runs):
                while ahead < len(runs) and ahead <= k + read_ahead:
                    pending.append(pool.submit(self.read_rows, *runs[ahead], buffers))
                    ahead += 1
                rows = pending.popleft().result()
                yield i, j, rows
                rows = None
        finally:
            for future in pending:
                future.cancel()

    def stream(self, first, stop, read_ahead=READ_AHEAD):
        """Yield (i, batch i) for i in [first, stop), ``read_ahead`` reads ahead
        (`stream_reads`, each read cut into its batches).

        The consumer should drop each batch before asking for the next.
        """
        for i, j, rows in self.stream_reads(first, stop, read_ahead):
            start = int(self.starts[i])
            batches = [rows[self.starts[k] - start:self.starts[k + 1] - start]
                       for k in range(i, j)]
            rows = None
            for k in range(i, j):
                batch, batches[k - i] = batches[k - i], None
                yield k, batch
                batch = None
