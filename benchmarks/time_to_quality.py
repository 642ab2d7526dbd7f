"""Time and passes over the data to a good model: streamae against the peers.

The same data (whitened 8x8 natural-image patches, the demo's pipeline at
``--rows``), the same hyperparameters (rho 0.01, beta 3, lambda 1e-4, 25
hidden units, float32) and the same initial weights (``random_state=0``)
for every subject:

streamae warm-up / streamae plain
    ``SparseAutoencoder(warmup="auto" | "none").fit(store)`` on the Zarr
    store (one-pass, L-BFGS); passes are ``history_``'s ``data_passes``.
scipy L-BFGS-B
    ``scipy.optimize.minimize(method="L-BFGS-B", maxcor=100)`` on a
    vectorised float32 NumPy objective of the data in memory.
torch LBFGS
    ``torch.optim.LBFGS`` (strong Wolfe, history 100), full batch, in memory.
torch Adam
    Mini-batch Adam (rho_hat per batch, as the PyTorch recipes do) over a
    grid of batch sizes and learning rates; each configuration is reported.

Each subject runs for at most its time budget; its weights are kept after
every iteration (every quarter epoch for Adam). Afterwards, and not charged
to anyone, the exact objective over every row (float64, streamae's one-pass
evaluation of the in-memory data) is computed for those weights: for the
L-BFGS subjects, whose own objective decreases at every iteration, by a
binary search for the first iteration under each threshold; for Adam at
every kept point. "best" is the lowest exact cost any subject reached;
the table gives seconds and passes over the data to best + 5%, 1%, 0.1%.

``--cold`` evicts the store's pages from the page cache before every pass
of the streamae subjects (``posix_fadvise(DONTNEED)`` on each chunk file),
the out-of-core setting; the peers hold the data in memory either way.

Run: python benchmarks/time_to_quality.py [--rows 1000000] [--cold] [--json F]
     python benchmarks/time_to_quality.py --quick    (CI smoke run, seconds)
"""

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings

import numpy as np

HYPER = {"rho": 0.01, "beta": 3.0, "weight_decay": 1e-4}
HIDDEN = 25
LEVELS = (0.05, 0.01, 0.001)


# ---------------------------------------------------------------- data

def make_data(rows, workdir):
    """The patch store (written once) and its values in memory (float32)."""
    import zarr

    from streamae import write_patches

    store = os.path.join(workdir, f"patches-{rows}.zarr")
    if not os.path.exists(store):
        write_patches(store, builtin=True, count=rows, seed=0)
    return store, zarr.open_array(store, mode="r")[...].astype(np.float32)


def initial_params(n):
    """The weights ``SparseAutoencoder(random_state=0)`` starts from (float64)."""
    from streamae._objective import init_params

    return init_params(n, HIDDEN, np.random.default_rng(0))


def evict(store):
    """Drop the store's chunk files from the page cache (no privileges needed)."""
    for root, _dirs, files in os.walk(store):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class Trace:
    """Weights kept along a run: (seconds, passes, flat float64 theta) per point."""

    def __init__(self, name, budget, monotone=True):
        self.name, self.budget, self.monotone = name, budget, monotone
        self.points = []
        self.t0 = time.perf_counter()

    def keep(self, passes, params):
        seconds = time.perf_counter() - self.t0
        theta = np.concatenate([np.asarray(params[k], np.float64).ravel()
                                for k in ("W1", "b1", "W2", "b2")])
        self.points.append((seconds, float(passes), theta))
        return seconds > self.budget


# ---------------------------------------------------------------- subjects

def run_streamae(store, warmup, budget, cold, max_iter):
    from dask.callbacks import Callback

    from streamae import SparseAutoencoder

    trace = Trace(f"streamae {'plain' if warmup == 'none' else 'warm-up'}", budget)

    def callback(model, record):
        if record["phase"] != "full":  # the subsample's cost is not the objective
            return time.perf_counter() - trace.t0 > budget
        return trace.keep(record["data_passes"], model.params_)

    model = SparseAutoencoder(n_hidden=HIDDEN, **HYPER, max_iter=max_iter, warmup=warmup,
                              random_state=0)
    evictor = Callback(start=lambda dsk: evict(store)) if cold else None
    trace.t0 = time.perf_counter()
    if evictor is None:
        model.fit(store, callback=callback)
    else:
        with evictor:
            model.fit(store, callback=callback)
    return trace


