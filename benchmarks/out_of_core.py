"""Evaluations on cold data: a store read from the disk, not the page cache.

Measures, in one run on one machine, for a Zarr store of ``--gb`` GB of
float32 rows (64 columns, 64 -> 25 units, chunks of ``--chunk-rows`` rows),
uncompressed and zstd:

- the disk limit: O_DIRECT reads of the same chunk files with ``--threads``
  threads, pages evicted first (seconds for the whole store);
- the compute limit: a one-pass evaluation of the same rows held in memory
  (a NumPy array in batches of the store's chunks: the kernels alone), and
  the same evaluation with the store in the page cache (which adds the copy
  out of the cache and, for zstd, the decoding);
- cold evaluations, pages evicted before each one
  (``posix_fadvise(POSIX_FADV_DONTNEED)`` on every chunk file, which needs no
  privileges): one-pass read with O_DIRECT (streamae's default for a store
  larger than half the memory) with read-ahead (default) and without,
  through the page cache dropping the pages after each chunk, and through
  the page cache leaving them; two-pass and cached with O_DIRECT.

Each cold figure is also given against max(disk limit, compute limit), the
best a pass can do when reads and compute overlap fully, and against the
evaluation in the page cache. The store goes to
``--dir`` (default: a directory under /work/tmp or /tmp) and is kept for the
next run.

Usage::

    python benchmarks/out_of_core.py                 # 3 GB, 2 repeats
    python benchmarks/out_of_core.py --gb 8 --repeats 3 --json out.json
    python benchmarks/out_of_core.py --quick         # seconds: a smoke test
    python benchmarks/out_of_core.py --stores "" --larger-than-memory 32

With ``--larger-than-memory GB``, one cold evaluation of each kind over an
uncompressed store of that size (larger than the machine's memory, so it
cannot stay cached whatever is done), against the disk limit and the compute
limit of the ``--gb`` store scaled by rows, and the peak RSS of a fresh
process that makes two cold one-pass evaluations of it (``own_process``).
The results record the command, commit, date, machine and load average
(`provenance`); the run is refused on a busy machine unless ``--allow-load``.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import zarr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import provenance  # noqa: E402
from cold import chunk_files, disk_limit, evict  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from streamae import _chunkread  # noqa: E402
from streamae._data import open_dataset  # noqa: E402
from streamae._engine import Evaluator  # noqa: E402
from streamae._objective import init_params, make_hyper  # noqa: E402

COLS, HIDDEN = 64, 25


def grid_block(rng, rows, n):
    """Values on a grid of 1/256 in [0.05, 0.95]: zstd finds something to
    compress, as in images."""
    return rng.integers(13, 243, size=(rows, n)).astype(np.float32) / 256


def make_store(path, rows, chunk_rows, compressed, seed=0):
    """A store of ``rows`` x 64 float32 in [0.05, 0.95] (kept if it exists),
    written back to disk (dirty pages cannot be evicted)."""
    common.make_store(path, rows, COLS, chunk_rows, compressed=compressed, seed=seed,
                      block=grid_block)
    os.sync()
    return path


def compute_in_memory(path, params, repeats):
    """Median seconds of a one-pass evaluation of the store's rows held in memory
    (a NumPy array in batches of the store's chunks): the kernels alone, no reads."""
    z = zarr.open_array(path, mode="r")
    ev = Evaluator(open_dataset(z[...], chunk_rows=z.chunks[0]), make_hyper(0.01, 3.0, 1e-4),
                   dtype="float32", strategy="one-pass")
    ev(params)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ev(params)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def evaluate(path, params, strategy="one-pass", cache_mode="auto", read_ahead=None,
             cold=True):
    """Seconds of one evaluation (pages evicted first if ``cold``)."""
    ev = Evaluator(open_dataset(path, page_cache=cache_mode), make_hyper(0.01, 3.0, 1e-4),
                   dtype="float32", strategy=strategy, read_ahead=read_ahead)
    if cold:
        evict(chunk_files(path))
    t0 = time.perf_counter()
    result = ev(params)
    seconds = time.perf_counter() - t0
    assert np.isfinite(result.cost)
    return seconds, result.cost


CASES = [  # name, strategy, cache mode, read-ahead, cold
    # The cache mode applies to uncompressed stores only; "direct" (O_DIRECT)
    # is what streamae does by default for a store larger than half the memory.
    ("cached data (page cache)", "one-pass", "keep", None, False),
    ("cold one-pass", "one-pass", "direct", None, True),
    ("cold one-pass, no read-ahead", "one-pass", "direct", 0, True),
    ("cold one-pass, pages dropped", "one-pass", "drop", None, True),
    ("cold one-pass, through the page cache", "one-pass", "keep", None, True),
    ("cold two-pass", "two-pass", "direct", None, True),
    ("cold cached strategy", "cached", "direct", None, True),
]


def run_store(path, params, args):
    """The limits and every case for one store; medians of ``--repeats``."""
    files = chunk_files(path)
    disk = [disk_limit(files, args.threads) for _ in range(args.repeats)]
    out = {"bytes_on_disk": disk[0][1], "disk_limit_s": statistics.median(d[0] for d in disk),
           "compute_in_memory_s": compute_in_memory(path, params, args.repeats)}
    evaluate(path, params, "one-pass", "keep", cold=False)  # warm: cache, Numba
    costs, times = set(), {name: [] for name, *_ in CASES}
    for _ in range(args.repeats):  # interleaved: round 1 of every case, then round 2, ...
        for name, strategy, mode, ahead, cold in CASES:
            seconds, cost = evaluate(path, params, strategy, mode, ahead, cold)
            times[name].append(seconds)
            costs.add((strategy, cost))
    for name, *_ in CASES:
        out[name] = {"median_s": statistics.median(times[name]), "all_s": times[name]}
        print(f"  {name}: {out[name]['median_s']:.3f} s", file=sys.stderr)
    out["compute_limit_s"] = out["compute_in_memory_s"]
    cached = out["cached data (page cache)"]["median_s"]
    bound = max(out["disk_limit_s"], out["compute_limit_s"])
    for name, *_ in CASES:
        out[name]["over_max_limit"] = out[name]["median_s"] / bound
        out[name]["over_page_cache"] = out[name]["median_s"] / cached
    # Same strategy, same bits, whatever the cache mode and read-ahead.
    out["same_cost_across_modes"] = len({s for s, _ in costs}) == len(costs)
    return out


OWN_PROCESS = """
import json, os, resource, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from out_of_core import COLS, HIDDEN, evaluate, init_params
params = init_params(COLS, HIDDEN, np.random.default_rng(0))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
seconds = [evaluate(sys.argv[2], params)[0] for _ in range(2)]
print(json.dumps({"seconds": seconds, "rss_before_bytes": before,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def own_process(path):
    """Two cold one-pass evaluations of ``path`` in a fresh process: their seconds, and
    that process's resident memory before the first and at its peak."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", OWN_PROCESS, HERE, path], check=True,
                          capture_output=True, text=True)
    return json.loads(proc.stdout.splitlines()[-1])


