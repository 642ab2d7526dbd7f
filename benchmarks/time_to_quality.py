"""Time and passes over the data to a good model: streamae against fair peers.

The same data, the same objective and the same initial weights
(``random_state=0``) for every subject; float32 arithmetic for all of them.

streamae default, streamae warmup="none"
    ``SparseAutoencoder(**objective, random_state=0)`` with every other
    parameter at its default (the warm-up as shipped), and the same with
    ``warmup="none"``, fitted on the Zarr store; passes are ``history_``'s
    ``data_passes``; the weights of every iteration are kept (callback).
scipy L-BFGS-B, torch LBFGS, torch adam, torch sgd
    See ``peers.py``: each as its documentation shows it, on the data in
    memory (loaded before the clock starts).

Every run gets the same wall budget (``--budget``); streamae also stops at
its own tolerance or ``max_iter``. The minibatch methods run over a grid
(batch sizes x learning rates x constant / cosine schedule) whose learning
rates are extended until the best setting for every tolerance lies inside
the grid. Afterwards, and not charged to anyone, every kept point is scored
by an independent float64 NumPy objective over every row (``exact.py``).
"best" is the lowest exact cost any subject reached (or a long streamae run,
``--reference-iter``); a tolerance is reached at the first kept point whose
exact cost is within it (no monotonicity assumed). "final" is the last
point of every run, "best point" the lowest.

The full-batch subjects run ``--repeats`` times, interleaved (round 1 of
every subject, then round 2, ...): tables give the median and the range.

``--cold`` evicts the store's pages from the page cache before every pass of
the streamae subjects (``posix_fadvise(DONTNEED)``, the out-of-core
setting); the peers hold the data in memory either way (use
``--streamae-only`` with ``--cold``).

Run: python benchmarks/time_to_quality.py --dataset patches|colour [--rows N]
         [--budget S] [--repeats R] [--cold --streamae-only] [--json F]
     python benchmarks/time_to_quality.py --quick    (CI smoke run, seconds)
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import peers  # noqa: E402
import provenance  # noqa: E402
import ttq_tables  # noqa: E402
from exact import exact_cost  # noqa: E402

LEVELS = (0.05, 0.01, 0.001)
LR_STEP = math.sqrt(10.0)  # neighbouring learning rates of the grid
LR_START = {"adam": (1e-3, 10**-2.5, 1e-2, 10**-1.5), "sgd": (10**-1.5, 0.1, 10**-0.5, 1.0)}
BATCHES = (64, 256, 2048)
SCHEDULES = ("constant", "cosine")
# Points kept per run: every full-data iteration, a warm-up's cheap
# iterations thinned to about POINTS per run; minibatch runs at GRID_POINTS
# fixed times (``--grid-points``): finely enough that a crossing early in
# the budget is placed to within a fraction of a pass.
POINTS, GRID_POINTS = 100, 48
MAX_EXTENSIONS = 6  # learning rates added per method at most


# ---------------------------------------------------------------- streamae

def run_streamae(dataset, warmup, budget, cold, max_iter):
    """A default fit (or ``warmup="none"``) of the store, weights kept every iteration."""
    from cold import chunk_files, evict
    from dask.callbacks import Callback

    from streamae import SparseAutoencoder

    name = "streamae default" if warmup is None else f"streamae warmup={warmup}"
    trace = peers.Trace(name, budget, budget / POINTS)
    phases = trace.extra.setdefault("phases", {})

    def callback(model, record):
        phases[record.get("phase", "full")] = phases.get(record.get("phase", "full"), 0) + 1
        theta = np.concatenate([np.ravel(model.params_[k]) for k in ("W1", "b1", "W2", "b2")])
        phase = record.get("phase", "full")
        return trace.keep(record["data_passes"], theta, thin=phase != "full", phase=phase)

    options = {} if warmup is None else {"warmup": warmup}
    if max_iter is not None:
        options["max_iter"] = max_iter
    model = SparseAutoencoder(**dataset.hyper, random_state=0, **options)
    files = chunk_files(dataset.store)
    evictor = Callback(start=lambda dsk: evict(files)) if cold else Callback()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stopped by max_iter or the budget: measured
        trace.t0 = time.perf_counter()
        trace.keep(0, datasets.initial_theta(dataset), phase="start")
        with evictor:
            model.fit(dataset.store, callback=callback)
    first = model.history_[0]
    trace.extra.update(stop=model.stop_reason_, evaluations=model.evaluations_,
                       max_iter=model.max_iter, warmup=model.warmup,
                       seconds_per_pass=seconds_per_pass(model.history_))
    if first.get("phase", "full") == "full":  # its cost is the full objective at the start
        trace.extra["start_cost"] = first["cost"]
    return trace.close()


def seconds_per_pass(history):
    """Wall seconds per full-data evaluation over the fit's full phase, or None."""
    full = [r for r in history if r.get("phase", "full") == "full"]
    if len(full) < 2 or full[-1]["data_passes"] <= full[0]["data_passes"]:
        return None
    return ((full[-1]["seconds"] - full[0]["seconds"])
            / (full[-1]["data_passes"] - full[0]["data_passes"]))


