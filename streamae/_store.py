"""Model files: a Zarr group with W1, b1, W2, b2 and hyperparameters as attributes.

Local models are written under a temporary name beside the target and renamed
into place, so an interrupted write never leaves a half-written model where
the user expects one, and an existing model survives a failed overwrite.
"""

import json
import os
import shutil
import uuid

import numpy as np
import zarr

from ._errors import DataError, OutputExistsError
from ._objective import PARAM_NAMES

FORMAT = "streamae-model"
FORMAT_VERSION = 1


def _is_url(path):
    return "://" in str(path)


def _exists(path, storage_options=None):
    if _is_url(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        return fs.exists(root)
    return os.path.exists(path)


def check_writable(path, overwrite, storage_options=None, what="output"):
    """Refuse an existing ``path`` unless ``overwrite``."""
    if not overwrite and _exists(path, storage_options):
        raise OutputExistsError(
            f"{what} '{path}' already exists; choose another path or pass --overwrite "
            "(overwrite=True) to replace it")


def _write_group(target, params, attrs, storage_options=None):
    kwargs = {"storage_options": storage_options} if storage_options else {}
    group = zarr.open_group(target, mode="w", **kwargs)
    for name in PARAM_NAMES:
        arr = np.asarray(params[name], np.float64)
        group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape)[...] = arr
    # JSON round trip: attributes must be plain JSON (no NumPy scalars).
    group.attrs.update(json.loads(json.dumps(
        {"format": FORMAT, "format_version": FORMAT_VERSION, **attrs}, default=float)))


def write_model(path, params, attrs, overwrite=False, storage_options=None):
    """Write a model group at ``path`` (local directory or fsspec URL)."""
    path = os.fspath(path)
    check_writable(path, overwrite, storage_options, what="model")
    if _is_url(path):
        _write_group(path, params, attrs, storage_options)
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        _write_group(tmp, params, attrs)
        if os.path.exists(path):
            old = tmp + ".old"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def read_model(path, storage_options=None):
    """Read ``(params, attrs)`` of a model written by `write_model`."""
    path = os.fspath(path)
    if not _is_url(path) and not os.path.exists(path):
        raise DataError(f"no model at '{path}': the path does not exist (check the path)")
    kwargs = {"storage_options": storage_options} if _is_url(path) and storage_options else {}
    try:
        group = zarr.open_group(path, mode="r", **kwargs)
        attrs = dict(group.attrs)
    except Exception as exc:  # zarr raises several types for "not a group"
        raise DataError(f"'{path}' is not a streamae model ({type(exc).__name__}: {exc}); "
                        "give the directory written by `streamae train --out`") from None
    if attrs.get("format") != FORMAT:
        raise DataError(f"'{path}' is not a streamae model (no '{FORMAT}' format attribute); "
                        "give the directory written by `streamae train --out`")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"model '{path}' has format version {attrs.get('format_version')}, this streamae "
            f"reads version {FORMAT_VERSION}; install the streamae version that wrote it")
    try:
        params = {name: np.asarray(group[name][...], np.float64) for name in PARAM_NAMES}
    except Exception as exc:
        raise DataError(f"model '{path}' is damaged: cannot read its weights "
                        f"({type(exc).__name__}: {exc}); retrain or restore it") from None
    return params, attrs


def write_array(path, array, chunk_rows, attrs=None, overwrite=False):
    """Write an in-memory (m, n) array as a Zarr array chunked by rows.

    Returns
    -------
    zarr.Array
        The written array, open for reading.
    """
    path = os.fspath(path)
    check_writable(path, overwrite, what="store")
    array = np.asarray(array)
    rows = max(1, min(int(chunk_rows), array.shape[0]))
    z = zarr.create_array(path, shape=array.shape, chunks=(rows, array.shape[1]),
                          dtype=array.dtype, overwrite=overwrite)
    z[...] = array
    if attrs:
        z.attrs.update(json.loads(json.dumps(attrs, default=float)))
    return zarr.open_array(path, mode="r")
