"""Stores with small chunks: one chunk per task against streamae's grouping.

Writes ``--rows`` x 64 float32 values in chunks of ``--chunk-rows`` rows,
uncompressed and with zstd, and times one one-pass evaluation (median of
``--repeats``) with one chunk per task (``chunk_rows`` equal to the store's
chunks) and with the default grouping of chunks into tasks of up to 16 MiB.

Usage (from the repository root)::

    python benchmarks/small_chunks.py                  # 400,000 rows, 40-row chunks
    python benchmarks/small_chunks.py --chunk-rows 1000

Writes ``benchmarks/results/small_chunks.json`` (``--json``), with the
command, commit, date, machine and load average (`provenance`).
"""

import argparse
import json
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

import provenance  # noqa: E402


def evaluation_seconds(model, path, chunk_rows, repeats):
    """Seconds of each timed one-pass evaluation (after one untimed)."""
    model.set_params(run_options={"chunk_rows": chunk_rows})
    model.cost_and_grad(path)  # warm-up
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.cost_and_grad(path)
        seconds.append(time.perf_counter() - t0)
    return seconds


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--chunk-rows", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=os.path.join(HERE, "results", "small_chunks.json"))
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    record = provenance.start("benchmarks/small_chunks.py", argv, args.allow_load, args.wait)

    from subjects import init_params

    from streamae import SparseAutoencoder

    n = 64
    work = tempfile.mkdtemp(prefix="streamae-small-chunks-")
    report = {"rows": args.rows, "cols": n, "hidden": 25, "chunk_rows": args.chunk_rows,
              "chunk_bytes": args.chunk_rows * n * 4, "repeats": args.repeats, "stores": {}}
    try:
        X = np.random.default_rng(0).uniform(0.05, 0.95, (args.rows, n)).astype(np.float32)
        model = SparseAutoencoder.from_weights(**init_params(n, 25), rho=0.01, beta=3.0,
                                               weight_decay=1e-4)
        for codec in ("uncompressed", "zstd"):
            path = os.path.join(work, f"{codec}.zarr")
            kwargs = {"compressors": None} if codec == "uncompressed" else {}
            z = zarr.create_array(path, shape=X.shape, chunks=(args.chunk_rows, n),
                                  dtype="float32", **kwargs)
            z[...] = X
            per_chunk = evaluation_seconds(model, path, args.chunk_rows, args.repeats)
            grouped = evaluation_seconds(model, path, None, args.repeats)
            report["stores"][codec] = {
                "one_chunk_per_task": {"median_s": statistics.median(per_chunk),
                                       "all_s": per_chunk},
                "grouped": {"median_s": statistics.median(grouped), "all_s": grouped}}
            print(f"{codec}: one chunk per task {statistics.median(per_chunk):.3f} s, "
                  f"grouped {statistics.median(grouped):.3f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(args.json, "w") as f:
        json.dump({**provenance.finish(record), **report}, f, indent=1)


if __name__ == "__main__":
    main()
