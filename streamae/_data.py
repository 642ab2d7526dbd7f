"""Opening the user's data as a row-chunked Dask array, and describing it.

Accepted: a Zarr array path or fsspec URL, a ``zarr.Array``, a
``dask.array.Array`` or anything NumPy can turn into an array. The result is
a Dask array of shape (m, n) chunked along rows only, so that one task reads
one block of whole rows; nothing is loaded here.
"""

import asyncio
import atexit
import functools
import os
import uuid
from dataclasses import dataclass

import dask.array as da
import numpy as np
import zarr
from dask.highlevelgraph import HighLevelGraph

from ._chunkread import LocalChunks, RowSource, as_dask
from ._errors import DataError, fix, install_hint, zarr_reason
from ._hints import rescale_fix
from ._store import is_url
from ._validation import check_int

# A NumPy array given directly is cut into tasks of about this many bytes.
_NUMPY_TASK_BYTES = 32 * 2**20
# A Zarr array's small chunks are grouped into tasks of up to this many bytes
# (see task_rows): every task and every read of a chunk has a fixed cost
# (about 0.5 ms through Zarr, 0.1-0.2 ms in Dask) that would dominate for small
# chunks (10 KB chunks: 25x slower evaluations).
TASK_BYTES = 16 * 2**20
MIN_TASKS = 8


@dataclass(frozen=True)
class Dataset:
    """A row-chunked view of the user's data.

    Attributes
    ----------
    array : dask.array.Array of shape (m, n)
        One chunk along columns; row chunks are the unit of work (tasks).
    source : str
        How to name the data in messages (a path, URL or the input's type).
    unit_rows : int or None
        Rows per chunk (or shard) of the Zarr array the data comes from, the
        chunks that messages name; None for other inputs.
    reader : RowSource or None
        For a Zarr array: reads the row chunks of ``array`` by index inside the
        tasks that stream them (see `streamae._chunkread`); None for other
        inputs, whose chunks are read as tasks of ``array``'s graph.
    memory : ndarray of shape (m, n) or None
        For NumPy input: the array itself (``array`` is a chunked view of it),
        which the tasks take in runs of consecutive chunks.
    """

    array: da.Array
    source: str
    unit_rows: int = None
    reader: RowSource = None
    memory: np.ndarray = None

    @property
    def shape(self):
        return self.array.shape

    def locate_unit(self, row):
        """Index and [start, stop) rows of the chunk that messages name for ``row``."""
        if not self.unit_rows:
            return self.locate(row)
        i = row // self.unit_rows
        return i, i * self.unit_rows, min((i + 1) * self.unit_rows, self.shape[0])

    @property
    def row_starts(self):
        """Global index of the first row of each chunk, ndarray of shape (chunks + 1,)."""
        return np.concatenate([[0], np.cumsum(self.array.chunks[0])])

    def regrouped(self, rows):
        """This data in batches of ``rows`` rows, read from the same store (a
        Zarr array's dataset; other inputs are returned as they are: their
        batches are what the runner holds)."""
        if self.reader is None or rows == self.array.chunks[0][0]:
            return self
        store = self.reader.reader
        local = store if isinstance(store, LocalChunks) else None
        array = as_dask(store.array if local else store, rows, local)  # no rechunk graph
        readable = readable_dtype(array.dtype, self.source)
        if readable != array.dtype:
            array = array.astype(readable)
        starts = np.concatenate([[0], np.cumsum(array.chunks[0])])
        reader = RowSource(store, starts, self.source, self.unit_rows)
        return Dataset(array, self.source, self.unit_rows, reader, None)

    def locate(self, row):
        """Chunk index and its [start, stop) rows for a global row."""
        starts = self.row_starts
        i = int(np.searchsorted(starts, row, side="right") - 1)
        return i, int(starts[i]), int(starts[i + 1])