# ---------------------------------------------------------------- scoring

def score(trace, X, dataset, theta0, rnd=0):
    """The run's points with their exact costs (the weights are dropped afterwards)."""
    t0 = time.perf_counter()
    points = [[p["seconds"], p["passes"], exact_cost(X, p["theta"], dataset)]
              for p in trace.points]
    out = {"subject": trace.name, "setting": trace.setting, "round": rnd,
           "budget": trace.budget, "points": points, **trace.extra,
           "same_start": same_start(trace, points, theta0),
           "scoring_seconds": time.perf_counter() - t0}
    for key in ("evaluations", "phase"):
        values = [p.get(key) for p in trace.points]
        if any(v is not None for v in values):
            out[f"point_{key}"] = values
    return out


def same_start(trace, points, theta0):
    """Whether the run started from ``theta0``: its first weights (the peers), or the
    cost streamae's first record gives for them; None when nothing says."""
    if "start_cost" in trace.extra:  # a float32 evaluation against the float64 one
        return bool(abs(trace.extra["start_cost"] - points[0][2]) <= 1e-5 * points[0][2])
    if trace.name.startswith("streamae"):
        return None  # its first record is on the warm-up's subsample
    return bool(np.allclose(trace.points[0]["theta"], theta0, rtol=1e-6, atol=1e-7))


def reached(run, best, level):
    """(seconds, passes) of the run's first point within ``level`` of ``best``, or None."""
    for seconds, passes, cost in run["points"]:
        if cost <= best * (1 + level):
            return [seconds, passes]
    return None


def best_point(run):
    return min(cost for _, _, cost in run["points"])


def final(run):
    return run["points"][-1][2]


# ---------------------------------------------------------------- grid

def grid_key(run, best, level):
    """Ranking of a grid setting for one tolerance: sooner first, then lower cost."""
    hit = reached(run, best, level)
    return (hit[0] if hit else math.inf, best_point(run))


def winners(grid, best):
    """{method: {level: index of the best run in ``grid``}}."""
    out = {}
    for method in sorted({r["setting"]["method"] for r in grid}):
        runs = [i for i, r in enumerate(grid) if r["setting"]["method"] == method]
        out[method] = {str(level): min(runs, key=lambda i: grid_key(grid[i], best, level))
                       for level in LEVELS}
    return out


def edge_extensions(grid, best):
    """Settings to add: the next learning rate beyond a winner at the edge of its family."""
    todo = []
    for by_level in winners(grid, best).values():
        for i in by_level.values():
            s = grid[i]["setting"]
            family = [r["setting"]["lr"] for r in grid if all(
                r["setting"][k] == s[k] for k in ("method", "batch", "schedule"))]
            for edge, factor in ((min(family), 1 / LR_STEP), (max(family), LR_STEP)):
                if s["lr"] == edge:
                    new = dict(s, lr=edge * factor)
                    if new not in todo:
                        todo.append(new)
    return todo


