"""Per-evaluation time and bytes on the wire: local threads vs a LocalCluster.

Measures, in one run on one machine, on a Zarr store of ``--rows`` x
``--cols`` float32 values in [0.05, 0.95]:

- seconds per evaluation of (cost, gradient) on the local threaded scheduler
  with ``--workers`` threads, and on a ``distributed.LocalCluster`` of
  ``--workers`` single-threaded worker processes (the target: cluster at most
  1.25x threads);
- bytes per evaluation between the client and the scheduler, between the
  scheduler and the workers, and between workers (partial sums moving up the
  reduction tree), for this store and for one with 10x fewer rows and the
  same number of chunks (they should not depend on the rows).

Both schedulers evaluate the same parameters; the script checks the results
are bit-identical. Everything listens on 127.0.0.1 only.

With ``--sweep 16,1000,4000,10000`` it measures instead, for stores of the
same ``--rows`` x ``--cols`` in that many chunks each (zstd, or with
``--uncompressed`` none) (one kernel batch per
chunk: ``chunk_rows`` set to the store's chunk, the case where the chunk
count matters most), seconds per evaluation on threads and on the
LocalCluster, and the client's time per evaluation: the CPU time of the
calling thread (building, optimising and submitting the graph, collecting
the result; waiting is not counted).

Usage::

    python benchmarks/cluster_overhead.py                 # 1,000,000 x 64, 16 chunks
    python benchmarks/cluster_overhead.py --rows 200000 --repeats 5
    python benchmarks/cluster_overhead.py --sweep 16,1000,4000,10000 --repeats 5
"""

import argparse
import contextlib
import contextvars
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import provenance  # noqa: E402
from common import make_store  # noqa: E402

from streamae._cluster import Runner  # noqa: E402
from streamae._data import open_dataset  # noqa: E402
from streamae._engine import Evaluator  # noqa: E402
from streamae._objective import PARAM_NAMES, init_params, make_hyper  # noqa: E402


class CommMeter:
    """Bytes written/read by this process on distributed's TCP comms, split into
    client<->scheduler (comms whose peer is the scheduler) and the rest (here:
    the in-process scheduler talking to the workers)."""

    def __init__(self, scheduler_address, on=True):
        self.scheduler = scheduler_address
        self.client = 0
        self.scheduler_workers = 0
        self._on = on

    @contextlib.contextmanager
    def counting(self):
        """Count only inside this block (the threaded evaluations send nothing
        anyway, but heartbeats do)."""
        self._on = True
        try:
            yield
        finally:
            self._on = False

    def per(self, repeats, peers):
        return {"client_scheduler": self.client / repeats,
                "scheduler_workers": self.scheduler_workers / repeats,
                "worker_worker": peers / repeats}

    def _add(self, comm, n):
        if not self._on:
            return
        if comm.peer_address == self.scheduler:
            self.client += n
        else:
            self.scheduler_workers += n

    def __enter__(self):
        from distributed.comm import tcp

        self._tcp = tcp
        self._saved = tcp.TCP.write, tcp.TCP.read, tcp.read_bytes_rw
        write0, read0, read_bytes0 = self._saved
        current = contextvars.ContextVar("comm", default=None)
        meter = self

        async def write(comm, msg, *args, **kwargs):
            n = await write0(comm, msg, *args, **kwargs)
            meter._add(comm, n)
            return n

        async def read(comm, *args, **kwargs):
            token = current.set(comm)
            try:
                return await read0(comm, *args, **kwargs)
            finally:
                current.reset(token)

        async def read_bytes_rw(stream, n):
            comm = current.get()
            if comm is not None:
                meter._add(comm, n + 8)  # + the 8-byte length header read before
            return await read_bytes0(stream, n)

        tcp.TCP.write, tcp.TCP.read, tcp.read_bytes_rw = write, read, read_bytes_rw
        return self

    def __exit__(self, *exc):
        self._tcp.TCP.write, self._tcp.TCP.read, self._tcp.read_bytes_rw = self._saved


def peer_bytes(client):
    """Bytes all workers have sent to other workers so far."""
    out = client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
    return sum(out.values())


def points(params, count, start=0):
    """``count`` distinct parameter sets near ``params`` (each evaluation is new
    work: the same parameters twice would give the same task keys, which a
    cluster may still hold)."""
    return [{k: v + 1e-6 * i for k, v in params.items()} for i in range(start, start + count)]