def input_name(data):
    """How metadata records the input ``data``: its path or URL, or its kind."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    if isinstance(data, zarr.Array):
        return f"Zarr array '{data.store_path}'"
    return "a Dask array" if isinstance(data, da.Array) else "a NumPy array"


def open_zarr_array(path, storage_options=None):
    """Open a Zarr array read-only at a local path or fsspec URL.

    Raises
    ------
    DataError
        If nothing is there or it is not a Zarr array.
    """
    path = os.fspath(path)
    if not is_url(path) and not os.path.exists(path):
        raise DataError(
            f"no data at '{path}': the path does not exist "
            "(check the path, or create a store with "
            + fix("`streamae import`", "`streamae.import_array`") + ")"
        )
    if not is_url(path) and os.path.isfile(path):
        raise DataError(not_a_store(path))
    kwargs = {"storage_options": storage_options} if is_url(path) and storage_options else {}
    if is_url(path):
        try:
            return zarr.open_array(path, mode="r", **kwargs)
        except Exception as exc:
            raise DataError(describe_url_error(path, exc, storage_options)) from None
    try:
        return zarr.open_array(path, mode="r", **kwargs)
    except (FileNotFoundError, KeyError) as exc:
        raise DataError(
            f"no Zarr array at '{path}' ({zarr_reason(exc)}); "
            "point to the array itself, not a group or a plain folder"
        ) from None
    except (ValueError, TypeError) as exc:
        # zarr 3 raises ValueError for a group ("Expected 'array'. Got 'group'.").
        raise DataError(f"cannot open '{path}' as a Zarr array ({exc}); point to the array "
                        "itself, not a group") from None


def not_a_store(path):
    """The message for a file given where a Zarr array (a folder) is expected."""
    stem, ext = os.path.splitext(os.path.basename(path))
    kind = {".npy": "a NumPy .npy file", ".csv": "a CSV file", ".txt": "a text file",
            ".npz": "a NumPy .npz archive"}.get(ext.lower(), "a file")
    fix = (f"convert it once with `streamae import {path} {stem}.zarr` (in Python "
           f"streamae.import_array) and use {stem}.zarr")
    if ext.lower() in (".csv", ".txt"):
        fix = (f"load it with numpy.loadtxt('{path}', delimiter=','), numpy.save it as "
               f"{stem}.npy, then {fix.replace(path, stem + '.npy')}")
    elif ext.lower() == ".npz":
        fix = f"save the array you want as a .npy file, then {fix.replace(path, stem + '.npy')}"
    return f"'{path}' is {kind}, not a Zarr array (a folder of chunks): {fix}"


_BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss", "r2")


def describe_url_error(url, exc, storage_options=None, action="read", what="Zarr array"):
    """One line for a failure to open ``url`` on an object store, and the fix.

    Names the URL, the endpoint's answer and what to check; never the
    credentials or other storage options. Also arranges for the requests that
    Zarr abandoned with this failure to end cleanly (`cancel_abandoned_requests`).
    """
    _cancel_abandoned_requests_at_exit()
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    name = type(exc).__name__
    if isinstance(exc, PermissionError) or "Credential" in name or "AccessDenied" in reason:
        what = "no credentials were found" if name == "NoCredentialsError" else reason
        return (f"access denied to '{url}' ({what}): check the credentials "
                "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the "
                f"environment; or `storage_options` key=... secret=...) and that they may "
                f"{action} this bucket")
    if isinstance(exc, ConnectionError) or "Connect" in name or "Timeout" in name:
        return (f"cannot reach the object store for '{url}' ({name}: {reason}); check the "
                "endpoint (the endpoint_url storage option or AWS_ENDPOINT_URL) and the network")
    if isinstance(exc, (FileNotFoundError, KeyError)):
        bucket = missing_bucket(url, storage_options)
        if bucket:
            return (f"no bucket '{bucket}' for '{url}': check the bucket name (and the "
                    "endpoint, for a store other than AWS)")
        hint = " and point to the array itself, not a group" if what == "Zarr array" else ""
        return f"no {what} at '{url}': nothing is stored under that key; check the path{hint}"
    if isinstance(exc, (ValueError, TypeError)):
        return (f"cannot open '{url}' as a Zarr array ({reason}); point to the array itself, "
                "not a group")
    if isinstance(exc, ImportError):  # fsspec's backend for the URL is not installed
        scheme = url.split("://", 1)[0]
        fix = (install_hint("s3") if scheme in ("s3", "s3a")
               else f"install fsspec's {scheme} backend")
        return f"cannot {action} '{url}' ({reason}); {fix}"
    return f"cannot {action} '{url}' ({name}: {reason})"


def cancel_abandoned_requests(timeout=5.0):
    """Cancel the object-store requests still pending in Zarr's event loop, and
    wait (up to ``timeout`` seconds) until they have unwound.

    Zarr sends some requests together (``asyncio.gather``: the metadata
    documents of an array, the arrays of a group); when one fails it raises at
    once and leaves the others pending in its event loop. At interpreter exit
    Zarr closes that loop, the pending requests are destroyed half-way, outside
    their context, and Python prints "Exception ignored in: <coroutine object
    FsspecStore.get ...>" with a traceback for each. Cancelled inside their
    loop, they unwind normally. Only call this when nothing else may still be
    reading or writing through Zarr in this process (at exit).
    """
    from zarr.core import sync as zarr_sync

    loop = zarr_sync.loop[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def cancel_others():
        this = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not this and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    try:
        asyncio.run_coroutine_threadsafe(cancel_others(), loop).result(timeout + 1)
    except Exception:  # the loop stopped meanwhile: nothing left to cancel
        pass


@functools.cache
def _cancel_abandoned_requests_at_exit():
    # Registered after Zarr's own exit handler, so it runs before Zarr closes its loop.
    atexit.register(cancel_abandoned_requests)


def missing_bucket(url, storage_options=None):
    """The bucket of ``url`` if the store says it does not exist, else None."""
    protocol = url.split("://", 1)[0].lower()
    if protocol not in _BUCKET_PROTOCOLS:
        return None
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        bucket = root.strip("/").split("/", 1)[0]
        return None if not bucket or fs.exists(bucket) else bucket
    except Exception:  # cannot tell: say nothing about the bucket
        return None


def open_dataset(data, chunk_rows=None, storage_options=None, page_cache="auto"):
    """Wrap the user's data as a `Dataset` without reading it.

    Parameters
    ----------
    data : str, os.PathLike, zarr.Array, dask.array.Array or array-like
        Shape (m, n), one sample per row.
    chunk_rows : int, optional
        Rows per task. Default: the Zarr array's chunk (or shard) rows, or as
        many whole chunks as make `TASK_BYTES` (16 MiB) if they are smaller; a
        Dask array's own row chunks; about 32 MiB per task for NumPy input.
    storage_options : dict, optional
        Passed to fsspec for URLs (endpoint, credentials).
    page_cache : {"auto", "direct", "drop", "keep"}
        How chunks of a local uncompressed store use the page cache (see
        `streamae._chunkread`): "auto" drops the pages of a store larger than
        half the memory after reading them.

    Returns
    -------
    Dataset
    """
    chunk_rows = check_int("chunk_rows", chunk_rows, 1, allow_none=True)
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
    unit = reader = memory = None
    if isinstance(data, zarr.Array):
        unit = int((data.shards or data.chunks)[0])
        rows = chunk_rows or task_rows(unit, n * np.dtype(data.dtype).itemsize, m)
        local = LocalChunks.for_array(data, page_cache)
        array = as_dask(data, rows, local)
        starts = np.concatenate([[0], np.cumsum(array.chunks[0])])
        reader = RowSource(local or data, starts, source, unit)
    elif isinstance(data, da.Array):
        array = data.rechunk({0: chunk_rows or data.chunks[0], 1: -1})
    else:
        rows = chunk_rows or max(1, _NUMPY_TASK_BYTES // max(1, n * data.dtype.itemsize))
        array = in_memory_array(data, min(rows, m))
        memory = data
    readable = readable_dtype(array.dtype, source)
    if readable != array.dtype:
        array = array.astype(readable)  # per chunk, as each task reads it
    return Dataset(array, source, unit, reader, memory)


def rows_dataset(reader, rows, source):
    """A `Dataset` of rows made or read by ``reader`` (any object with ``shape``
    (m, n), ``dtype`` and ``reader[rows, cols]`` slicing: an import's source
    file, generated patches), in batches of ``rows`` rows, streamed by the
    tasks of a `streamae._passes.Pass` as a Zarr store's are.

    Parameters
    ----------
    reader : object
    rows : int
    source : str
        How messages name the data.
    """
    array = da.from_array(reader, chunks=(rows, reader.shape[1]), asarray=False)
    starts = np.concatenate([[0], np.cumsum(array.chunks[0])])
    return Dataset(array, source, rows, RowSource(reader, starts, source, rows))


def array_of_blocks(blocks, name=None):
    """A Dask array whose row chunks are ``blocks`` themselves, not copies
    (`dask.array.from_array` copies its input).

    Parameters
    ----------
    blocks : list of ndarrays of shape (rows_i, n)
    name : str, optional
        The array's name; default a new random one (nothing is hashed).
    """
    name = name or f"streamae-blocks-{uuid.uuid4().hex}"
    layer = {(name, i, 0): block for i, block in enumerate(blocks)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    chunks = (tuple(b.shape[0] for b in blocks), (blocks[0].shape[1],))
    return da.Array(graph, name, chunks=chunks, dtype=blocks[0].dtype)


def in_memory_array(data, rows):
    """``data`` (ndarray of shape (m, n)) as a Dask array of views of it, in
    chunks of ``rows`` rows (an int, or a tuple of each chunk's rows)."""
    m = data.shape[0]
    sizes = rows if isinstance(rows, tuple) else (rows,) * (m // rows) + (
        (m % rows,) if m % rows else ())
    stops = np.cumsum(sizes).tolist()
    return array_of_blocks([data[stop - size:stop] for size, stop in zip(sizes, stops)])


def readable_dtype(dtype, source):
    """The dtype the kernels read data of ``dtype`` as: native byte order, float16
    widened to float32 (exactly); integers and float32/64 as they are.

    Raises
    ------
    DataError
        For floats wider than 64 bits, which would lose precision silently.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize > 8:
        raise DataError(f"{source} has dtype {dtype} ({dtype.itemsize * 8}-bit floats), wider "
                        "than the kernels compute in; convert it to float64 first ("
                        + fix("`streamae import --dtype float64`",
                              "`streamae.import_array(src, out, dtype='float64')`") + ")")
    if dtype.kind == "f" and dtype.itemsize < 4:
        return np.dtype(np.float32)
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    return dtype.newbyteorder("=") if not dtype.isnative else dtype


def as_readable(block):
    """A batch as the kernels read it: C-contiguous, of `readable_dtype` (native
    byte order, float16 as float32, booleans as uint8), a view when it already is."""
    block = np.asarray(block)
    return np.ascontiguousarray(block, dtype=readable_dtype(block.dtype, "the data"))


def task_rows(unit_rows, row_bytes, m):
    """Rows per task: as many whole chunks of ``unit_rows`` rows as fit in
    `TASK_BYTES` (at least one), but no fewer than `MIN_TASKS` tasks when the
    data has that many chunks, so that small data still uses every core.

    Depends only on the data's layout (never on the machine): the tasks fix the
    order of the floating-point additions, so the same data gives the same bits
    everywhere.
    """
    units = -(-m // unit_rows)
    group = min(TASK_BYTES // max(1, unit_rows * row_bytes), -(-units // MIN_TASKS))
    return unit_rows * max(1, group)


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
    if dtype.kind == "c":
        raise DataError(
            f"{source} has complex dtype {dtype}; streamae trains on real values (Complex "
            "data not supported): keep the real part or the magnitude (numpy.abs) and save that")
    if dtype.kind not in "fiub":
        raise DataError(
            f"{source} has non-numeric dtype {dtype}; convert it to float32 or float64 "
            "with values in [0, 1]"
        )


def describe_bad_values(dataset, row, decoder="sigmoid"):
    """One line naming what is wrong near ``row``: the chunk, rows and values.

    Reads only the chunk that holds ``row``. With ``decoder="linear"`` only
    NaN and Inf are wrong; with the sigmoid decoder, also values outside [0, 1].
    """
    i, start, stop = dataset.locate_unit(row)
    block = np.asarray(dataset.array[start:stop].compute(scheduler="synchronous"), np.float64)
    nan = np.isnan(block)
    inf = np.isinf(block)
    out = ~nan & ~inf & ((block < 0) | (block > 1)) & (decoder != "linear")
    parts = []
    for mask, what in ((nan, "NaN"), (inf, "inf")):
        if mask.any():
            rows = np.flatnonzero(mask.any(axis=1)) + start
            parts.append(f"{int(mask.sum())} {what} value(s) in rows {_rows(rows)}")
    if out.any():
        rows = np.flatnonzero(out.any(axis=1)) + start
        lo, hi = block[out].min(), block[out].max()
        parts.append(f"{int(out.sum())} value(s) outside [0, 1] (from {lo:g} to {hi:g}) "
                     f"in rows {_rows(rows)}")
    if decoder == "linear":
        found = "; ".join(parts) or "values that are not finite"
        return (f"{dataset.source}, chunk {i} (rows {start}-{stop - 1}): {found}; the linear "
                "decoder needs finite values: clean the data")
    found = "; ".join(parts) or "values outside [0, 1]"
    return (f"{dataset.source}, chunk {i} (rows {start}-{stop - 1}): {found}; the sigmoid "
            f"decoder needs finite values in [0, 1]: "
            f"{rescale_fix(dataset.array.dtype, bool(nan.any() or inf.any()), bool(out.any()))}")


def _rows(rows):
    shown = ", ".join(str(r) for r in rows[:5])
    return shown + (f", ... ({rows.size} rows)" if rows.size > 5 else "")