def larger_than_memory(args, params, workdir):
    """Cold one-pass (with and without read-ahead) and two-pass over an
    uncompressed store of ``--larger-than-memory`` GB, larger than the
    machine's memory, against the disk limit and the compute limit (the
    in-memory one-pass rate of the ``--gb`` store's rows, scaled by rows);
    one evaluation each. Skipped, saying so, when the disk has no room."""
    import resource
    import shutil

    import psutil

    rows = int(args.larger_than_memory * 1e9) // (COLS * 4)
    data_bytes = rows * COLS * 4
    memory = psutil.virtual_memory().total
    out = {"gb": args.larger_than_memory, "rows": rows, "machine_memory_bytes": memory}
    path = os.path.join(workdir, f"x{rows}-{args.chunk_rows}-uncompressed.zarr")
    if not os.path.exists(path) and shutil.disk_usage(workdir).free < 1.05 * data_bytes:
        out["skipped"] = f"no room: {shutil.disk_usage(workdir).free / 1e9:.1f} GB free"
        return out
    make_store(path, rows, args.chunk_rows, compressed=False)
    small_rows = int(args.gb * 1e9) // (COLS * 4)
    small = make_store(os.path.join(workdir, f"x{small_rows}-{args.chunk_rows}-uncompressed.zarr"),
                       small_rows, args.chunk_rows, compressed=False)
    out["compute_limit_s"] = compute_in_memory(small, params, args.repeats) * rows / small_rows
    out["disk_limit_s"], out["bytes_on_disk"] = disk_limit(chunk_files(path), args.threads)
    cases = [("cold one-pass", "one-pass", "auto", None),
             ("cold one-pass, no read-ahead", "one-pass", "auto", 0),
             ("cold one-pass, pages dropped", "one-pass", "drop", None),
             ("cold two-pass", "two-pass", "auto", None)]
    for name, strategy, mode, ahead in cases:
        out[name] = {"seconds": evaluate(path, params, strategy, mode, ahead)[0]}
        print(f"  {name}: {out[name]['seconds']:.1f} s", file=sys.stderr)
    bound = max(out["disk_limit_s"], out["compute_limit_s"])
    for name, *_ in cases:
        out[name]["over_max_limit"] = out[name]["seconds"] / bound
    # This process also held the --gb store's rows in memory (the compute
    # limit): its peak says nothing about a pass. A fresh process measures that.
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["own_process"] = own_process(path)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=3.0, help="store size (uncompressed)")
    p.add_argument("--chunk-rows", type=int, default=262_144)
    p.add_argument("--threads", type=int, default=8, help="threads of the disk limit")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--dir", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="a tiny store, one repeat (CI)")
    p.add_argument("--stores", default="uncompressed,zstd",
                   help="comma-separated: uncompressed, zstd (empty: none)")
    p.add_argument("--larger-than-memory", type=float, default=0, metavar="GB",
                   help="also one cold evaluation of each kind over an uncompressed store "
                        "of GB gigabytes (make it larger than the machine's memory)")
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    if args.quick:
        args.gb, args.chunk_rows, args.repeats, args.allow_load = 0.02, 8192, 1, True
    record = provenance.start("benchmarks/out_of_core.py", argv, args.allow_load, args.wait)
    base = "/work/tmp" if os.path.isdir("/work/tmp") else tempfile.gettempdir()
    workdir = args.dir or os.path.join(base, "streamae-out-of-core")
    os.makedirs(workdir, exist_ok=True)
    rows = int(args.gb * 1e9) // (COLS * 4)
    params = init_params(COLS, HIDDEN, np.random.default_rng(0))
    report = {**record, "gb": args.gb, "rows": rows, "cols": COLS, "hidden": HIDDEN,
              "chunk_rows": args.chunk_rows, "repeats": args.repeats, "quick": args.quick,
              "read_ahead_default": _chunkread.READ_AHEAD, "cpu_count": os.cpu_count(),
              "interleaved": True, "stores": {}}
    for label, compressed in (("uncompressed", False), ("zstd", True)):
        if label not in args.stores.split(","):
            continue
        path = make_store(os.path.join(workdir, f"x{rows}-{args.chunk_rows}-{label}.zarr"),
                          rows, args.chunk_rows, compressed)
        print(f"{label} ({path}):", file=sys.stderr)
        with threadpool_limits(limits=1, user_api="blas"):  # as a fit does
            report["stores"][label] = run_store(path, params, args)
    if args.larger_than_memory:
        print(f"larger than memory ({args.larger_than_memory} GB):", file=sys.stderr)
        with threadpool_limits(limits=1, user_api="blas"):
            report["larger_than_memory"] = larger_than_memory(args, params, workdir)
    text = json.dumps(provenance.finish(report), indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
