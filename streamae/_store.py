"""Model files: a Zarr group with W1, b1, W2, b2 and hyperparameters as attributes.

Local models (and stores written by `write_array`) are written atomically
(`streamae._atomic.staged`): an interrupted or failed write (disk full,
permission denied) never leaves a half-written output where the user expects
one, and an existing output survives a failed overwrite; the error says so
in one line (`OutputWriteError`).
"""

import json
import os

import numpy as np
import zarr

from ._atomic import staged
from ._constants import PARAM_NAMES
from ._errors import DataError, OutputExistsError, OutputWriteError, fix, zarr_reason

FORMAT = "streamae-model"
FORMAT_VERSION = 1


def _give_model():
    """Where a model comes from, in the words of the interface in use."""
    return fix("give the model folder that `streamae train --out` wrote",
               "give the model folder that `SparseAutoencoder.save` (or `streamae train "
               "--out`) wrote")


def _url_error(*args):
    # streamae._data (and Dask with it) is only needed for URLs.
    from ._data import describe_url_error

    return describe_url_error(*args)


def is_url(path):
    """Whether ``path`` (str or os.PathLike) is an fsspec URL rather than a local path."""
    return "://" in os.fspath(path)


def exists(path, storage_options=None):
    """True if the local path or URL ``path`` exists."""
    if is_url(path):
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
            return fs.exists(root)
        except Exception as exc:
            raise OutputWriteError(_url_error(path, exc, storage_options, "write",
                                                      "output")) from None
    return os.path.exists(path)


def check_writable(path, overwrite, storage_options=None, what="output"):
    """Refuse an existing ``path`` unless ``overwrite``, and a local ``path`` whose
    directory cannot be created or written (checked before any work is done)."""
    if not overwrite and exists(path, storage_options):
        raise OutputExistsError(
            f"{what} '{path}' already exists; choose another path or pass "
            "`overwrite=True` to replace it")
    if is_url(path):
        from ._data import missing_bucket

        bucket = missing_bucket(path, storage_options)
        if bucket:
            raise OutputWriteError(f"cannot write {what} '{path}': no bucket '{bucket}' (check "
                                   "the bucket name, and the endpoint for a store other than "
                                   "AWS); nothing was written")
        return
    parent = os.path.dirname(os.fspath(path).rstrip("/")) or "."
    while not os.path.exists(parent) and os.path.dirname(parent) not in ("", parent):
        parent = os.path.dirname(parent)
    if not os.path.exists(parent):
        parent = "."
    if not os.path.isdir(parent):
        raise OutputWriteError(
            f"cannot write {what} '{path}' ('{parent}' is not a directory); nothing was written")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputWriteError(
            f"cannot write {what} '{path}' (Permission denied on '{parent}'); "
            "nothing was written")


def _write_group(target, params, attrs, storage_options=None):
    kwargs = {"storage_options": storage_options} if storage_options else {}
    group = zarr.open_group(target, mode="w", **kwargs)
    for name in PARAM_NAMES:
        arr = np.asarray(params[name], np.float64)
        group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape)[...] = arr
    # JSON round trip: attributes must be plain JSON (no NumPy scalars).
    group.attrs.update(json.loads(json.dumps(
        {"format": FORMAT, "format_version": FORMAT_VERSION, **attrs}, default=float)))


def write_model(path, params, attrs, overwrite=False, storage_options=None, keep=()):
    """Write a model group at ``path`` (local directory or fsspec URL).

    ``keep`` names files of an existing local ``path`` (the checkpoint of the
    run that trained these weights) that the new model keeps: they are
    hard-linked into it before it replaces the old one, so a crash at any
    instant leaves them in one of the two.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and not ``overwrite``.
    OutputWriteError
        If writing a local model fails; an existing model is unchanged.
    """
    path = os.fspath(path)
    check_writable(path, overwrite, storage_options, what="model")
    if is_url(path):
        # Object stores have no rename: the group is written in place.
        try:
            _write_group(path, params, attrs, storage_options)
        except Exception as exc:
            raise OutputWriteError(_url_error(path, exc, storage_options, "write",
                                                      "model")) from None
        return
    with staged(path, "model") as tmp:
        _write_group(tmp, params, attrs)
        for name in keep:
            _carry(os.path.join(path, name), os.path.join(tmp, name))


def _carry(src, dst):
    """``src`` also at ``dst`` (same file system): a hard link, or a copy where links
    are not allowed."""
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copy2(src, dst)


def read_model(path, storage_options=None):
    """Read ``(params, attrs)`` of a model written by `write_model`."""
    path = os.fspath(path)
    if not is_url(path) and not os.path.exists(path):
        raise DataError(f"no model at '{path}': the path does not exist (check the path)")
    kwargs = {"storage_options": storage_options} if is_url(path) and storage_options else {}
    try:
        group = zarr.open_group(path, mode="r", **kwargs)
        attrs = dict(group.attrs)
    except Exception as exc:  # zarr raises several types for "not a group"
        if is_url(path) and (isinstance(exc, (OSError, KeyError))
                              or type(exc).__module__.startswith(("botocore", "aiohttp"))):
            raise DataError(_url_error(path, exc, storage_options, "read",
                                               "model")) from None
        raise DataError(f"'{path}' is not a streamae model ({zarr_reason(exc)}); "
                        f"{_give_model()}") from None
    if attrs.get("format") != FORMAT:
        raise DataError(f"'{path}' is not a streamae model (no '{FORMAT}' format attribute); "
                        f"{_give_model()}")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"model '{path}' has format version {attrs.get('format_version')}, this streamae "
            f"reads version {FORMAT_VERSION}; install the streamae version that wrote it")
    params = {}
    for name in PARAM_NAMES:
        try:
            params[name] = np.asarray(group[name][...], np.float64)
        except Exception as exc:
            raise DataError(f"model '{path}' is damaged: cannot read its weights {name} "
                            f"({zarr_reason(exc)}); retrain or restore it") from None
    return params, attrs


def write_array(path, array, chunk_rows, attrs=None, overwrite=False):
    """Write an in-memory (m, n) array as a Zarr array chunked by rows.

    A local store is written atomically, like `write_model`.

    Returns
    -------
    zarr.Array
        The written array, open for reading.
    """
    path = os.fspath(path)
    check_writable(path, overwrite, what="store")
    array = np.asarray(array)
    rows = max(1, min(int(chunk_rows), array.shape[0]))

    def write(target, overwrite=False):
        z = zarr.create_array(target, shape=array.shape, chunks=(rows, array.shape[1]),
                              dtype=array.dtype, overwrite=overwrite)
        z[...] = array
        if attrs:
            z.attrs.update(json.loads(json.dumps(attrs, default=float)))

    if is_url(path):
        write(path, overwrite)
    else:
        with staged(path, "store") as tmp:
            write(tmp)
    return zarr.open_array(path, mode="r")