def run_grid(X, dataset, theta0, budget, settings, best_so_far, max_extensions, log,
             points=GRID_POINTS):
    """Every setting once, then learning rates added until no winner is at an
    edge; each run keeps its weights at ``points`` fixed times."""
    every = budget / points
    grid, added = [], {m: 0 for m in {s["method"] for s in settings}}

    def run(setting):
        load = os.getloadavg()[0]
        trace = peers.run_minibatch(X, dataset, theta0, budget, every, **setting)
        grid.append(dict(score(trace, X, dataset, theta0), load_before=load))
        log(f"  {setting}: final {final(grid[-1]):.6f}, best point {best_point(grid[-1]):.6f}")

    for setting in settings:
        run(setting)
    while True:
        best = min(best_so_far, min(best_point(r) for r in grid))
        todo = [s for s in edge_extensions(grid, best)
                if added[s["method"]] < max_extensions]
        if not todo:
            capped = [s for s in edge_extensions(grid, best)]
            return grid, capped
        for setting in todo:
            added[setting["method"]] += 1
            log(f"  extending the grid: best at an edge, adding lr {setting['lr']:.3g}")
            run(setting)


def grid_settings(args):
    """The starting grid: methods x batch sizes x schedules x learning rates."""
    lrs = {m: LR_START[m][1:3] if args.quick else LR_START[m] for m in LR_START}
    return [{"method": m, "batch": b, "lr": lr, "schedule": sch}
            for m in args.methods for b in args.batches for sch in args.schedules
            for lr in lrs[m]]


# ---------------------------------------------------------------- summary

def summary(runs, best):
    """Per subject: per tolerance the (seconds, passes) of each round, finals, best points."""
    out = {}
    for run in runs:
        row = out.setdefault(run["subject"], {"reached": {str(lv): [] for lv in LEVELS},
                                              "final": [], "best_point": [], "seconds": [],
                                              "passes": []})
        for level in LEVELS:
            row["reached"][str(level)].append(reached(run, best, level))
        row["final"].append(final(run))
        row["best_point"].append(best_point(run))
        row["seconds"].append(run["points"][-1][0])
        row["passes"].append(run["points"][-1][1])
    return out


def grid_summary(grid, best):
    """The best setting per method and tolerance: its setting and (seconds, passes)."""
    out = {}
    for method, by_level in winners(grid, best).items():
        out[method] = {}
        for level, i in by_level.items():
            run = grid[i]
            out[method][level] = {"setting": run["setting"], "index": i,
                                  "reached": reached(run, best, float(level)),
                                  "final": final(run), "best_point": best_point(run)}
    return out


# ---------------------------------------------------------------- main

def _ints(text):
    return tuple(int(x) for x in text.split(","))


