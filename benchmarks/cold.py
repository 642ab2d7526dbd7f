"""Cold data for the benchmarks: evicting a store's pages, and the disk's own rate.

``evict`` drops every chunk file's pages from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)``, which needs no privileges (the files
must have been written back: ``os.sync()`` after writing). ``disk_limit``
reads the same files with O_DIRECT on several threads: what the disk
delivers with no page cache and no compute.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from common import chunk_files, evict  # noqa: F401 (used by the cold benchmarks)

from streamae._chunkread import _aligned_empty


def disk_limit(files, threads):
    """(seconds, bytes) to read ``files`` with O_DIRECT on ``threads`` threads, cold."""
    evict(files)
    size = max(os.path.getsize(f) for f in files)
    page = 4096

    def read(name):
        buffer = _aligned_empty(-(-size // page) * page, 1, np.uint8).ravel()
        fd = os.open(name, os.O_RDONLY | os.O_DIRECT)
        try:
            done = 0
            while True:
                got = os.readv(fd, [memoryview(buffer)[done:]])
                if not got:
                    return done
                done += got
        finally:
            os.close(fd)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(read, files))
    return time.perf_counter() - t0, total