def bits(result):
    return (np.float64(result.cost).tobytes(),
            *(result.grad[k].tobytes() for k in PARAM_NAMES))


def alternate(local, remote, client, params, repeats):
    """Seconds per evaluation on each scheduler, evaluations alternating at the
    same parameters; whether their results agree bit for bit; the cluster's
    bytes on the wire per evaluation."""
    t_threads, t_cluster, same = [], [], True
    p0 = peer_bytes(client)
    with CommMeter(client.scheduler.address, on=False) as meter:
        for p in points(params, repeats):
            t0 = time.perf_counter()
            r_threads = local(p)
            t1 = time.perf_counter()
            with meter.counting():
                r_cluster = remote(p)
            t2 = time.perf_counter()
            t_threads.append(t1 - t0)
            t_cluster.append(t2 - t1)
            same = same and bits(r_threads) == bits(r_cluster)
    return t_threads, t_cluster, same, meter.per(repeats, peer_bytes(client) - p0)


def wire_per_evaluation(evaluate, client, params, repeats):
    """Bytes on the wire per evaluation of ``evaluate`` (after one unmetered call)."""
    evaluate(params)
    p0 = peer_bytes(client)
    with CommMeter(client.scheduler.address) as meter:
        for p in points(params, repeats, start=2000):
            evaluate(p)
    return meter.per(repeats, peer_bytes(client) - p0)