def numpy_objective(X):
    """Vectorised float32 cost and gradient of the data in memory (flat float64 theta)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from subjects import numpy_cost_and_grad

    m, n = X.shape
    shapes = [("W1", (HIDDEN, n)), ("b1", (HIDDEN,)), ("W2", (n, HIDDEN)), ("b2", (n,))]

    def unflat(theta):
        out, i = {}, 0
        for name, shape in shapes:
            size = math.prod(shape)
            out[name] = theta[i:i + size].reshape(shape).astype(np.float32)
            i += size
        return out

    def fun(theta):
        p = unflat(theta)
        cost, grad = numpy_cost_and_grad(X, p["W1"], p["b1"], p["W2"], p["b2"],
                                         HYPER["rho"], HYPER["beta"], HYPER["weight_decay"])
        return cost, np.concatenate([grad[k].astype(np.float64).ravel()
                                     for k in ("W1", "b1", "W2", "b2")])

    return fun, unflat


def run_scipy(X, theta0, budget):
    from scipy.optimize import minimize

    fun, unflat = numpy_objective(X)
    trace = Trace("scipy L-BFGS-B", budget)
    calls = [0]

    def counted(theta):
        calls[0] += 1
        return fun(theta)

    def callback(intermediate_result):
        if trace.keep(calls[0], unflat(intermediate_result.x)):
            raise StopIteration

    trace.t0 = time.perf_counter()
    trace.keep(0, unflat(theta0))
    minimize(counted, theta0, jac=True, method="L-BFGS-B", callback=callback,
             options={"maxiter": 10**6, "maxfun": 10**7, "maxcor": 100})
    return trace


def _torch_params(theta0, n):
    import torch

    shapes = [(HIDDEN, n), (HIDDEN,), (n, HIDDEN), (n,)]
    out, i = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(torch.tensor(theta0[i:i + size].reshape(shape), dtype=torch.float32,
                                requires_grad=True))
        i += size
    return out


def _torch_cost(X, params):
    import torch

    W1, b1, W2, b2 = params
    rho, beta, lam = HYPER["rho"], HYPER["beta"], HYPER["weight_decay"]
    a2 = torch.sigmoid(X @ W1.T + b1)
    a3 = torch.sigmoid(a2 @ W2.T + b2)
    rho_hat = a2.mean(dim=0)
    kl = torch.sum(rho * torch.log(rho / rho_hat)
                   + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat)))
    return (0.5 * torch.sum((a3 - X) ** 2) / X.shape[0]
            + 0.5 * lam * (torch.sum(W1 * W1) + torch.sum(W2 * W2)) + beta * kl)


def _as_dict(params):
    return dict(zip(("W1", "b1", "W2", "b2"), (p.detach().numpy() for p in params)))


def run_torch_lbfgs(X, theta0, budget):
    import torch

    torch.set_num_threads(2)
    Xt = torch.from_numpy(X)
    params = _torch_params(theta0, X.shape[1])
    opt = torch.optim.LBFGS(params, lr=1, max_iter=1, history_size=100,
                            line_search_fn="strong_wolfe")
    trace = Trace("torch LBFGS", budget)
    calls = [0]

    def closure():
        calls[0] += 1
        opt.zero_grad()
        cost = _torch_cost(Xt, params)
        cost.backward()
        return cost

    trace.t0 = time.perf_counter()
    trace.keep(0, _as_dict(params))
    while True:
        opt.step(closure)
        if trace.keep(calls[0], _as_dict(params)):
            return trace


def run_torch_adam(X, theta0, budget, batch, lr):
    import torch

    torch.set_num_threads(2)
    Xt = torch.from_numpy(X)
    m = X.shape[0]
    params = _torch_params(theta0, X.shape[1])
    opt = torch.optim.Adam(params, lr=lr)
    trace = Trace(f"torch Adam batch {batch} lr {lr:g}", budget, monotone=False)
    every = max(1, m // batch // 4)  # keep the weights every quarter epoch
    gen = torch.Generator().manual_seed(0)
    trace.t0 = time.perf_counter()
    trace.keep(0, _as_dict(params))
    seen = 0
    while True:
        order = torch.randperm(m, generator=gen)
        for k, start in enumerate(range(0, m, batch)):
            opt.zero_grad()
            _torch_cost(Xt[order[start:start + batch]], params).backward()
            opt.step()
            seen += min(batch, m - start)
            if (k + 1) % every == 0 and trace.keep(seen / m, _as_dict(params)):
                return trace


# ---------------------------------------------------------------- exact scoring

class Exact:
    """The exact objective over every row, float64, for flat weights (cached)."""

    def __init__(self, X):
        from streamae import SparseAutoencoder

        self.X, self.n = X, X.shape[1]
        self.model_cls, self.cache = SparseAutoencoder, {}

    def __call__(self, theta):
        key = theta.tobytes()
        if key not in self.cache:
            from streamae._objective import unflatten

            p = unflatten(theta, self.n, HIDDEN)
            model = self.model_cls.from_weights(**p, **HYPER, dtype="float64")
            self.cache[key] = float(model.cost_and_grad(self.X)[0])
        return self.cache[key]


def first_under(trace, exact, threshold):
    """Index of the first kept point with exact cost <= threshold, or None."""
    costs = lambda i: exact(trace.points[i][2])  # noqa: E731
    if not trace.monotone:
        return next((i for i in range(len(trace.points)) if costs(i) <= threshold), None)
    lo, hi = 0, len(trace.points) - 1
    if costs(hi) > threshold:
        return None
    while lo < hi:  # costs decrease along an L-BFGS run
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if costs(mid) > threshold else (lo, mid)
    return lo


def score(traces, exact):
    """Rows of the table: per subject, final exact cost and (seconds, passes) per level."""
    finals = {t.name: min(exact(t.points[i][2]) for i in _scored(t)) for t in traces}
    best = min(finals.values())
    rows = []
    for t in traces:
        reached = {}
        for level in LEVELS:
            i = first_under(t, exact, best * (1 + level))
            reached[str(level)] = None if i is None else t.points[i][:2]
        rows.append({"subject": t.name, "final": finals[t.name], "budget": t.budget,
                     "points": len(t.points), "seconds": t.points[-1][0],
                     "passes": t.points[-1][1], "reached": reached})
    return best, rows


def _scored(trace):
    """The points whose exact cost the final column takes the minimum of."""
    return range(len(trace.points)) if not trace.monotone else [len(trace.points) - 1]


# ---------------------------------------------------------------- report

def table(best, rows):
    head = ("| subject | " + " | ".join(f"best + {level:.1%}".replace(".0%", "%")
                                         for level in LEVELS)
            + " | final exact cost (run for) |")
    lines = [head, "|---" * (len(LEVELS) + 2) + "|"]
    for r in rows:
        cells = []
        for level in LEVELS:
            hit = r["reached"][str(level)]
            cells.append("not reached" if hit is None else f"{hit[0]:.1f} s, {hit[1]:.1f} passes")
        lines.append(f"| {r['subject']} | " + " | ".join(cells)
                     + f" | {r['final']:.6f} ({r['seconds']:.0f} s, {r['passes']:.0f} passes) |")
    lines.append(f"\nbest exact cost: {best:.6f}")
    return "\n".join(lines)


def peers(X, theta0, budget, quick):
    """Traces of SciPy, and of PyTorch when it is installed."""
    traces = [run_scipy(X, theta0, budget)]
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: the PyTorch subjects are skipped", file=sys.stderr)
        return traces
    traces.append(run_torch_lbfgs(X, theta0, budget))
    grid = [(1024, 3e-3), (256, 1e-3), (256, 3e-3), (256, 1e-2)]
    for batch, lr in grid[:1] if quick else grid:
        traces.append(run_torch_adam(X, theta0, budget / 4, batch, lr))
    return traces


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--budget", type=float, default=240.0,
                        help="seconds per subject (default 240; Adam: a quarter each)")
    parser.add_argument("--max-iter", type=int, default=800, help="streamae's max_iter")
    parser.add_argument("--cold", action="store_true",
                        help="evict the store from the page cache before every streamae pass")
    parser.add_argument("--streamae-only", action="store_true",
                        help="only the two streamae subjects (e.g. with --cold)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    parser.add_argument("--workdir", default="benchmarks/work")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    # A run cut by its budget or max_iter is part of the measurement, not a problem.
    warnings.filterwarnings("ignore", message=".*reached max_iter")
    if args.quick:
        args.rows, args.budget, args.max_iter = 4000, 3.0, 30
    os.makedirs(args.workdir, exist_ok=True)
    store, X = make_data(args.rows, args.workdir)
    theta0 = np.concatenate([v.ravel() for v in initial_params(X.shape[1]).values()])
    traces = [run_streamae(store, "auto" if not args.quick else "subsample", args.budget,
                           args.cold, args.max_iter),
              run_streamae(store, "none", args.budget, args.cold, args.max_iter)]
    if not args.streamae_only:
        traces += peers(X, theta0, args.budget, args.quick)
    best, rows = score(traces, Exact(X))
    print(table(best, rows))
    result = {"rows": args.rows, "cold": args.cold, "best": best, "subjects": rows,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "command": " ".join(["python", "benchmarks/time_to_quality.py",
                                   *(argv or sys.argv[1:])])}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
