"""The tutorial (docs/tutorial.md) run at full size, as a user runs it: every
command's output, wall time and peak memory, and every figure its prose quotes.

In a fresh folder (``--dir``, default a temporary one) it runs, with the
``streamae`` command in a process of its own each, the tutorial's commands in
its order: the sample photos; 100,000 grey patches; the default 64 -> 25
model, its pictures and its features; the colour section (50,000 colour
patches, 100 units, lambda 1e-4) and the lambda-3e-3 colour model its prose
compares; the ZCA section (100,000 raw colour patches of the built-in photos,
ZCA with epsilon 0.1 and 0.03, a 400-unit linear-decoder model on each).
For each command it records the lines it printed (stdout), its wall time and
its peak resident memory (``ru_maxrss`` of that child, from ``os.wait4`` in
a small launcher process: see `LAUNCHER`).

From the stores and models it computes the prose's figures: the sparsity
term at the start and end of the grey fit, how many iterations it takes to
fall below 1% of its start, how far the units' rho_hat lie from rho, the
explained variance and dead / saturated units of each model (the last record
of ``<model>.metrics.jsonl``), the ZCA fits' cost along the way, the raw
colour patches' variance per value, and the share of each kind of filter in
the colour models (`filter_classes`: the rule is defined there).

Then the "Scale and memory" section: ``streamae patches --builtin`` for each of
``--scale-counts`` (peak memory, wall time, bytes on disk; a count whose
store would not fit on the free disk is skipped, with the reason recorded),
and ``streamae import`` / ``encode`` on ``--import-rows`` x 64 float32 rows
(a ``.npy`` file and a Zarr array of 16 MiB chunks).

Writes JSON (command, commit, date, machine, load average before and after:
`provenance`) to ``--json`` (default benchmarks/results/tutorial.json) and
copies the pictures ``show`` wrote into docs/images/ under the tutorial's
names (not with ``--quick``); ``python benchmarks/render_docs.py`` then
renders docs/tutorial.md from benchmarks/templates/tutorial.md.

Usage (from the repository root)::

    python benchmarks/tutorial.py                  # full size: about an hour on 2 cores
    python benchmarks/tutorial.py --quick --allow-load --json /tmp/tutorial.json
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import zarr

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import provenance  # noqa: E402
from common import make_store, uniform_block  # noqa: E402

# Sizes of a --quick run: the caps tests/docs_blocks.py uses for the docs'
# blocks, fewer iterations still (a smoke test, not a measurement).
QUICK_COUNT, QUICK_MAX_ITER = 2000, 5
QUICK_SCALE, QUICK_IMPORT = "1000,20000", "5000,20000"
SCALE_COUNTS, IMPORT_ROWS = "1000,1000000,10000000,100000000", "1000000,5000000"
IMPORT_COLS = 64
# 16 MiB chunks of 64 float32 values, as streamae chooses by default.
IMPORT_CHUNK_ROWS = 16 * 2**20 // (IMPORT_COLS * 4)

# A filter is "flat colour" when at least this share of its energy is in its
# three per-channel means, a "grey edge" when at least this share of the rest
# is achromatic (the same at R, G and B): see filter_classes.
FLAT_SHARE = GREY_SHARE = 0.8

# The picture each show step wrote -> its name in docs/images/.
PICTURES = {"model-pictures/filters.png": "filters.png", "model-pictures/cost.png": "cost.png",
            "model-pictures/rho_hat.png": "rho_hat.png",
            "colour2-pictures/filters.png": "colour-filters.png",
            "colour-zca-pictures/filters.png": "colour-zca-filters.png",
            "colour-zca-eps003-pictures/filters.png": "colour-zca-eps003-filters.png"}

ZCA_TRAIN = ["--decoder", "linear", "--hidden", "400", "--rho", "0.035", "--weight-decay",
             "3e-3", "--beta", "5", "--max-iter", "200"]
COLOUR_TRAIN = ["--hidden", "100", "--rho", "0.035", "--beta", "3"]


def tutorial_steps():
    """(name, argv of ``streamae``) of every command, in the tutorial's order, at the
    tutorial's sizes; ``colour_decay_train`` is the model its prose compares."""
    return [
        ("photos", ["photos", "photos/"]),
        ("patches", ["patches", "patches.zarr", "--images", "photos/", "--count", "100000"]),
        ("train", ["train", "patches.zarr", "--out", "model.zarr"]),
        ("show", ["show", "model.zarr"]),
        ("encode", ["encode", "model.zarr", "patches.zarr", "features.zarr"]),
        ("colour_patches", ["patches", "colour.zarr", "--images", "photos/", "--channels", "rgb",
                            "--count", "50000"]),
        ("colour_train", ["train", "colour.zarr", "--out", "colour2.zarr", *COLOUR_TRAIN,
                          "--weight-decay", "1e-4"]),
        ("colour_show", ["show", "colour2.zarr"]),
        ("colour_decay_train", ["train", "colour.zarr", "--out", "colour-decay.zarr",
                                *COLOUR_TRAIN, "--weight-decay", "3e-3"]),
        ("raw_patches", ["patches", "raw.zarr", "--builtin", "--channels", "rgb", "--no-whiten",
                         "--count", "100000"]),
        ("whiten", ["whiten", "raw.zarr", "white.zarr", "--zca", "--epsilon", "0.1"]),
        ("zca_train", ["train", "white.zarr", "--out", "colour-zca.zarr", *ZCA_TRAIN]),
        ("zca_show", ["show", "colour-zca.zarr"]),
        ("whiten_eps003", ["whiten", "raw.zarr", "white-eps003.zarr", "--zca", "--epsilon",
                           "0.03"]),
        ("zca_eps003_train", ["train", "white-eps003.zarr", "--out", "colour-zca-eps003.zarr",
                              *ZCA_TRAIN]),
        ("zca_eps003_show", ["show", "colour-zca-eps003.zarr"]),
    ]