def _methods(text):
    methods = tuple(text.split(","))
    unknown = sorted(set(methods) - set(LR_START))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown method {', '.join(unknown)}: choose from {', '.join(LR_START)}")
    return methods


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("patches", "colour"), default="patches")
    p.add_argument("--rows", type=int, default=None,
                   help="rows of the dataset (default 1,000,000 patches, 200,000 colour)")
    p.add_argument("--budget", type=float, default=30.0,
                   help="wall seconds of every run, streamae's and each peer's (default 30)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="streamae's max_iter (default: the estimator's default)")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved rounds of the full-batch subjects (default 3)")
    p.add_argument("--cold", action="store_true",
                   help="evict the store from the page cache before every streamae pass")
    p.add_argument("--streamae-only", action="store_true",
                   help="only the two streamae subjects (e.g. with --cold)")
    p.add_argument("--reference-iter", type=int, default=0,
                   help="also a long default streamae fit of this max_iter (not timed): "
                        "its final cost is a candidate for 'best'")
    p.add_argument("--best-from", default=None,
                   help="a results file of the same dataset whose 'best' is a candidate too "
                        "(e.g. the warm run's, for --cold)")
    p.add_argument("--max-extensions", type=int, default=MAX_EXTENSIONS,
                   help=f"learning rates added to the grid per method at most "
                        f"(default {MAX_EXTENSIONS})")
    p.add_argument("--batches", type=_ints, default=BATCHES,
                   help="batch sizes of the grid (default 64,256,2048)")
    p.add_argument("--methods", type=_methods, default=tuple(LR_START),
                   help="minibatch methods of the grid (default adam,sgd)")
    p.add_argument("--schedules", type=lambda t: tuple(t.split(",")), default=SCHEDULES,
                   help="schedules of the grid (default constant,cosine)")
    p.add_argument("--grid-points", type=int, default=GRID_POINTS,
                   help="times a mini-batch run keeps its weights, evenly over the budget "
                        f"(default {GRID_POINTS})")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (CI): implies "
                   "--allow-load, 4,000 rows, 1 s budgets, a 4-setting grid")
    p.add_argument("--rescore", default=None, metavar="RESULTS",
                   help="run nothing but --reference-iter (and read --best-from), then "
                        "recompute this results file's tolerances against the new best")
    p.add_argument("--workdir", default=os.path.join(HERE, "work"))
    p.add_argument("--json", default=None)
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.budget, args.repeats = 4000, 1.0, 1
        args.allow_load, args.max_extensions = True, 1
        args.batches, args.schedules = (256,), ("constant",)
    args.rows = args.rows or datasets.DEFAULT_ROWS[args.dataset]
    args.skipped = []
    if not (args.streamae_only or args.rescore) and importlib.util.find_spec("torch") is None:
        if not args.quick:  # a record run without its PyTorch peers is not a comparison
            p.error("PyTorch is not installed: pip install torch, or pass --streamae-only")
        args.skipped = ["torch LBFGS and the Adam/SGD grid: PyTorch is not installed"]
    return args


def full_batch_subjects(args):
    """(name, function of (X, dataset, theta0)) of every full-batch subject, in run order."""
    B, every = args.budget, args.budget / POINTS
    subjects = [
        ("streamae default", lambda X, d, t: run_streamae(d, None, B, args.cold, args.max_iter)),
        ("streamae warmup=none",
         lambda X, d, t: run_streamae(d, "none", B, args.cold, args.max_iter))]
    if not args.streamae_only:
        subjects.append(("scipy L-BFGS-B", lambda X, d, t: peers.run_scipy(X, d, t, B, every)))
    if not args.streamae_only and not args.skipped:
        subjects.append(
            ("torch LBFGS", lambda X, d, t: peers.run_torch_lbfgs(X, d, t, B, every)))
    return subjects


def prime(dataset, X):
    """A tiny untimed fit, so that no timed run loads or compiles streamae's kernels."""
    from streamae import SparseAutoencoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SparseAutoencoder(**dataset.hyper, max_iter=2, warmup="none").fit(dataset.store)


def run_rounds(args, X, dataset, theta0, log):
    """The full-batch subjects, ``--repeats`` interleaved rounds, each run scored."""
    prime(dataset, X)
    runs = []
    for rnd in range(args.repeats):
        for name, run in full_batch_subjects(args):
            load = os.getloadavg()[0]
            trace = run(X, dataset, theta0)
            runs.append(dict(score(trace, X, dataset, theta0, rnd), load_before=load))
            log(f"round {rnd + 1}/{args.repeats}, {name}: final {final(runs[-1]):.6f} after "
                f"{runs[-1]['points'][-1][0]:.1f} s, {runs[-1]['points'][-1][1]:.1f} passes")
    return runs


