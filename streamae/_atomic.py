"""Atomic local writes: every output appears whole, or not at all.

An output (a file, or a directory such as a Zarr store) is built under a
temporary sibling ``.<name>.tmp-<random>``, flushed to disk (every file and
directory fsync'ed), and only then moved into place: a new output or a file
by one rename, a replaced directory by an atomic exchange of the two
directories (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames,
undone on failure); last the parent directory is fsync'ed. An interrupted or
failed write (disk full, permission denied, SIGKILL) never leaves a
half-written output where the user expects one, and an existing output
survives a failed overwrite; the error says so in one line
(`OutputWriteError`). Temporaries left by a killed write are removed by the
next write to the same path.

Object-store URLs have no rename: callers write them in place.
"""

import contextlib
import ctypes
import errno
import glob
import os
import shutil
import uuid

from ._errors import OutputWriteError, StreamaeError


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


def write_error(exc, path, what, existed):
    """The one-line `OutputWriteError` for the OS error ``exc`` while writing ``path``.

    It keeps ``exc.errno``, and the reason (``exc.strerror``, e.g. "No space
    left on device") as ``reason``.
    """
    kept = f"the existing {what} is unchanged" if existed else "nothing was written"
    reason = exc.strerror or str(exc)
    error = OutputWriteError(f"cannot write {what} '{path}' ({reason}); {kept}")
    error.errno, error.reason = exc.errno, reason
    return error


def publish(tmp, path, what="output"):
    """Move the finished local output ``tmp`` (a file or directory) to ``path``, durably.

    ``tmp`` must be a sibling of ``path``. Everything under ``tmp`` is
    fsync'ed first; a file replaces ``path`` with ``os.replace``; a directory
    replacing an existing ``path`` is exchanged with it (so ``tmp`` then
    holds the old output, for the caller to remove); the parent directory is
    fsync'ed last.

    Raises
    ------
    OutputWriteError
        On any OS error; ``path`` is then as it was before.
    """
    existed = os.path.lexists(path)
    try:
        fsync_path(tmp)
        if existed and os.path.isdir(tmp):
            _exchange(tmp, path)
        else:
            os.replace(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        raise write_error(exc, path, what, existed) from exc


def _temporary_prefix(path):
    parent = os.path.dirname(os.path.abspath(path))
    return os.path.join(parent, f".{os.path.basename(path)}.tmp-")


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.unlink(path)


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


def remove_stale(path):
    """Delete the temporaries that writes of ``path`` killed mid-way left beside it."""
    for stale in glob.glob(glob.escape(_temporary_prefix(path)) + "*"):
        _remove(stale)


@contextlib.contextmanager
def staged(path, what="output"):
    """Write the local ``path`` atomically: yields a temporary sibling to create.

    The body creates a file or a directory at the yielded path; when it
    finishes, the result is `publish`'ed to ``path``. If the body or the move
    fails, the temporary is removed and ``path`` is as it was before.

    Parameters
    ----------
    path : str or os.PathLike
        Final location (local). Its parent directory is created if needed.
    what : str
        What the output is, for error messages ("model", "checkpoint", ...).

    Yields
    ------
    str
        The temporary path to write.

    Raises
    ------
    OutputWriteError
        On an OS error (disk full, permission denied, ...), naming ``path``.
        Parent folders created for ``path`` are removed again if the write fails.
    """
    path = os.fspath(path)
    remove_stale(path)
    tmp = _temporary_prefix(path) + uuid.uuid4().hex[:8]
    existed = os.path.lexists(path)
    created, done = missing_dirs(os.path.dirname(tmp)), False
    try:
        try:
            os.makedirs(os.path.dirname(tmp), exist_ok=True)
            yield tmp
        except OSError as exc:
            if isinstance(exc, StreamaeError):
                raise
            raise write_error(exc, path, what, existed) from exc
        publish(tmp, path, what)
        done = True
    finally:
        _remove(tmp)
        if not done:
            remove_empty(created)  # a failed write leaves no folder it created


def write_bytes(path, data, what="output"):
    """Atomically replace the local file ``path`` by ``data`` (bytes), with `staged`."""
    with staged(path, what) as tmp, open(tmp, "xb") as f:
        f.write(data)
