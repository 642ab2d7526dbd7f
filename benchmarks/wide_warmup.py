"""A default fit on wide data: 64x64 patches (4,096 values a row) warm up too.

Writes (once) a store of ``--rows`` 64x64 grey patches of the built-in
photographs, then fits ``SparseAutoencoder(n_hidden=--hidden)`` with its
default warm-up for ``--max-iter`` full-data iterations, and records the
warm-up's plan (sample stride, levels, budgets), each phase's iterations,
passes over the data and seconds, and the cost at the end of each phase.

Run: python benchmarks/wide_warmup.py [--rows 100000] [--hidden 100] [--max-iter 5]
         [--dir /work/tmp] [--json benchmarks/results/wide_warmup.json]
"""

import argparse
import json
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import provenance  # noqa: E402


def make_store(path, rows):
    """64x64 grey patches of the built-in photographs, float32, written once."""
    from streamae import write_patches

    if not os.path.exists(path):
        write_patches(path, builtin=True, size=64, count=rows, seed=0)
    return path


def phases(history):
    """Per phase: records, iterations, passes at its end, seconds at its end, last cost."""
    out = {}
    for record in history:
        key = record["phase"] if record["phase"] == "full" else f"warmup level {record['level']}"
        entry = out.setdefault(key, {"records": 0, "first_iteration": record["iteration"],
                                     "rows": record.get("rows")})
        entry.update(records=entry["records"] + 1, last_iteration=record["iteration"],
                     passes=record["data_passes"], seconds=record["seconds"],
                     cost=record["cost"])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--max-iter", type=int, default=5)
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--json", default=os.path.join(HERE, "results", "wide_warmup.json"))
    provenance.add_arguments(parser)
    args = parser.parse_args(argv)
    record = provenance.start("benchmarks/wide_warmup.py", sys.argv[1:] if argv is None else argv,
                              args.allow_load, args.wait)

    import numpy as np

    from streamae import SparseAutoencoder, _warmup

    store = make_store(os.path.join(args.dir, f"wide-64x64-{args.rows}.zarr"), args.rows)
    model = SparseAutoencoder(n_hidden=args.hidden, max_iter=args.max_iter)
    plan = _warmup.plan("auto", (args.rows, 4096), np.dtype("float32").itemsize, args.hidden)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stopped by max_iter: measured, not a failure
        model.fit(store)
    result = {"rows": args.rows, "n_visible": 4096, "n_hidden": args.hidden,
              "max_iter": args.max_iter, "store_bytes": args.rows * 4096 * 4,
              "plan": None if plan is None else plan.describe(),
              "phases": phases(model.history_), "wall_seconds": time.perf_counter() - t0,
              "stop": model.stop_reason_}
    out = {**provenance.finish(record), **result}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
