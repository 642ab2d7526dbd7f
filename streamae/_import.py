"""``streamae import``: bring a user's array into a row-chunked Zarr store.

Sources: a ``.npy`` file (memory-mapped; each task maps it afresh and reads
only its rows, so it is never loaded whole) or an existing Zarr array (local
path or URL; read one block of rows at a time and rechunked by rows).

Optional min-max scaling into [0, 1], streamed: pass 1 takes the minimum
and maximum (per column, or over all values), pass 2 writes
``(x - min) / (max - min)`` (0 where max == min). The scale is recorded in
the store's attributes (``attrs["streamae"]["scale"]``) so that new data can
be brought to the same scale (``--scale-from``, `apply_scale`).

The passes are passes like every other (`streamae._passes.Pass`, over the
source as rows: `streamae._data.rows_dataset`): tasks stream runs of
batches, whatever the chunk count.

Every value is checked: NaN or infinite values stop the import with the
rows named, and nothing is left at the output path.
"""

from __future__ import annotations

import os

import numpy as np

from ._cluster import make_runner
from ._data import open_zarr_array, rows_dataset
from ._errors import DataError, ParameterError
from ._options import with_legacy_options
from ._output import default_chunk_rows, set_attrs, staged_array
from ._passes import OutputChunks, Pass

SCALES = ("none", "minmax", "minmax-all")


# ---------------------------------------------------------------- sources

class _Source:
    """Rows of a .npy file or a Zarr array, read one block at a time."""

    def __init__(self, path, storage_options=None):
        self.path = os.fspath(path)
        self.storage_options = storage_options
        if self.path.endswith(".npy"):
            self.kind = "npy"
            if not os.path.isfile(self.path):
                raise DataError(f"no file '{self.path}' (check the path)")
            try:
                mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise DataError(f"cannot read '{self.path}' as a .npy array ({exc}); save it "
                                "with numpy.save from a numeric array") from None
            self.shape, self.dtype = mm.shape, mm.dtype
            del mm
            self.zarr = None
        elif self.path.endswith((".npz", ".csv", ".txt", ".parquet", ".h5", ".hdf5", ".mat")):
            raise DataError(f"'{self.path}' is not a .npy file or a Zarr array; save the array "
                            "with numpy.save(path.npy, array) and import that")
        else:
            self.kind = "zarr"
            self.zarr = open_zarr_array(self.path, storage_options)
            self.shape, self.dtype = self.zarr.shape, self.zarr.dtype
        name = f"'{self.path}'"
        if len(self.shape) != 2:
            raise DataError(
                f"{name} has shape {tuple(self.shape)} ({len(self.shape)}-D); streamae needs "
                "(samples, features): save it reshaped, e.g. a.reshape(len(a), -1)")
        if 0 in self.shape:
            raise DataError(f"{name} is empty (shape {tuple(self.shape)})")
        if np.dtype(self.dtype).kind not in "fiub":
            raise DataError(f"{name} has non-numeric dtype {self.dtype}; convert it to numbers")

    ndim = 2

    def __dask_tokenize__(self):
        return ("streamae-import-source", self.path)

    def __getitem__(self, selection):
        """``source[rows, cols]`` (slices): what a `streamae._chunkread.RowSource` reads."""
        rows, cols = selection
        start, stop, _ = rows.indices(self.shape[0])
        return self.rows(start, stop)[:, cols]


    def rows(self, start, stop):
        """Rows ``start .. stop-1`` as an in-memory array of the source's dtype."""
        if self.kind == "npy":
            mm = np.load(self.path, mmap_mode="r")
            try:
                return np.array(mm[start:stop])
            finally:
                # Drop the mapping so the pages read do not stay in this
                # process's resident memory.
                del mm
        return np.asarray(self.zarr[start:stop])


# Rows converted to float64 at a time when scaling (keeps temporaries small).
_SCALE_ROWS = 8192


def _bad_rows(block, start):
    """(count, rows shown) of NaN/Inf values in ``block``; (0, "") if none."""
    if block.dtype.kind != "f" or np.isfinite(block).all():
        return 0, ""
    bad = ~np.isfinite(block)
    rows = np.flatnonzero(bad.any(axis=1)) + start
    shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if rows.size > 5 else "")
    return int(bad.sum()), shown


# ---------------------------------------------------------------- scale

