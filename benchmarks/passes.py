"""Every pass over a store against the chunk count: evaluation, a fit's start,
whitening and encoding, on threads and on a LocalCluster, in one run.

For stores of ``--rows`` x ``--cols`` float32 values in [0.05, 0.95] (the same
values in each), uncompressed (``--compressed``: zstd), in ``--chunks`` chunk
counts (default 16 and 4,000), it times, median of ``--repeats``:

- ``evaluation``: one one-pass evaluation of (cost, gradient), one kernel
  batch per store chunk (``chunk_rows`` the store's chunk: the case where the
  chunk count matters most);
- ``fit_start``: what a fit (without warm-up) does up to its first
  evaluation's result: open the data, build the evaluator, compile its
  kernels, and that first evaluation, which also measures the data variance
  from its own reads (`streamae._engine.Evaluator.measure_variance`; before,
  the variance was a pass of its own): in evaluations, 1 plus what the
  start adds;
- ``whiten``: `streamae.whiten` (ZCA: moments, then the whitened write);
- ``encode``: `streamae.encode` of a model with ``--hidden`` units
  (each repeat of these two writes a new store; removing the one before is
  not timed),

each on the threaded scheduler with ``--workers`` threads and on a
``LocalCluster`` of ``--workers`` single-threaded processes on 127.0.0.1
(started once; its start is not timed). Every time is also given in
evaluations of the fewest-chunk store on the same scheduler
(``ratio_to_evaluation``), and the ratio of the most-chunk to the
fewest-chunk figure (``ratio_to_fewest_chunks``); the targets (issue "one
engine for every pass") are at most 1.2 for the chunk ratio, at most 2.5
evaluations for whitening and 1.5 for encoding. The evaluations of the two
schedulers are checked to be bit-identical, and so are the whitened and
encoded stores. With ``--cpu``, every pass is also timed in CPU seconds of
this process on the synchronous scheduler (one BLAS thread), which other
load on a shared machine disturbs much less than wall time.

Writes JSON (command, commit, date, machine, load average before and after:
`provenance`) to ``--json`` (default benchmarks/results/passes.json). Like
every benchmark here it waits for a quiet machine (``--allow-load`` for
smoke runs, recorded in the file).

Usage (from the repository root)::

    python benchmarks/passes.py                        # 1,000,000 x 64: 16 and 4,000 chunks
    python benchmarks/passes.py --rows 20000 --repeats 1 --allow-load --json /tmp/p.json
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
from common import make_store, uniform_data  # noqa: E402

from streamae import SparseAutoencoder, encode, whiten  # noqa: E402
from streamae._cluster import Runner  # noqa: E402
from streamae._data import open_dataset  # noqa: E402
from streamae._engine import Evaluator  # noqa: E402
from streamae._objective import init_params, make_hyper  # noqa: E402

PASSES = ("evaluation", "fit_start", "whiten", "encode")
_LABELS = ("threads", "local_cluster", "cpu_synchronous")


def _median_seconds(run, repeats, clock=time.perf_counter, setup=None):
    """Median time of ``run()`` by ``clock`` over ``repeats`` calls (after one
    untimed call); ``setup()``, if given, runs untimed before each call."""
    if setup:
        setup()
    run()
    times = []
    for _ in range(repeats):
        if setup:
            setup()
        t0 = clock()
        run()
        times.append(clock() - t0)
    return statistics.median(times), times


def _removed(path):
    """A function removing ``path`` (an earlier output), to run untimed."""
    return lambda: shutil.rmtree(path, ignore_errors=True)


def time_passes(path, chunk_rows, scheduler, args, work, clock=time.perf_counter):
    """{pass: (median seconds, all seconds)} and the outputs' bytes, for one store
    on one scheduler (a Runner for the evaluation, the scheduler for the rest);
    times by ``clock`` (wall time, or this process's CPU time)."""
    hyper = make_hyper(0.01, 3.0, 1e-4)
    params = init_params(args.cols, args.hidden, np.random.default_rng(1))
    workers = args.workers if scheduler == "threads" else None
    runner = Runner(scheduler, workers=workers)
    options = {"scheduler": scheduler, "workers": workers}
    model = SparseAutoencoder.from_weights(**params, rho=0.01, beta=3.0, weight_decay=1e-4)
    times, outputs = {}, {}
    with runner.session():
        ev = Evaluator(open_dataset(path, chunk_rows=chunk_rows), hyper, strategy="one-pass",
                       scheduler=runner)
        times["evaluation"] = _median_seconds(lambda: ev(params), args.repeats, clock)
        outputs["evaluation"] = ev(params).cost

        started = []

        def fit_start():
            fresh = Evaluator(open_dataset(path, chunk_rows=chunk_rows), hyper,
                              strategy="one-pass", scheduler=runner)
            fresh.compile_kernels(args.hidden)
            fresh.measure_variance()
            fresh(params)
            started[:] = [fresh.variance]

        times["fit_start"] = _median_seconds(fit_start, args.repeats, clock)
        outputs["fit_start"] = np.array(started)
        white = os.path.join(work, "white.zarr")
        times["whiten"] = _median_seconds(
            lambda: whiten(path, white, run_options=options), args.repeats, clock,
            setup=_removed(white))
        outputs["whiten"] = zarr.open_array(white, mode="r")[...]
        codes = os.path.join(work, "codes.zarr")
        times["encode"] = _median_seconds(
            lambda: encode(model, path, codes, run_options=options), args.repeats, clock,
            setup=_removed(codes))
        outputs["encode"] = zarr.open_array(codes, mode="r")[...]
    return times, outputs


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cols", type=int, default=64)
    p.add_argument("--hidden", type=int, default=25)
    p.add_argument("--chunks", default="16,4000", help="comma-separated chunk counts")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compressed", action="store_true", help="zstd stores (default: none)")
    p.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    p.add_argument("--cpu", action="store_true",
                   help="also time every pass in CPU seconds of this process on the "
                        "synchronous scheduler (one BLAS thread): less sensitive to other "
                        "load on the machine than wall time")
    p.add_argument("--json", default=os.path.join(HERE, "results", "passes.json"))
    provenance.add_arguments(p)
    return p.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    record = provenance.start("benchmarks/passes.py", sys.argv[1:] if argv is None else argv,
                              args.allow_load, args.wait)
    report = {}
    counts = sorted(int(c) for c in args.chunks.split(","))
    work = args.dir or tempfile.mkdtemp(prefix="streamae-passes-")
    report.update({"rows": args.rows, "cols": args.cols, "hidden": args.hidden,
                   "workers": args.workers, "repeats": args.repeats,
                   "compressed": args.compressed, "chunks": {}})
    from distributed import Client, LocalCluster

    try:
        X = uniform_data(args.rows, args.cols)
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(args.workers)
            for count in counts:
                rows = -(-args.rows // count)
                name = f"x{args.rows}-{count}{'-zstd' if args.compressed else ''}.zarr"
                path = make_store(os.path.join(work, name), args.rows, args.cols, rows,
                                  compressed=args.compressed, X=X)
                os.sync()  # the new store's pages written back now, not while timing
                entry = {"chunk_rows": rows}
                results = {}
                for label, scheduler, clock in _subjects(client, args.cpu):
                    times, results[label] = time_passes(path, rows, scheduler, args, work,
                                                        clock)
                    entry[label] = {k: {"seconds_median": v[0], "seconds_all": v[1]}
                                    for k, v in times.items()}
                    print(f"{count:6d} chunks, {label}: " + ", ".join(
                        f"{k} {v[0]:.3f} s" for k, v in times.items()), file=sys.stderr)
                entry["bit_identical"] = {k: all(np.array_equal(results["threads"][k], r[k])
                                                     for r in results.values())
                                          for k in results["threads"]}
                report["chunks"][str(count)] = entry
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {**provenance.finish(record), **report}
    add_ratios(report, counts)
    text = json.dumps(report, indent=2)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        f.write(text + "\n")
    print(table(report, counts))
    return 0


def _subjects(client, cpu):
    """(label, scheduler, clock) of each way the passes are timed."""
    yield "threads", "threads", time.perf_counter
    yield "local_cluster", client, time.perf_counter
    if cpu:
        yield "cpu_synchronous", "synchronous", time.process_time


def add_ratios(report, counts):
    """Ratios to the fewest-chunk evaluation and to the fewest-chunk figure, and
    whether each target holds."""
    first, last = str(counts[0]), str(counts[-1])
    labels = [k for k in report["chunks"][first] if k in _LABELS]
    for label in labels:
        unit = report["chunks"][first][label]["evaluation"]["seconds_median"]
        for count in map(str, counts):
            for name in PASSES:
                cell = report["chunks"][count][label][name]
                cell["ratio_to_evaluation"] = cell["seconds_median"] / unit
                base = report["chunks"][first][label][name]["seconds_median"]
                cell["ratio_to_fewest_chunks"] = cell["seconds_median"] / base
    targets = {}
    for label in labels:
        cells = {c: report["chunks"][c][label] for c in map(str, counts)}
        targets[label] = {
            "chunks_ratio_at_most_1.2": all(cells[last][n]["ratio_to_fewest_chunks"] <= 1.2
                                            for n in PASSES),
            "whiten_at_most_2.5_evaluations": all(
                cells[c]["whiten"]["ratio_to_evaluation"] <= 2.5 for c in cells),
            "encode_at_most_1.5_evaluations": all(
                cells[c]["encode"]["ratio_to_evaluation"] <= 1.5 for c in cells),
        }
    report["targets_met"] = targets


def table(report, counts):
    """Markdown: time in evaluations of the fewest-chunk store, threads / LocalCluster
    (/ CPU time on the synchronous scheduler, with --cpu)."""
    labels = [k for k in report["chunks"][str(counts[0])] if k in _LABELS]
    head = " | ".join(f"{c:,} chunks" for c in counts)
    lines = [f"| pass ({' / '.join(labels)}) | {head} |", "|---|" + "---|" * len(counts)]
    for name in PASSES:
        cells = []
        for count in map(str, counts):
            cells.append(" / ".join(
                f"{report['chunks'][count][lab][name]['ratio_to_evaluation']:.2f}"
                for lab in labels))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
