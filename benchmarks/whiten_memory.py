"""Peak memory of `streamae whiten` against the number of rows.

Writes float32 stores of C chunks of 16384 x 192 values (12 MiB a chunk,
uncompressed) for two values of C, whitens each in a fresh process (ZCA,
epsilon 0.1) and reports the child's peak resident set (getrusage) and wall
time. Peak memory should not grow with C: each task holds one chunk (and its
float64 copy), plus O(n^2) partial sums.

    python benchmarks/whiten_memory.py [--chunks 10 80] [--schedulers synchronous threads]

Writes ``benchmarks/results/whiten_memory.json`` (``--json``), with the
command, commit, date, machine and load average (`provenance`).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import zarr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import provenance  # noqa: E402

ROWS, COLS = 16384, 192

CHILD = """
import resource, sys
from streamae import whiten
whiten(sys.argv[1], sys.argv[2], kind="zca", epsilon=0.1,
       run_options={"scheduler": sys.argv[3]})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_store(path, chunks, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(COLS, COLS)).astype(np.float32) / np.sqrt(COLS)
    z = zarr.create_array(path, shape=(ROWS * chunks, COLS), chunks=(ROWS, COLS),
                          dtype="float32", compressors=None)
    for i in range(chunks):  # chunk by chunk: the writer stays small too
        z[i * ROWS:(i + 1) * ROWS] = rng.standard_normal((ROWS, COLS), np.float32) @ mix


def measure(src, out, scheduler):
    """(peak RSS in MiB, seconds) of one whiten in a fresh process (its own getrusage)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, src, out, scheduler], check=True,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    return int(proc.stdout.split()[-1]) / 1024, seconds  # ru_maxrss is in KiB on Linux


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[10, 80])
    parser.add_argument("--schedulers", nargs="+", default=["synchronous", "threads"])
    parser.add_argument("--json", default=os.path.join(HERE, "results", "whiten_memory.json"))
    provenance.add_arguments(parser)
    args = parser.parse_args(argv)
    record = provenance.start("benchmarks/whiten_memory.py", argv, args.allow_load, args.wait)
    root = tempfile.mkdtemp(prefix="whiten-memory-")
    runs = []
    try:
        for chunks in sorted(args.chunks):
            src = os.path.join(root, f"x{chunks}.zarr")
            write_store(src, chunks)
            for scheduler in args.schedulers:
                out = os.path.join(root, f"w{chunks}-{scheduler}.zarr")
                peak, seconds = measure(src, out, scheduler)
                shutil.rmtree(out)
                runs.append({"chunks": chunks, "rows": ROWS * chunks, "cols": COLS,
                             "store_mib": ROWS * chunks * COLS * 4 / 2**20,
                             "scheduler": scheduler, "peak_rss_mib": peak,
                             "seconds": seconds})
                print(f"{chunks:4d} chunks ({ROWS * chunks} rows): peak RSS {peak:.0f} MiB, "
                      f"{seconds:.1f} s ({scheduler})", flush=True)
            shutil.rmtree(src)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    with open(args.json, "w") as f:
        json.dump({**provenance.finish(record), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
