"""Stores with small chunks: one chunk per task against streamae's grouping.

Writes ``--rows`` x 64 float32 values in chunks of ``--chunk-rows`` rows,
uncompressed and with zstd, and times one one-pass evaluation (median of
``--repeats``) with one chunk per task (``chunk_rows`` equal to the store's
chunks) and with the default grouping of chunks into tasks of up to 16 MiB.

Usage (from the repository root)::

    python benchmarks/small_chunks.py                  # 400,000 rows, 40-row chunks
    python benchmarks/small_chunks.py --chunk-rows 1000
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import zarr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--chunk-rows", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from subjects import init_params

    from streamae import SparseAutoencoder

    n = 64
    work = tempfile.mkdtemp(prefix="streamae-small-chunks-")
    try:
        X = np.random.default_rng(0).uniform(0.05, 0.95, (args.rows, n)).astype(np.float32)
        model = SparseAutoencoder.from_weights(**init_params(n, 25), rho=0.01, beta=3.0,
                                               weight_decay=1e-4)
        print(f"{args.rows:,} x {n} float32 in chunks of {args.chunk_rows} rows "
              f"({args.chunk_rows * n * 4 / 1e3:g} KB), one-pass, median of {args.repeats}\n")
        print("| store | one chunk per task | grouped (default) |")
        print("|---|---:|---:|")
        for codec in ("uncompressed", "zstd"):
            path = os.path.join(work, f"{codec}.zarr")
            kwargs = {"compressors": None} if codec == "uncompressed" else {}
            z = zarr.create_array(path, shape=X.shape, chunks=(args.chunk_rows, n),
                                  dtype="float32", **kwargs)
            z[...] = X
            medians = []
            for chunk_rows in (args.chunk_rows, None):
                model.set_params(run_options={"chunk_rows": chunk_rows})
                model.cost_and_grad(path)  # warm-up
                seconds = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    model.cost_and_grad(path)
                    seconds.append(time.perf_counter() - t0)
                medians.append(statistics.median(seconds))
            print(f"| {codec} | {medians[0]:.3f} s | {medians[1]:.3f} s "
                  f"({medians[0] / medians[1]:.1f}x) |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