def apply_scale(block, scale):
    """Apply a recorded scale to rows of data.

    Parameters
    ----------
    block : array_like of shape (rows, n)
    scale : dict
        ``attrs["streamae"]["scale"]`` of an imported store: ``method``
        "minmax" (per column ``min``/``max`` lists) or "minmax-all" (scalars),
        or "none".

    Returns
    -------
    ndarray of shape (rows, n), float64
        ``(x - min) / (max - min)``, 0 where ``max == min``. Data outside the
        recorded range maps outside [0, 1].
    """
    x = np.asarray(block, np.float64)
    if scale is None or scale.get("method", "none") == "none":
        return x
    lo = np.asarray(scale["min"], np.float64)
    span = np.asarray(scale["max"], np.float64) - lo
    return (x - lo) / np.where(span > 0, span, 1.0)


def _range_of(block, row0, per_column):
    """(min, max, None) of a batch (per column or overall), or (None, None, bad
    record) if it holds NaN or Inf: pass 1's kernel."""
    count, shown = _bad_rows(block, row0)
    if count:
        return None, None, (count, shown, row0, row0 + len(block))
    if per_column:
        return block.min(axis=0).astype(np.float64), block.max(axis=0).astype(np.float64), None
    return float(block.min()), float(block.max()), None


def merge_ranges(*parts):
    """(min, max, bad) of consecutive batches: the first bad record in order,
    else the minimum and maximum (exact in any grouping)."""
    for _, _, bad in parts:
        if bad:
            return None, None, bad
    return (np.min([p[0] for p in parts], axis=0), np.max([p[1] for p in parts], axis=0),
            None)


def _raise_bad(source, count, shown, start, stop):
    raise DataError(
        f"'{source.path}', rows {start}-{stop - 1}: {count} NaN or infinite value(s) in rows "
        f"{shown}; remove or replace them (e.g. numpy.nan_to_num) and import again")


def data_range(data_pass, source, per_column):
    """Pass 1: minimum and maximum (per column or overall); checks finiteness.
    A reduction pass (`streamae._passes.Pass.reduce`); exact in any order, so
    the same on every scheduler."""
    lo, hi, bad = data_pass.reduce(_range_of, per_column, combine=merge_ranges)
    if bad:
        _raise_bad(source, *bad)
    return lo, hi


def _scaled_rows(block, row0, scale, dtype):
    """A batch scaled into the output dtype, and its (min, max, bad) record:
    pass 2's kernel (rows with NaN or Inf are recorded; the import then fails)."""
    count, shown = _bad_rows(block, row0)
    out = np.zeros(block.shape, dtype)
    if count:
        return out, (None, None, (count, shown, row0, row0 + len(block)))
    for a in range(0, block.shape[0], _SCALE_ROWS):
        out[a:a + _SCALE_ROWS] = apply_scale(block[a:a + _SCALE_ROWS], scale)
    return out, (float(out.min()), float(out.max()), None)


def _output_dtype(source_dtype, dtype):
    if dtype is not None:
        if str(dtype) not in ("float32", "float64"):
            raise ParameterError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        return np.dtype(dtype)
    src = np.dtype(source_dtype)
    # float32 holds every integer up to 2**24 exactly: enough for 8- and
    # 16-bit data; wider integers and float64 keep float64.
    wide = src == np.float64 or (src.kind in "iu" and src.itemsize >= 4)
    return np.dtype("float64") if wide else np.dtype("float32")


def read_scale(store, storage_options=None):
    """The scale recorded by `import_array` in a store's attributes."""
    z = open_zarr_array(store, storage_options)
    scale = dict(z.attrs).get("streamae", {}).get("scale")
    if not scale or scale.get("method", "none") == "none":
        raise DataError(f"'{store}' has no recorded scale (it was not written by "
                        "`streamae import --scale ...`); give a store imported with "
                        "`scale='minmax'` or `scale='minmax-all'`")
    return scale


