"""``streamae import``: bring a user's array into a row-chunked Zarr store.

Sources: a ``.npy`` file (memory-mapped; each task maps it afresh and reads
only its rows, so it is never loaded whole) or an existing Zarr array (local
path or URL; read one block of rows at a time and rechunked by rows).

Optional min-max scaling into [0, 1], streamed: pass 1 takes the minimum
and maximum (per column, or over all values), pass 2 writes
``(x - min) / (max - min)`` (0 where max == min). The scale is recorded in
the store's attributes (``attrs["streamae"]["scale"]``) so that new data can
be brought to the same scale (``--scale-from``, `apply_scale`).

Every value is checked: NaN or infinite values stop the import with the
rows named, and nothing is left at the output path.
"""

from __future__ import annotations

import os

import dask
import numpy as np

from ._cluster import make_runner
from ._data import open_zarr_array
from ._errors import DataError, ParameterError
from ._options import with_legacy_options
from ._output import default_chunk_rows, open_for_writing, set_attrs, staged_array

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

    def __dask_tokenize__(self):
        return ("streamae-import-source", self.path)

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


def _chunk_range(source, start, stop, per_column):
    block = source.rows(start, stop)
    count, shown = _bad_rows(block, start)
    if count:
        return None, None, (count, shown, start, stop)
    if per_column:
        return (block.min(axis=0).astype(np.float64), block.max(axis=0).astype(np.float64),
                None)
    return float(block.min()), float(block.max()), None


def _raise_bad(source, count, shown, start, stop):
    raise DataError(
        f"'{source.path}', rows {start}-{stop - 1}: {count} NaN or infinite value(s) in rows "
        f"{shown}; remove or replace them (e.g. numpy.nan_to_num) and import again")


def data_range(source, rows, per_column, runner):
    """Pass 1: minimum and maximum (per column or overall); checks finiteness.
    Exact in any order, so the same on every scheduler."""
    src = dask.delayed(source, name=f"import-source-{id(source)}")
    m = source.shape[0]
    parts = runner.compute(*[dask.delayed(_chunk_range, pure=False)(src, s, min(s + rows, m),
                                                                    per_column)
                             for s in range(0, m, rows)])
    for _, _, bad in parts:
        if bad:
            _raise_bad(source, *bad)
    lo = np.min([p[0] for p in parts], axis=0)
    hi = np.max([p[1] for p in parts], axis=0)
    return lo, hi


def _chunk_copy(source, start, stop, scale, target, dtype, storage_options):
    block = source.rows(start, stop)
    count, shown = _bad_rows(block, start)
    if count:
        return None, None, (count, shown, start, stop)
    out = np.empty(block.shape, dtype)
    for a in range(0, block.shape[0], _SCALE_ROWS):
        out[a:a + _SCALE_ROWS] = apply_scale(block[a:a + _SCALE_ROWS], scale)
    del block
    open_for_writing(target, storage_options)[start:stop] = out
    return float(out.min()), float(out.max()), None


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


def _scale_of(source, src, scale, scale_from, rows, runner, storage_options):
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
    lo, hi = data_range(source, rows, (scale == "minmax"), runner)
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
        output chunk, default about 16 MiB (one task reads and writes one chunk).
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
        scale_meta = _scale_of(source, src, scale, scale_from, rows, runner, storage_options)
        return _copy_pass(source, src, out, rows, scale_meta, out_dtype, overwrite, runner,
                          storage_options)


def _copy_pass(source, src, out, rows, scale_meta, out_dtype, overwrite, runner,
               storage_options):
    """Pass 2: every output chunk read, scaled and written by one task; the metadata."""
    m, n = source.shape
    src_d = dask.delayed(source, name=f"import-source-{id(source)}")
    with staged_array(out, shape=(m, n), chunks=(rows, n), dtype=out_dtype,
                      overwrite=overwrite, storage_options=storage_options,
                      what="output store") as target:
        parts = runner.compute(*[dask.delayed(_chunk_copy, pure=False)(
            src_d, s, min(s + rows, m), scale_meta, target, out_dtype, storage_options)
            for s in range(0, m, rows)])
        for _, _, bad in parts:
            if bad:
                _raise_bad(source, *bad)
        value_range = [min(p[0] for p in parts), max(p[1] for p in parts)]
        meta = {"kind": "import", "source": os.fspath(src), "source_dtype": str(source.dtype),
                "shape": [m, n], "dtype": out_dtype.name, "chunk_rows": rows,
                "scale": scale_meta, "value_range": value_range}
        set_attrs(target, {"streamae": meta}, storage_options)
    return meta
