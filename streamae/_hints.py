"""The fixes that messages about the data suggest, each fitted to its case.

A fix depends on what is wrong (NaN or Inf cannot be rescaled away; integers
want one scale for all values; a whitened store wants the linear decoder) and
on the interface (`streamae._errors.fix`: the command names commands and
flags, Python names functions and keywords). `check_before_training` runs
the cheap checks (the store's recorded metadata, its first chunk) before any
kernel compiles, so that a fit on bad data fails in a second, not after the
start-up.
"""

import os

import numpy as np

from ._errors import DataError, fix


def rescale_fix(dtype, nonfinite=False, out_of_range=True):
    """How to make data of ``dtype`` fit the sigmoid decoder's [0, 1].

    Parameters
    ----------
    dtype : numpy dtype
    nonfinite : bool
        The data hold NaN or Inf (no rescaling removes them).
    out_of_range : bool
        The data hold finite values outside [0, 1].

    Returns
    -------
    str
    """
    parts = []
    if nonfinite:
        parts.append("clean the data: remove the rows with NaN or inf, or replace those "
                     "values (rescaling does not remove them)")
    if out_of_range or not parts:
        parts.append(_scale_fix(np.dtype(dtype)))
    return "; then ".join(parts)


def _scale_fix(dtype):
    if dtype.kind in "iu":
        # Integers are usually pixels or counts on one scale: per-column min-max
        # would stretch each column (pixel) differently.
        over = f"divide them by {np.iinfo(dtype).max} or " if dtype.kind == "u" else ""
        return (f"the data are integers ({dtype.name}): {over}rescale them all with one "
                "scale, " + fix("`streamae import --scale minmax-all`",
                                "`streamae.import_array(src, out, scale='minmax-all')`"))
    return ("rescale it into [0, 1] with "
            + fix("`streamae import --scale minmax`, or train with --decoder linear (any "
                  "finite values)",
                  "`streamae.import_array(src, out, scale='minmax')` (or scikit-learn's "
                  "MinMaxScaler), or use `decoder='linear'` (any finite values)"))


def check_before_training(data, dataset, decoder, clip=False, storage_options=None):
    """Refuse data that cannot be trained on, as far as a cheap look tells.

    Looks at what the store recorded about itself (written by ``streamae
    whiten`` or ``streamae import``) and at its first chunk; the passes over
    the data check every row later.

    Parameters
    ----------
    data : the ``X`` given to ``fit``
    dataset : Dataset
        ``data`` opened, shape (m, n).
    decoder : {"sigmoid", "linear"}
    clip : bool
        Values are clipped into [0, 1] as they are read.
    storage_options : dict, optional

    Raises
    ------
    DataError
        Naming the store, what it holds and the fix.
    """
    sigmoid = decoder == "sigmoid" and not clip
    meta, array = _recorded(data, storage_options)
    if sigmoid and meta.get("kind") == "whitened":
        raise DataError(f"{dataset.source} holds whitened data (written by "
                        + fix("`streamae whiten`", "`streamae.whiten`") + "), whose values are "
                        "not confined to [0, 1]; train on it with `decoder='linear'`")
    low, high = (meta.get("value_range") or (0.0, 1.0)) if meta.get("kind") == "import" \
        else (0.0, 1.0)
    if sigmoid and (low < 0 or high > 1):
        raise DataError(f"{dataset.source} holds values from {low:g} to {high:g} (recorded "
                        "when it was imported); the sigmoid decoder needs values in [0, 1]: "
                        + _scale_fix(np.dtype(dataset.array.dtype)))
    if hasattr(data, "dask"):
        return  # a user's lazy graph: computing a chunk now would compute it twice
    _check_first_chunk(dataset, decoder, sigmoid, array if array is not None else data)


def _check_first_chunk(dataset, decoder, sigmoid, source):
    """Refuse NaN, Inf (and, for ``sigmoid``, values outside [0, 1]) in the first chunk
    of ``source`` (a Zarr array or an in-memory array: read directly, no graph)."""
    from ._data import describe_bad_values

    _, start, stop = dataset.locate_unit(0)
    if not hasattr(source, "__getitem__") or not hasattr(source, "shape"):
        return
    block = np.asarray(source[start:stop])
    if block.dtype.kind == "f":
        bad = ~np.isfinite(block)
        if sigmoid:
            bad |= (block < 0) | (block > 1)
    elif sigmoid:
        bad = (block < 0) | (block > 1)
    else:
        return
    if bad.any():
        row = start + int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataError(describe_bad_values(dataset, row, decoder))


def _recorded(data, storage_options=None):
    """The ``streamae`` attributes a store wrote about itself ({} if none), and the
    store as a ``zarr.Array`` (None for other data)."""
    import zarr

    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        kwargs = {"storage_options": storage_options} if "://" in path and storage_options \
            else {}
        try:
            data = zarr.open_array(path, mode="r", **kwargs)
        except Exception:  # not a Zarr array: open_dataset said so already
            return {}, None
    if not isinstance(data, zarr.Array):
        return {}, None
    meta = data.attrs.get("streamae")
    return (meta if isinstance(meta, dict) else {}), data