def reference(args, X, dataset):
    """Final exact cost of a long default streamae fit (not timed), or None."""
    if not args.reference_iter:
        return None
    from streamae import SparseAutoencoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # tol=0: only max_iter ends it (the default tol may stop it above the optimum).
        model = SparseAutoencoder(**dataset.hyper, random_state=0, tol=0.0,
                                  max_iter=args.reference_iter).fit(dataset.store)
    theta = np.concatenate([np.ravel(model.params_[k]) for k in ("W1", "b1", "W2", "b2")])
    return {"max_iter": args.reference_iter, "stop": model.stop_reason_,
            "cost": exact_cost(X, theta, dataset)}


def outside_candidates(args, X, dataset):
    """Candidates for "best" from outside the timed runs: the ``--reference-iter`` fit
    and ``--best-from``'s file. Returns (list of (cost, source), the reference or None)."""
    ref = reference(args, X, dataset)
    candidates = []
    if ref:
        candidates.append((ref["cost"], f"long streamae run (max_iter {ref['max_iter']})"))
    if args.best_from:
        with open(args.best_from) as f:
            candidates.append((json.load(f)["best"], f"best of {args.best_from}"))
    return candidates, ref


def rescore(args, argv, log):
    """A finished results file (``--rescore``) with more candidates for "best".

    Runs ``--reference-iter`` (and reads ``--best-from``) now and recomputes
    every tolerance from the runs' kept points, which hold their exact costs;
    nothing is run again. The file keeps its own provenance and gains
    ``rescored`` (this run's).
    """
    record = provenance.start("benchmarks/time_to_quality.py", argv, args.allow_load, args.wait)
    with open(args.rescore) as f:
        result = json.load(f)
    dataset = datasets.make(result["dataset"]["name"], result["dataset"]["rows"], args.workdir)
    candidates, ref = outside_candidates(args, datasets.load(dataset), dataset)
    if ref:
        result["reference"] = ref
    best, result["best_source"] = min([(result["best"], result["best_source"]), *candidates])
    result.update(best=best, subjects=summary(result["runs"], best),
                  rescored=provenance.finish(record))
    if result["grid"]:
        result["grid_best"] = grid_summary(result["grid"], best)
        result["grid_still_at_edge"] = edge_extensions(result["grid"], best)
    log(ttq_tables.ttq_table(result))
    with open(args.json or args.rescore, "w") as f:
        json.dump(result, f, indent=1)
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    t0 = time.perf_counter()

    def log(text):
        print(f"[{time.perf_counter() - t0:7.0f} s] {text}", flush=True)

    if args.rescore:
        return rescore(args, argv, log)
    record = provenance.start("benchmarks/time_to_quality.py", argv, args.allow_load, args.wait)

    dataset = datasets.make(args.dataset, args.rows, args.workdir)
    X = datasets.load(dataset)
    theta0 = datasets.initial_theta(dataset)
    runs = run_rounds(args, X, dataset, theta0, log)
    candidates, ref = outside_candidates(args, X, dataset)
    candidates += [(best_point(r), f"{r['subject']} (best point)") for r in runs]
    grid, capped = [], []
    if not args.streamae_only and not args.skipped:
        grid, capped = run_grid(X, dataset, theta0, args.budget, grid_settings(args),
                                min(candidates)[0], args.max_extensions, log, args.grid_points)
        candidates += [(best_point(r), f"torch {r['setting']['method']} "
                                       f"{ttq_tables.setting_text(r['setting'])} (best point)")
                       for r in grid]
    best, best_source = min(candidates)
    result = finish(record, args, dataset, runs, grid, capped, best, best_source, ref)
    log(ttq_tables.ttq_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def finish(record, args, dataset, runs, grid, capped, best, best_source, ref):
    """The results file's content."""
    return {**provenance.finish(record), "dataset": dataset.describe(), "cold": args.cold,
            "budget": args.budget, "repeats": args.repeats, "quick": args.quick,
            "levels": list(LEVELS), "best": best, "best_source": best_source,
            "reference": ref, "subjects": summary(runs, best), "runs": runs,
            "grid": grid, "grid_best": grid_summary(grid, best) if grid else {},
            "grid_still_at_edge": capped, "skipped": args.skipped}


if __name__ == "__main__":
    main()