def _scale_of(data_pass, source, src, scale, scale_from, storage_options):
    """The scale `import_array` applies, as recorded in the output's metadata:
    ``scale_from``'s, none, or the data's min and max (one pass)."""
    n = source.shape[1]
    if scale_from is not None:
        recorded = read_scale(scale_from, storage_options)
        width = np.size(recorded.get("min", 0))
        if recorded.get("method") == "minmax" and width != n:
            raise DataError(f"'{src}' has {n} columns but the scale of '{scale_from}' has "
                            f"{width}; use a store imported from data of the same width")
        return {**recorded, "from": os.fspath(scale_from)}
    if scale == "none":
        return {"method": "none"}
    lo, hi = data_range(data_pass, source, scale == "minmax")
    return {"method": scale, "axis": "column" if scale == "minmax" else "all",
            "min": np.asarray(lo).tolist(), "max": np.asarray(hi).tolist(),
            "formula": "(x - min) / (max - min), 0 where max == min"}


def import_array(src, out, *, scale="none", scale_from=None, dtype=None, overwrite=False,
                 run_options=None, chunk_rows=None, scheduler=None, storage_options=None):
    """Copy a .npy file or Zarr array into a new row-chunked Zarr array.

    Parameters
    ----------
    src : str or os.PathLike
        A ``.npy`` file or a Zarr array (path or URL), shape (samples, features).
    out : str or os.PathLike
        Zarr array to create.
    scale : {"none", "minmax", "minmax-all"}
        "minmax": each column to [0, 1] by its own min and max (like
        scikit-learn's MinMaxScaler); "minmax-all": one min and max over all
        values (keeps pixels comparable); "none": copy values.
    scale_from : str, optional
        A store written by `import_array` whose recorded scale to apply
        (instead of ``scale``), so new data is encoded like the training data.
    dtype : {"float32", "float64"}, optional
        Default: float64 for float64 and 32/64-bit integer input, float32
        otherwise (float32 holds integers up to 2**24 exactly).
    overwrite : bool
    run_options : RunOptions or dict, optional
        Where the tasks run (``scheduler``, ``workers``; a cluster's workers
        must see ``src``), ``storage_options``, and ``chunk_rows``: rows per
        output chunk, default about 16 MiB (the batches tasks read and write).
    chunk_rows, scheduler, storage_options
        Deprecated: give them in ``run_options`` (a `FutureWarning`).

    Returns
    -------
    dict
        The metadata recorded in the store's ``streamae`` attribute; also
        ``value_range``, the minimum and maximum written.
    """
    options = with_legacy_options(run_options, "import_array", chunk_rows=chunk_rows,
                                  scheduler=scheduler, storage_options=storage_options)
    storage_options = options.storage_options
    if scale not in SCALES:
        raise ParameterError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if scale_from is not None and scale != "none":
        raise ParameterError("give either `scale` or `scale_from`, not both")
    from ._store import check_writable
    check_writable(out, overwrite, storage_options, what="output store")
    source = _Source(src, storage_options)
    m, n = source.shape
    out_dtype = _output_dtype(source.dtype, dtype)
    rows = min(m, int(options.chunk_rows or default_chunk_rows(m, n, out_dtype.itemsize)))
    runner = make_runner(options.scheduler, options.workers)
    with runner.session():
        data_pass = Pass(rows_dataset(source, rows, f"'{source.path}'"), runner,
                         options.split_every, options.read_ahead)
        scale_meta = _scale_of(data_pass, source, src, scale, scale_from, storage_options)
        return _copy_pass(data_pass, source, src, out, scale_meta, out_dtype, overwrite,
                          storage_options)


def _copy_pass(data_pass, source, src, out, scale_meta, out_dtype, overwrite,
               storage_options):
    """Pass 2, a written pass (`streamae._passes.Pass.write`): every batch read,
    scaled and written in whole output chunks; the metadata."""
    m, n = source.shape
    rows = data_pass.batch_rows
    with staged_array(out, shape=(m, n), chunks=(rows, n), dtype=out_dtype,
                      overwrite=overwrite, storage_options=storage_options,
                      what="output store") as target:
        _, (lo, hi, bad) = data_pass.write(
            OutputChunks(target, rows, out_dtype, storage_options), _scaled_rows, scale_meta,
            out_dtype, combine=merge_ranges)
        if bad:
            _raise_bad(source, *bad)
        value_range = [float(lo), float(hi)]
        meta = {"kind": "import", "source": os.fspath(src), "source_dtype": str(source.dtype),
                "shape": [m, n], "dtype": out_dtype.name, "chunk_rows": rows,
                "scale": scale_meta, "value_range": value_range}
        set_attrs(target, {"streamae": meta}, storage_options)
    return meta