def run(args):
    workdir = args.dir or tempfile.mkdtemp(prefix="streamae-cluster-bench-")
    big = make_store(os.path.join(workdir, f"x{args.rows}.zarr"), args.rows, args.cols,
                     args.chunk_rows)
    small_rows = args.rows // 10
    small = make_store(os.path.join(workdir, f"x{small_rows}.zarr"), small_rows, args.cols,
                       args.chunk_rows // 10)
    hyper = make_hyper(0.01, 3.0, 1e-4)
    params = init_params(args.cols, args.hidden, np.random.default_rng(0))
    param_bytes = sum(v.size for v in params.values()) * 4  # float32 in the tasks
    chunks = -(-args.rows // args.chunk_rows)

    def evaluator(path, runner):
        return Evaluator(open_dataset(path), hyper, dtype="float32", strategy=args.strategy,
                         scheduler=runner)

    report = {"rows": args.rows, "cols": args.cols, "hidden": args.hidden,
              "chunk_rows": args.chunk_rows, "chunks": chunks, "strategy": args.strategy,
              "workers": args.workers, "repeats": args.repeats,
              "parameter_bytes_float32": param_bytes, "cpu_count": os.cpu_count(),
              "load_average_before": os.getloadavg()}

    # Both schedulers stay up; evaluations alternate between them at the
    # same parameters, so that other load on the machine hits both alike.
    from distributed import Client, LocalCluster

    threads = Runner("threads", workers=args.workers)
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client, threads.session():
        client.wait_for_workers(args.workers)
        runner = Runner(client)
        with runner.session():
            local, remote = evaluator(big, threads), evaluator(big, runner)
            for p in points(params, args.warmup, start=1000):
                local(p), remote(p)
            t_threads, t_cluster, same, wire_big = alternate(local, remote, client, params,
                                                             args.repeats)
            # The same number of chunks, 10x fewer rows: the same bytes.
            wire = {"big": wire_big,
                    "small": wire_per_evaluation(evaluator(small, runner), client, params,
                                                 args.repeats)}

    med_threads, med_cluster = statistics.median(t_threads), statistics.median(t_cluster)
    report.update({
        "seconds_per_evaluation": {
            "threads": {"median": med_threads, "min": min(t_threads), "all": t_threads},
            "local_cluster": {"median": med_cluster, "min": min(t_cluster), "all": t_cluster},
        },
        "ratio_cluster_over_threads_median": med_cluster / med_threads,
        "bit_identical": same,
        "bytes_per_evaluation": {f"{args.rows}_rows": wire["big"],
                                 f"{small_rows}_rows": wire["small"]},
        "data_bytes": args.rows * args.cols * 4,
        "load_average_after": os.getloadavg(),
    })
    return report


def memory_data(args):
    """The sweep's data as one NumPy array: the values of the stores, in memory
    (on the LocalCluster, held in the workers' memory once per evaluator)."""
    rng = np.random.default_rng(0)
    return rng.uniform(0.05, 0.95, size=(args.rows, args.cols)).astype(np.float32)


def timed(evaluate, p):
    """(wall seconds, calling thread's CPU seconds, result) of one evaluation."""
    w0, c0 = time.perf_counter(), time.thread_time()
    result = evaluate(p)
    return time.perf_counter() - w0, time.thread_time() - c0, result


def sweep(args):
    """Seconds and client seconds per evaluation against the number of chunks."""
    from distributed import Client, LocalCluster

    workdir = args.dir or tempfile.mkdtemp(prefix="streamae-cluster-bench-")
    hyper = make_hyper(0.01, 3.0, 1e-4)
    params = init_params(args.cols, args.hidden, np.random.default_rng(0))
    counts = [int(c) for c in args.sweep.split(",")]
    report = {"rows": args.rows, "cols": args.cols, "hidden": args.hidden,
              "strategy": args.strategy, "workers": args.workers, "repeats": args.repeats,
              "data": "memory" if args.memory else "store",
              "compressed": not args.uncompressed, "cpu_count": os.cpu_count(),
              "load_average_before": os.getloadavg(), "chunks": {}}
    threads = Runner("threads", workers=args.workers)
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client, threads.session():
        client.wait_for_workers(args.workers)
        runner = Runner(client)
        with runner.session():
            memory = memory_data(args) if args.memory else None
            for count in counts:
                rows = -(-args.rows // count)
                if memory is None:
                    name = f"x{args.rows}-{rows}{'-raw' if args.uncompressed else ''}.zarr"
                    data = make_store(os.path.join(workdir, name), args.rows, args.cols, rows,
                                      compressed=not args.uncompressed)
                else:
                    data = memory
                evs = {name: Evaluator(open_dataset(data, chunk_rows=rows), hyper,
                                       dtype="float32", strategy=args.strategy, scheduler=r)
                       for name, r in (("threads", threads), ("local_cluster", runner))}
                for p in points(params, args.warmup, start=1000):
                    for ev in evs.values():
                        ev(p)
                times = {name: {"seconds": [], "client_seconds": []} for name in evs}
                results = {}
                for p in points(params, args.repeats):
                    for name, ev in evs.items():
                        wall, cpu, results[name] = timed(ev, p)
                        times[name]["seconds"].append(wall)
                        times[name]["client_seconds"].append(cpu)
                entry = {name: {k + "_median": statistics.median(v) for k, v in t.items()}
                         | {k + "_all": v for k, v in t.items()} for name, t in times.items()}
                entry["bit_identical"] = bits(results["threads"]) == bits(
                    results["local_cluster"])
                report["chunks"][str(count)] = entry
                print(f"{count:6d} chunks: " + ", ".join(
                    f"{name} {e['seconds_median']:.3f} s (client "
                    f"{e['client_seconds_median'] * 1e3:.1f} ms)"
                    for name, e in entry.items() if name in evs), file=sys.stderr)
    report["load_average_after"] = os.getloadavg()
    return report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cols", type=int, default=64)
    p.add_argument("--hidden", type=int, default=25)
    p.add_argument("--chunk-rows", type=int, default=62_500)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--strategy", default="one-pass")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the report here")
    p.add_argument("--sweep", default=None,
                   help="comma-separated chunk counts: time per evaluation against chunks")
    p.add_argument("--uncompressed", action="store_true",
                   help="sweep stores without compression (read straight from their files)")
    p.add_argument("--memory", action="store_true",
                   help="sweep a NumPy array held in memory (on the LocalCluster, in the "
                        "workers' memory) instead of stores")
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    record = provenance.start("benchmarks/cluster_overhead.py", argv, args.allow_load,
                              args.wait)
    if args.sweep:
        text = json.dumps({**provenance.finish(record), **sweep(args)}, indent=2)
        print(text)
        if args.json:
            with open(args.json, "w") as f:
                f.write(text + "\n")
        return 0
    report = {**provenance.finish(record), **run(args)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    s = report["seconds_per_evaluation"]
    print(f"\nper evaluation ({args.strategy}, {args.rows} x {args.cols}, {report['chunks']} "
          f"chunks): threads {s['threads']['median']:.3f} s, LocalCluster "
          f"{s['local_cluster']['median']:.3f} s, ratio "
          f"{report['ratio_cluster_over_threads_median']:.2f}; bit-identical: "
          f"{report['bit_identical']}", file=sys.stderr)
    return 0 if report["bit_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
