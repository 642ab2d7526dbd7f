"""One-pass vs two-pass when reading costs more than computing: an S3 store.

Starts an S3-compatible server (``moto_server``, as the tests do) on
127.0.0.1, writes the same uncompressed float32 store there and on local
disk, and times, alternating rounds, one evaluation (cost + gradient) per
strategy on both, plus a read-only pass over each store. Reports median
seconds, the read rate and each strategy's time over one-pass on the same
store. Everything is measured in one run; the server runs on the same two
cores as streamae, so its CPU time is part of every S3 read (as a remote
server's latency and bandwidth would be).

Usage (from the repository root; needs ``pip install ".[test]"`` for moto
and s3fs)::

    python benchmarks/object_store.py                    # 1,000,000 x 64 -> 25
    python benchmarks/object_store.py --rows 200000 --repeats 5
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import provenance  # noqa: E402

STRATEGIES = ("one-pass", "two-pass", "cached")
# One-pass again with twice as many threads as cores: while a thread waits
# for the server, another computes.
OVERLAP = "one-pass, 2 threads per core"
SUBJECTS = ("read-only",) + STRATEGIES + (OVERLAP,)


def read_only(url):
    """Seconds for one pass that only reads every chunk (streamae's own Dask array)."""
    import dask

    from streamae._data import open_dataset

    dataset = open_dataset(url)
    blocks = dataset.array.to_delayed().ravel()
    t0 = time.perf_counter()
    rows = dask.compute(*[dask.delayed(lambda b: b.shape[0])(b) for b in blocks],
                        scheduler="threads")
    seconds = time.perf_counter() - t0
    assert sum(rows) == dataset.shape[0]
    return seconds


def _measure(args, work, m, n, s, chunk_rows):
    """Write the stores, start the server, time every subject; (times, costs, upload)."""
    from cluster_fixtures import MotoServer
    from run import make_store
    from subjects import init_params

    from streamae import SparseAutoencoder

    local = os.path.join(work, "x.zarr")
    make_store(local, m, n, chunk_rows, None)
    with MotoServer(os.path.join(work, "moto")) as server:
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[key]
        os.environ.update(server.env())
        server.create_bucket("data")
        server.require_auth()
        url = "s3://data/x.zarr"
        t0 = time.perf_counter()
        make_store(url, m, n, chunk_rows, None)
        upload = time.perf_counter() - t0
        print(f"store: {m:,} x {n} float32 in chunks of {chunk_rows:,} rows "
              f"({m * n * 4 / 1e6:,.0f} MB); uploaded in {upload:.1f} s", flush=True)

        model = SparseAutoencoder.from_weights(**init_params(n, s), rho=0.01, beta=3.0,
                                               weight_decay=1e-4, dtype="float32")
        times = {}
        costs = {}
        for where, data in (("local", local), ("s3", url)):  # warm-up: compile, connect
            read_only(data)
            for strategy in STRATEGIES:
                model.set_params(strategy=strategy, run_options=None)
                costs[where, strategy] = model.cost_and_grad(data)[0]
        for rnd in range(args.rounds):
            for where, data in (("local", local), ("s3", url)):
                for subject in SUBJECTS:
                    for _ in range(args.repeats):
                        if subject == "read-only":
                            seconds = read_only(data)
                        else:
                            t0 = time.perf_counter()
                            if subject == OVERLAP:
                                model.set_params(strategy="one-pass", run_options={
                                    "scheduler": "threads", "workers": 2 * os.cpu_count()})
                            else:
                                model.set_params(strategy=subject, run_options=None)
                            model.cost_and_grad(data)
                            seconds = time.perf_counter() - t0
                        times.setdefault((where, subject), []).append(seconds)
                print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    return times, costs, upload


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cols", type=int, default=64)
    p.add_argument("--hidden", type=int, default=25)
    p.add_argument("--chunk-mib", type=float, default=16.0)
    p.add_argument("--repeats", type=int, default=3, help="timed evaluations per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=os.path.join(HERE, "results", "object_store.json"))
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    record = provenance.start("benchmarks/object_store.py", argv, args.allow_load, args.wait)

    m, n, s = args.rows, args.cols, args.hidden
    chunk_rows = max(1, int(args.chunk_mib * 2**20) // (4 * n))
    work = tempfile.mkdtemp(prefix="streamae-s3-bench-")
    try:
        times, costs, upload = _measure(args, work, m, n, s, chunk_rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    spread = max(abs(c / costs["local", "one-pass"] - 1) for c in costs.values())
    rows = []
    for where in ("local", "s3"):
        one = statistics.median(times[where, "one-pass"])
        for subject in SUBJECTS:
            med = statistics.median(times[where, subject])
            rows.append({"store": where, "subject": subject, "seconds": med,
                         "seconds_all": times[where, subject],
                         "mb_per_s": m * n * 4 / 1e6 / med if subject == "read-only" else None,
                         "over_one_pass": med / one})
    report = {**provenance.finish(record), "rows": m, "cols": n, "hidden": s,
              "chunk_rows": chunk_rows, "costs_agree_to": spread, "upload_seconds": upload,
              "results": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nCosts of all strategies and stores agree to {spread:.1e} (relative).\n")
    print("| store | subject | s / eval (median) | read rate | / one-pass |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        rate = f"{r['mb_per_s']:,.0f} MB/s" if r["mb_per_s"] else "-"
        print(f"| {r['store']} | {r['subject']} | {r['seconds']:.3f} | {rate} | "
              f"{r['over_one_pass']:.2f} |")
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
