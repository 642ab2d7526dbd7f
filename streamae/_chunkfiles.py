"""Reading many small chunk files in one compiled loop, without the GIL.

A store of small chunks (a few tens of KB each) costs, read one file at a
time from Python, about 10 us per file in the interpreter around the system
calls (opening, checking the size, reading, closing), and the reading threads
hold the GIL while the kernels want it. `read_files` makes the same calls
(``open``, ``lseek`` for the size, ``pread``, ``posix_fadvise``, ``close``) in
a Numba loop over a read's files, so that a store of many small chunks
reads nearly as fast as one of few large ones (benchmarks/passes.py and
benchmarks/small_chunks.py measure it).

It only reads: any file it cannot read exactly as asked (missing, of another
size, an error) gets a non-zero status, and the caller reads that file again
the ordinary way (`streamae._chunkread.LocalChunks`), whose answers and error
messages are the reference. Used on Linux only (the C library's names and
the ``posix_fadvise`` advice value are Linux's); elsewhere `AVAILABLE` is
False and every file is read from Python.
"""

import os
import sys

import numpy as np

#: Status of a file in `read_files`.
OK, NOT_OPENED, OTHER_SIZE, SHORT_READ = 0, 1, 2, 3

AVAILABLE = sys.platform.startswith("linux")

if AVAILABLE:
    from numba import njit, types

    # Pointers are passed as integers (the same register on 64-bit ABIs).
    _open = types.ExternalFunction("open", types.intc(types.uintp, types.intc))
    _lseek = types.ExternalFunction("lseek", types.int64(types.intc, types.int64, types.intc))
    _pread = types.ExternalFunction("pread", types.int64(types.intc, types.uintp, types.uint64,
                                                         types.int64))
    _fadvise = types.ExternalFunction("posix_fadvise", types.intc(types.intc, types.int64,
                                                                  types.int64, types.intc))
    _close = types.ExternalFunction("close", types.intc(types.intc))
    _SEEK_END, _DONTNEED = 2, 4

    @njit(nogil=True, cache=True)
    def read_files(names, name_starts, out, offsets, lengths, size, drop):
        """Read the first ``lengths[k]`` bytes of file ``k`` into
        ``out[offsets[k]:offsets[k] + lengths[k]]``.

        Parameters
        ----------
        names : ndarray of uint8
            The files' paths, each ending with a NUL byte.
        name_starts : ndarray of shape (files,), int64
            Where each path starts in ``names``.
        out : ndarray of uint8, C-contiguous
            Where the bytes go.
        offsets, lengths : ndarrays of shape (files,), int64
        size : int
            The size every file must have.
        drop : bool
            Drop each file's pages from the page cache after reading it
            (``posix_fadvise(POSIX_FADV_DONTNEED)``).

        Returns
        -------
        ndarray of shape (files,), int64
            `OK`, or why the file was not read (`NOT_OPENED`, `OTHER_SIZE`,
            `SHORT_READ`).
        """
        status = np.zeros(name_starts.shape[0], np.int64)
        base = out.ctypes.data
        for k in range(name_starts.shape[0]):
            fd = _open(names.ctypes.data + name_starts[k], 0)  # O_RDONLY
            if fd < 0:
                status[k] = NOT_OPENED
                continue
            if _lseek(fd, 0, _SEEK_END) != size:
                status[k] = OTHER_SIZE
            else:
                done = 0
                while done < lengths[k]:
                    got = _pread(fd, base + offsets[k] + done, lengths[k] - done, done)
                    if got <= 0:
                        break
                    done += got
                if done < lengths[k]:
                    status[k] = SHORT_READ
                elif drop:
                    _fadvise(fd, 0, 0, _DONTNEED)
            _close(fd)
        return status


def packed_names(paths):
    """(names, starts) of `read_files` for a list of paths (str)."""
    encoded = [os.fsencode(p) + b"\0" for p in paths]
    starts = np.zeros(len(encoded), np.int64)
    if encoded:
        starts[1:] = np.cumsum([len(e) for e in encoded[:-1]])
    return np.frombuffer(b"".join(encoded), np.uint8), starts
