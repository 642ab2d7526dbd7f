"""Model files: a Zarr group with W1, b1, W2, b2 and hyperparameters as attributes.

Local models (and stores written by `write_array`) are written under a
temporary name beside the target, flushed to disk (every file and directory
fsync'ed), and only then moved into place: a new output by one rename, a
replaced one by an atomic exchange of the two directories (Linux
``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, undone on failure).
An interrupted or failed write (disk full, permission denied) never leaves a
half-written output where the user expects one, and an existing output
survives a failed overwrite; the error says so in one line
(`OutputWriteError`).
"""

import ctypes
import errno
import glob
import json
import os
import shutil
import uuid

import numpy as np
import zarr

from ._data import describe_url_error, missing_bucket
from ._errors import DataError, OutputExistsError, StreamaeError
from ._objective import PARAM_NAMES


class OutputWriteError(StreamaeError, OSError):
    """Writing an output failed (disk full, permission denied...); whatever was
    at the path before is unchanged."""

FORMAT = "streamae-model"
FORMAT_VERSION = 1


def _is_url(path):
    return "://" in str(path)


def _exists(path, storage_options=None):
    if _is_url(path):
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
            return fs.exists(root)
        except Exception as exc:
            raise OutputWriteError(describe_url_error(path, exc, storage_options, "write",
                                                      "output")) from None
    return os.path.exists(path)


def check_writable(path, overwrite, storage_options=None, what="output"):
    """Refuse an existing ``path`` unless ``overwrite``, and a local ``path`` whose
    directory cannot be created or written (checked before any work is done)."""
    if not overwrite and _exists(path, storage_options):
        raise OutputExistsError(
            f"{what} '{path}' already exists; choose another path or pass "
            "`overwrite=True` to replace it")
    if _is_url(path):
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


def fsync_path(path):
    """fsync a file, or a directory and everything below it (local paths only)."""
    if os.path.isdir(path):
        for root, _dirs, files in os.walk(path, topdown=False):
            for name in files:
                fsync_path(os.path.join(root, name))
            _fsync_fd(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    else:
        _fsync_fd(path, os.O_RDONLY)


def fsync_dir(path):
    """fsync one directory, so that a rename inside it is on disk."""
    _fsync_fd(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync_fd(path, flags):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _exchange(a, b):
    """Swap the paths ``a`` and ``b`` (both exist): atomically where the OS can."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), b)
    # Fallback: two renames; a failure of the second puts ``b`` back.
    side = a + ".swap"
    os.rename(b, side)
    try:
        os.rename(a, b)
    except OSError:
        os.rename(side, b)
        raise
    os.rename(side, a)


def publish(tmp, path, what="output"):
    """Move the finished local output ``tmp`` to ``path``, durably.

    ``tmp`` must be a sibling of ``path``. Everything under ``tmp`` is
    fsync'ed first; an existing ``path`` is exchanged with ``tmp`` (so ``tmp``
    then holds the old output, for the caller to remove); the parent directory
    is fsync'ed last.

    Raises
    ------
    OutputWriteError
        On any OS error; ``path`` is then as it was before.
    """
    existed = os.path.lexists(path)
    try:
        fsync_path(tmp)
        if existed:
            _exchange(tmp, path)
        else:
            os.rename(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        raise write_error(exc, path, what, existed) from exc


def write_error(exc, path, what, existed):
    """The one-line `OutputWriteError` for an OS error while writing ``path``."""
    kept = f"the existing {what} is unchanged" if existed else "nothing was written"
    error = OutputWriteError(f"cannot write {what} '{path}' ({exc.strerror or exc}); {kept}")
    error.errno = exc.errno
    return error


def missing_dirs(path):
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def remove_empty(dirs):
    """Remove the directories ``dirs`` (deepest first) while they are empty: a failed
    write leaves no folder it created."""
    for path in dirs:
        try:
            os.rmdir(path)
        except OSError:
            return


def _write_atomically(path, write, what):
    """Run ``write(tmp)`` on a temporary sibling of the local ``path``, then `publish` it."""
    parent = os.path.dirname(os.path.abspath(path))
    prefix = os.path.join(parent, f".{os.path.basename(path)}.tmp-")
    for stale in glob.glob(glob.escape(prefix) + "*"):  # left by a killed write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = prefix + uuid.uuid4().hex[:8]
    existed = os.path.lexists(path)
    created, done = missing_dirs(parent), False
    try:
        try:
            os.makedirs(parent, exist_ok=True)
            write(tmp)
        except OSError as exc:
            raise write_error(exc, path, what, existed) from exc
        publish(tmp, path, what)
        done = True
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            remove_empty(created)


def write_model(path, params, attrs, overwrite=False, storage_options=None):
    """Write a model group at ``path`` (local directory or fsspec URL).

    Raises
    ------
    OutputExistsError
        If ``path`` exists and not ``overwrite``.
    OutputWriteError
        If writing a local model fails; an existing model is unchanged.
    """
    path = os.fspath(path)
    check_writable(path, overwrite, storage_options, what="model")
    if _is_url(path):
        # Object stores have no rename: the group is written in place.
        try:
            _write_group(path, params, attrs, storage_options)
        except Exception as exc:
            raise OutputWriteError(describe_url_error(path, exc, storage_options, "write",
                                                      "model")) from None
        return
    _write_atomically(path, lambda tmp: _write_group(tmp, params, attrs), "model")


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
        if _is_url(path) and (isinstance(exc, (OSError, KeyError))
                              or type(exc).__module__.startswith(("botocore", "aiohttp"))):
            raise DataError(describe_url_error(path, exc, storage_options, "read",
                                               "model")) from None
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

    if _is_url(path):
        write(path, overwrite)
    else:
        _write_atomically(path, write, "store")
    return zarr.open_array(path, mode="r")
