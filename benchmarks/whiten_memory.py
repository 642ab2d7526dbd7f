"""Peak memory of `streamae whiten` against the number of rows.

Writes float32 stores of C chunks of 16384 x 192 values (12 MiB a chunk,
uncompressed) for two values of C, whitens each in a fresh process (ZCA,
epsilon 0.1) and reports the child's peak resident set (getrusage) and wall
time. Peak memory should not grow with C: each task holds one chunk (and its
float64 copy), plus O(n^2) partial sums.

    python benchmarks/whiten_memory.py [--chunks 10 80] [--scheduler threads]
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import zarr

ROWS, COLS = 16384, 192

CHILD = """
import sys
from streamae import whiten
whiten(sys.argv[1], sys.argv[2], kind="zca", epsilon=0.1,
       run_options={"scheduler": sys.argv[3]})
"""


def write_store(path, chunks, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(COLS, COLS)).astype(np.float32) / np.sqrt(COLS)
    z = zarr.create_array(path, shape=(ROWS * chunks, COLS), chunks=(ROWS, COLS),
                          dtype="float32", compressors=None)
    for i in range(chunks):  # chunk by chunk: the writer stays small too
        z[i * ROWS:(i + 1) * ROWS] = rng.standard_normal((ROWS, COLS), np.float32) @ mix


def measure(src, out, scheduler):
    """(peak RSS in MiB, seconds) of one whiten in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, src, out, scheduler], check=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, max over children
    return max(peak, before) / 1024, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[10, 80])
    parser.add_argument("--scheduler", default="threads")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="whiten-memory-")
    try:
        # Largest last: RUSAGE_CHILDREN keeps the maximum over all children so far.
        for chunks in sorted(args.chunks):
            src = os.path.join(root, f"x{chunks}.zarr")
            write_store(src, chunks)
            peak, seconds = measure(src, os.path.join(root, f"w{chunks}.zarr"),
                                    args.scheduler)
            size = ROWS * chunks * COLS * 4 / 2**20
            print(f"{chunks:4d} chunks ({ROWS * chunks} rows, {size:.0f} MiB): peak RSS "
                  f"{peak:.0f} MiB, {seconds:.1f} s ({args.scheduler})", flush=True)
            shutil.rmtree(src)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