def shrink(argv):
    """``argv`` at the sizes of a --quick run: --count and --max-iter capped, and
    --max-iter added to ``train``."""
    caps = {"--count": QUICK_COUNT, "--max-iter": QUICK_MAX_ITER}
    out = list(argv)
    for i, word in enumerate(out[:-1]):
        if word in caps:
            out[i + 1] = str(min(int(out[i + 1]), caps[word]))
    if out[0] == "train" and "--max-iter" not in out:
        out += ["--max-iter", str(QUICK_MAX_ITER)]
    return out


# ---------------------------------------------------------------- running a command

def streamae_command():
    """How to call ``streamae``: the console script beside this Python, as a user
    calls it, else ``python -m streamae.cli``."""
    script = os.path.join(os.path.dirname(sys.executable), "streamae")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "streamae.cli"]


# Starts a command and writes its wall time and peak memory (KiB) to argv[1] as
# JSON. Linux counts a parent's resident set into the peak of a child it
# forks (at exec, the peak of the memory image the child leaves behind is
# kept): a command started from this process, which holds stores' chunks and
# models, would report at least this process's peak. Started from this small
# launcher instead, it reports its own.
LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - t0
proc.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss}, f)
sys.exit(proc.returncode)
"""


def run(argv, cwd, name):
    """Run ``streamae ARGV`` in ``cwd`` as a process of its own (started by
    `LAUNCHER`).

    Returns
    -------
    dict
        ``command`` (as typed), ``stdout`` (its lines), ``seconds`` (wall time,
        start of the process to its exit) and ``peak_rss_bytes`` (its maximum
        resident set size, ``ru_maxrss`` of ``wait4``).

    Raises SystemExit with the end of its stderr when it fails.
    """
    env = dict(os.environ, MPLBACKEND="Agg")
    out_path, err_path, usage_path = (os.path.join(cwd, f".{name}.{s}")
                                      for s in ("stdout", "stderr", "usage"))
    with open(out_path, "w") as out, open(err_path, "w") as err:
        code = subprocess.run([sys.executable, "-c", LAUNCHER, usage_path,
                               *streamae_command(), *argv], cwd=cwd, stdout=out, stderr=err,
                              env=env).returncode
    with open(out_path) as f:
        lines = f.read().splitlines()
    if code != 0:
        with open(err_path) as f:
            raise SystemExit(f"streamae {' '.join(argv)} failed ({code}):\n"
                             + f.read()[-3000:])
    with open(usage_path) as f:
        usage = json.load(f)
    record = {"command": "streamae " + " ".join(argv), "stdout": lines,
              "seconds": usage["seconds"],
              "peak_rss_bytes": usage["maxrss_kib"] * 1024}  # Linux reports KiB
    print(f"{usage['seconds']:8.1f} s {usage['maxrss_kib'] / 1024:6.0f} MiB  "
          f"{record['command']}", file=sys.stderr, flush=True)
    return record


def run_tutorial(work, quick):
    """{step name: `run` record} of every tutorial command, run in ``work``."""
    steps = {}
    for name, argv in tutorial_steps():
        steps[name] = run(shrink(argv) if quick else argv, work, name)
    return steps


# ---------------------------------------------------------------- the prose's figures

def metrics(work, model):
    """The records of ``<model>.metrics.jsonl`` in ``work`` (one per iteration)."""
    path = os.path.join(work, model.removesuffix(".zarr") + ".metrics.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def collapse_iteration(records, share=0.01):
    """The first iteration at which the sparsity term is below ``share`` of its
    value at the start (an iteration of the warm-up, when the fit has one: the
    records number the warm-up's iterations and the full phase's apart), and
    its phase; None when it never is."""
    start = records[0]["sparsity"]
    for r in records:
        if r["sparsity"] < share * start:
            return {"iteration": r["iteration"], "phase": r.get("phase")}
    return None


def fit_figures(work, model):
    """What the prose says of a fit: its last record's metrics, the sparsity term
    and rho_hat's range at the start, when the sparsity term collapses, and the
    cost at iterations half-way, three quarters of the way and at the end of the
    full-data phase."""
    records = metrics(work, model)
    last = records[-1]
    full = {r["iteration"]: r["cost"] for r in records if r.get("phase") == "full"}
    n = last["iteration"]
    marks = sorted({n // 2, 3 * n // 4, n} & set(full))
    params, attrs = read_model(os.path.join(work, model))
    keep = ("iteration", "cost", "explained_variance", "dead_units", "saturated_units",
            "rho_hat_min", "rho_hat_mean", "rho_hat_max", "sparsity", "seconds", "data_passes")
    return {**{k: last.get(k) for k in keep},
            "n_hidden": int(params["W1"].shape[0]), "rho": attrs["rho"],
            "records": len(records),
            "warmup_records": sum(r.get("phase") == "warmup" for r in records),
            "sparsity_start": records[0]["sparsity"],
            "rho_hat_start": [records[0]["rho_hat_min"], records[0]["rho_hat_max"]],
            "sparsity_collapse": collapse_iteration(records),
            "cost_at": [[i, full[i]] for i in marks]}


def read_model(path):
    """(weights, attributes) of a saved model."""
    from streamae._store import read_model as read

    return read(path)


def drawn_filters(path):
    """The model's filters as ``show`` draws them: rows of W1, de-whitened
    (W1 Z, the exercise's ``W * ZCAWhite``) when the model keeps a whitening,
    less the global mean (`streamae._plots.filter_grid` subtracts it too)."""
    from streamae._whiten import dewhiten

    params, attrs = read_model(path)
    W = params["W1"]
    if attrs.get("whitening") is not None:
        W = dewhiten(W, attrs["whitening"])
    return W - W.mean()


def filter_classes(W):
    """How many colour filters (rows of ``W``: R, G, B blocks) are of each kind.

    Each filter splits into three orthogonal parts: its three per-channel
    means (a flat colour), the achromatic part of the rest (its mean over R, G
    and B at each pixel, the same in every channel) and the chromatic
    remainder. A filter is

    - ``flat_colour`` when at least `FLAT_SHARE` of its energy (sum of squares)
      is in the per-channel means;
    - ``grey_edge`` otherwise, when at least `GREY_SHARE` of the energy left
      after removing the means is achromatic (luminance edges and bars);
    - ``colour_edge`` otherwise (coloured edges, gradients, blobs).

    Returns
    -------
    dict
        The three counts and ``units``.
    """
    s, n = W.shape
    A = np.asarray(W, np.float64).reshape(s, 3, n // 3)
    means = A.mean(axis=2, keepdims=True)
    rest = A - means
    grey = rest.mean(axis=1, keepdims=True)
    e_mean = (means ** 2).sum(axis=(1, 2)) * (n // 3)
    e_grey = (grey ** 2).sum(axis=(1, 2)) * 3
    e_colour = ((rest - grey) ** 2).sum(axis=(1, 2))
    flat = e_mean >= FLAT_SHARE * (e_mean + e_grey + e_colour)
    grey_edge = ~flat & (e_grey >= GREY_SHARE * (e_grey + e_colour))
    return {"units": int(s), "flat_colour": int(flat.sum()),
            "grey_edge": int(grey_edge.sum()),
            "colour_edge": int(s - flat.sum() - grey_edge.sum())}


def variance_per_value(path):
    """Sum over columns of each column's variance, over the columns: the store's
    variance per value (what ZCA's epsilon is compared with), read chunk by chunk."""
    z = zarr.open_array(path, mode="r")
    m, n = z.shape
    total, squares = np.zeros(n), np.zeros(n)
    for start in range(0, m, z.chunks[0]):
        block = np.asarray(z[start:start + z.chunks[0]], np.float64)
        total += block.sum(axis=0)
        squares += (block ** 2).sum(axis=0)
    mean = total / m
    return float((squares / m - mean ** 2).mean())


def store_attrs(path):
    """What a store records of how it was made (``attrs["streamae"]``)."""
    return dict(zarr.open_array(path, mode="r").attrs["streamae"])


def figures(work):
    """Every figure of the tutorial's prose, from its stores and models."""
    from streamae._warmup import AUTO_MIN_ROWS

    out = {"warmup_min_rows": AUTO_MIN_ROWS,
           "patches_attrs": store_attrs(os.path.join(work, "patches.zarr")),
           "raw_attrs": store_attrs(os.path.join(work, "raw.zarr")),
           "raw_variance_per_value": variance_per_value(os.path.join(work, "raw.zarr")),
           "epsilons": {"zca": 0.1, "zca_eps003": 0.03},
           "filter_rule": {"flat_share": FLAT_SHARE, "grey_share": GREY_SHARE}}
    for key, model in (("gray", "model.zarr"), ("colour", "colour2.zarr"),
                       ("colour_decay", "colour-decay.zarr"), ("zca", "colour-zca.zarr"),
                       ("zca_eps003", "colour-zca-eps003.zarr")):
        out[key] = fit_figures(work, model)
        if key != "gray":
            out[key]["filters"] = filter_classes(drawn_filters(os.path.join(work, model)))
    return out


# ---------------------------------------------------------------- scale and memory

def bytes_on_disk(path):
    """Blocks the files under ``path`` take on disk, in bytes (as ``du``)."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.stat(os.path.join(root, f)).st_blocks * 512 for f in files)
    return total


def scale_case(count, work):
    """``streamae patches --builtin --count COUNT`` (8x8 grey, default chunks): its
    `run` record and bytes on disk; skipped, with the reason, when its store
    (about 256 bytes a patch) would not fit on the free disk with 2 GiB to spare."""
    need = count * IMPORT_COLS * 4 + 2 * 2**30
    free = shutil.disk_usage(work).free
    if free < need:
        return {"count": count, "skipped": f"{free / 1e9:.1f} GB free, {need / 1e9:.1f} GB "
                                           "needed"}
    out = f"scale-{count}.zarr"
    record = run(["patches", out, "--builtin", "--count", str(count)], work, f"scale-{count}")
    record.update(count=count, bytes_on_disk=bytes_on_disk(os.path.join(work, out)))
    shutil.rmtree(os.path.join(work, out))  # the 100,000,000 case alone takes about 21 GB
    return record


def write_sources(work, rows_list):
    """The inputs of the import runs: a ``.npy`` file of the most rows, and a
    Zarr array (16 MiB chunks, zstd) of each row count, 64 float32 columns
    uniform in [0.05, 0.95], written block by block; their names in ``work``."""
    big = max(rows_list)
    npy = f"src-{big}.npy"
    arr = np.lib.format.open_memmap(os.path.join(work, npy), mode="w+", dtype=np.float32,
                                    shape=(big, IMPORT_COLS))
    rng = np.random.default_rng(0)
    for start in range(0, big, IMPORT_CHUNK_ROWS):
        stop = min(big, start + IMPORT_CHUNK_ROWS)
        arr[start:stop] = uniform_block(rng, stop - start, IMPORT_COLS)
    arr.flush()
    del arr
    stores = {}
    for rows in rows_list:
        stores[rows] = f"src-{rows}.zarr"
        make_store(os.path.join(work, stores[rows]), rows, IMPORT_COLS,
                   min(IMPORT_CHUNK_ROWS, rows))
    return npy, stores


def import_cases(work, model, rows_list):
    """Peak memory of ``import`` (a .npy file, and a Zarr array, with ``--scale
    minmax``), of ``encode`` (``model``, a name in ``work``: 64 -> 25) on the largest
    row count, and of ``import --scale minmax-all`` of a Zarr array of each row count."""
    sub = os.path.join(work, "import")
    os.makedirs(sub)
    npy, stores = write_sources(sub, rows_list)
    big = max(rows_list)
    cases = {"rows": big, "cols": IMPORT_COLS, "chunk_rows": min(IMPORT_CHUNK_ROWS, big),
             "npy_minmax": run(["import", npy, "npy.zarr", "--scale", "minmax"], sub, "npy"),
             "zarr_minmax": run(["import", stores[big], "zarr.zarr", "--scale", "minmax"], sub,
                                "zarr"),
             "encode": run(["encode", os.path.join("..", model), "npy.zarr", "codes.zarr"],
                           sub, "encode"),
             "zarr_minmax_all": {}}
    for rows in sorted(rows_list):
        cases["zarr_minmax_all"][str(rows)] = run(
            ["import", stores[rows], f"all-{rows}.zarr", "--scale", "minmax-all"], sub,
            f"all-{rows}")
    shutil.rmtree(sub)
    return cases


# ---------------------------------------------------------------- the run

def copy_pictures(work, dest):
    """Copy the pictures ``show`` wrote into ``dest`` under the tutorial's names."""
    for source, name in PICTURES.items():
        shutil.copyfile(os.path.join(work, source), os.path.join(dest, name))
        print(f"copied {source} to {os.path.join(dest, name)}", file=sys.stderr)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=None, help="an empty folder to run in (default: a temp dir, "
                                               "removed afterwards)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: --count at most {QUICK_COUNT}, --max-iter at most "
                        f"{QUICK_MAX_ITER}, scale counts {QUICK_SCALE}, import rows "
                        f"{QUICK_IMPORT}; no pictures copied")
    p.add_argument("--scale-counts", default=None,
                   help=f"--count of each `patches` run of the Scale section (default "
                        f"{SCALE_COUNTS}; {QUICK_SCALE} with --quick)")
    p.add_argument("--import-rows", default=None,
                   help=f"rows of the import / encode runs (default {IMPORT_ROWS}; "
                        f"{QUICK_IMPORT} with --quick)")
    p.add_argument("--pictures", default=os.path.join(ROOT, "docs", "images"),
                   help="where the pictures go (default docs/images; '' for nowhere)")
    p.add_argument("--json", default=os.path.join(HERE, "results", "tutorial.json"))
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    args.scale_counts = args.scale_counts or (QUICK_SCALE if args.quick else SCALE_COUNTS)
    args.import_rows = args.import_rows or (QUICK_IMPORT if args.quick else IMPORT_ROWS)
    return args


def measure(work, args):
    """Every measurement of the run, made in ``work``."""
    report = {"quick": args.quick, "dir": work, "streamae": streamae_command()}
    report["steps"] = run_tutorial(work, args.quick)
    report["figures"] = figures(work)
    report["scale"] = [scale_case(int(c), work) for c in args.scale_counts.split(",")]
    report["import"] = import_cases(work, "model.zarr",
                                    [int(r) for r in args.import_rows.split(",")])
    if args.pictures and not args.quick:
        copy_pictures(work, args.pictures)
    return report


def main(argv=None):
    args = parse(argv)
    record = provenance.start("benchmarks/tutorial.py", sys.argv[1:] if argv is None else argv,
                              args.allow_load, args.wait)
    work = args.dir or tempfile.mkdtemp(prefix="streamae-tutorial-")
    os.makedirs(work, exist_ok=True)
    if os.listdir(work):
        raise SystemExit(f"--dir {work} is not empty: the tutorial starts in an empty folder")
    try:
        report = measure(work, args)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {**provenance.finish(record), **report}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json} ({report['run_seconds'] / 60:.1f} min)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
