"""Where a colour fit's last passes go: other full-batch methods from the same point.

From the weights of a default streamae fit of the colour set (benchmarks/
datasets.py) after ``--start`` passes, each method below gets ``--passes``
more passes over the data (one pass: one evaluation over every row, or one
Gauss-Newton product), and every iterate is scored by the float64 objective
of exact.py. The question is how many passes the way from best + 1% to best
+ 0.1% costs, not how many seconds: the methods run in memory, in float64,
and are not timed.

streamae default
    The same fit, continued (its warm-up's top level, then the full data).
SciPy L-BFGS-B
    ``minimize(method="L-BFGS-B", options={"maxcor": 100})`` on all the weights.
variable projection
    L-BFGS-B on the encoder (W1, b1) only; at every evaluation the linear
    decoder (W2, b2) is the exact ridge solution for the encoder's
    activations, so an evaluation costs 2 passes (the decoder's sums, then
    the gradient).
truncated Gauss-Newton
    Steps from ``--cg`` conjugate-gradient iterations on the Gauss-Newton
    matrix (reconstruction, weight decay and the sparsity term's outer
    product), Levenberg-Marquardt damping, a backtracking step.

Why the tail is slow is measured too: the default fit goes on to
``--reference`` passes, and at the branch point and where it first reaches
each tolerance its weights are compared with that far point, hidden unit by
hidden unit (`unit_drift`): a cost near the far point's with weights far
from it means the last passes travel along a nearly flat valley.

Run: python benchmarks/colour_tail.py [--start 10] [--passes 65] [--cg 10]
         [--reference 600] [--best-from benchmarks/results/time_to_quality_colour.json]
         [--json benchmarks/results/colour_tail.json]
"""

import argparse
import json
import os
import sys
import warnings

import numpy as np
import scipy.optimize as so

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import datasets  # noqa: E402
import provenance  # noqa: E402
from exact import _sigmoid, exact_cost  # noqa: E402

from streamae import SparseAutoencoder  # noqa: E402
from streamae._objective import flatten, make_hyper, reference_cost_and_grad  # noqa: E402

NAMES = ("W1", "b1", "W2", "b2")
LEVELS = (0.01, 0.003, 0.001)
#: Hidden units counted in the drift's share (`unit_drift`).
DRIFT_UNITS = 10


class Problem:
    """The colour objective in memory (float64) and a pass counter."""

    def __init__(self, dataset, X):
        self.d, self.X = dataset, X
        self.m, self.n = X.shape
        self.s = dataset.n_hidden
        self.hyper = make_hyper(dataset.rho, dataset.beta, dataset.weight_decay, "linear")
        self.passes = 0.0
        self.trace = []  # (passes, flat weights) of every iterate

    def cost_grad(self, p):
        self.passes += 1
        return reference_cost_and_grad(self.X, p, self.hyper)

    def keep(self, p):
        self.trace.append((self.passes, flatten(p)))

    def hidden(self, W1, b1):
        """a2 = sigmoid(X W1^T + b1), shape (m, s)."""
        return _sigmoid(self.X @ W1.T + b1)

    def ridge_decoder(self, W1, b1):
        """The exact (W2, b2) for the encoder (W1, b1): a pass for a'a, a'x and the means."""
        self.passes += 1
        A = self.hidden(W1, b1)
        am, xm = A.mean(0), self.X.mean(0)
        Ac = A - am
        lam_m = self.d.weight_decay * self.m
        W2 = np.linalg.solve(Ac.T @ Ac + lam_m * np.eye(self.s), Ac.T @ (self.X - xm)).T
        return W2, xm - W2 @ am

    def gauss_newton(self, p, V):
        """G V for the Gauss-Newton matrix G at ``p``: one pass."""
        self.passes += 1
        rho, beta, lam = self.d.rho, self.d.beta, self.d.weight_decay
        a2 = self.hidden(p["W1"], p["b1"])
        fp = a2 * (1 - a2)
        rho_hat = a2.mean(0)
        da2 = fp * (self.X @ V["W1"].T + V["b1"])
        e = da2 @ p["W2"].T + a2 @ V["W2"].T + V["b2"]
        u = beta * (rho / rho_hat ** 2 + (1 - rho) / (1 - rho_hat) ** 2) * da2.mean(0)
        e2 = (e @ p["W2"] + u) * fp
        return {"W1": e2.T @ self.X / self.m + lam * V["W1"], "b1": e2.mean(0),
                "W2": e.T @ a2 / self.m + lam * V["W2"], "b2": e.mean(0)}


def _split(theta, n, s):
    W1, b1, W2, b2 = datasets.unflat(theta, n, s)
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2}


def run_lbfgs(prob, p0, budget):
    """SciPy L-BFGS-B on every weight until ``budget`` passes (in all)."""
    def fun(theta):
        c, g = prob.cost_grad(_split(theta, prob.n, prob.s))
        return c, flatten(g)
    so.minimize(fun, flatten(p0), jac=True, method="L-BFGS-B",
                callback=lambda th: prob.keep(_split(th, prob.n, prob.s)),
                options={"maxcor": 100, "maxfun": int(budget - prob.passes)})


def run_varpro(prob, p0, budget):
    """L-BFGS-B on the encoder, the decoder solved exactly at every evaluation,
    until ``budget`` passes (in all)."""
    k = prob.s * prob.n

    def full(v):
        W1, b1 = v[:k].reshape(prob.s, prob.n), v[k:]
        W2, b2 = prob.ridge_decoder(W1, b1)
        return {"W1": W1, "b1": b1, "W2": W2, "b2": b2}

    def fun(v):
        c, g = prob.cost_grad(full(v))
        return c, np.r_[g["W1"].ravel(), g["b1"]]

    def keep(v):
        passes = prob.passes
        prob.keep(full(v))
        prob.passes = passes  # the iterate's decoder is known: not charged twice
    so.minimize(fun, np.r_[p0["W1"].ravel(), p0["b1"]], jac=True, method="L-BFGS-B",
                callback=keep, options={"maxcor": 100, "maxfun": int((budget - prob.passes) // 2)})


def _cg(prob, p, g, mu, iterations):
    """d ~ -(G + mu I)^-1 g by conjugate gradients, and G d's predicted change."""
    dot = lambda a, b: sum(float(np.sum(a[k] * b[k])) for k in NAMES)  # noqa: E731
    d = {k: np.zeros_like(p[k]) for k in NAMES}
    r = {k: -g[k] for k in NAMES}
    q, rr = dict(r), dot(r, r)
    for _ in range(iterations):
        Gq = {k: v + mu * q[k] for k, v in prob.gauss_newton(p, q).items()}
        alpha = rr / dot(q, Gq)
        d = {k: d[k] + alpha * q[k] for k in NAMES}
        r = {k: r[k] - alpha * Gq[k] for k in NAMES}
        rr, rr_old = dot(r, r), rr
        q = {k: r[k] + rr / rr_old * q[k] for k in NAMES}
    # d'(G + mu) d = -d'g - d'r for CG's iterate: the model's change without another product.
    return d, dot(g, d) + 0.5 * (-dot(g, d) - dot(d, r))


def run_gauss_newton(prob, p, budget, iterations):
    """Damped truncated Gauss-Newton steps until ``budget`` passes."""
    mu, (c, g) = 0.01, prob.cost_grad(p)
    while prob.passes < budget:
        d, predicted = _cg(prob, p, g, mu, iterations)
        t = 1.0
        while t > 1e-3:
            trial = {k: p[k] + t * d[k] for k in NAMES}
            c_new, g_new = prob.cost_grad(trial)
            if c_new < c:
                break
            t *= 0.5
        ratio = (c_new - c) / (t * predicted) if predicted < 0 else 0.0
        mu = mu * 2 / 3 if ratio > 0.75 else (mu * 1.5 if ratio < 0.25 else mu)
        if c_new < c:
            p, c, g = trial, c_new, g_new
            prob.keep(p)


def streamae_trace(dataset, start, end, reference):
    """The default fit: (weights at ``start`` passes, [(passes, flat weights)] up to
    ``end``, (passes, flat weights) where it stopped: at ``reference`` passes, or
    sooner if it converged)."""
    kept, latest = [], [0.0]

    def callback(model, record):
        passes = latest[0] = record["data_passes"]
        # Up to the first record at ``end`` passes or beyond, every 0.25 pass.
        if passes >= start and (not kept or (kept[-1][0] < end and passes - kept[-1][0] >= 0.25)):
            kept.append((passes, flatten(model.params_)))
        return passes >= reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SparseAutoencoder(**dataset.hyper, random_state=0, max_iter=100_000,
                                  tol=0.0).fit(dataset.store, callback=callback)
    return kept[0], kept, (latest[0], flatten(model.params_))


def unit_drift(theta, reference, n, s):
    """How far the hidden units of ``theta`` are from those of ``reference``.

    Parameters
    ----------
    theta, reference : ndarray of shape (2 s n + s + n,)
        Flat weights (`streamae._objective.flatten` order).
    n, s : int
        Inputs and hidden units.

    Returns
    -------
    dict
        ``relative_distance``: ||theta - reference|| / ||reference|| over the
        weight matrices; ``top_share``: the share of ||theta - reference||^2
        held by the `DRIFT_UNITS` units farthest off (a unit: its row of W1
        and column of W2); ``cosine``: the smallest, 5% and median cosine
        between a unit's row of W1 and the reference's.
    """
    p, q = _split(theta, n, s), _split(reference, n, s)
    d1, d2 = p["W1"] - q["W1"], p["W2"] - q["W2"]
    per_unit = np.sum(d1 ** 2, axis=1) + np.sum(d2 ** 2, axis=0)
    norm = np.sqrt(np.sum(q["W1"] ** 2) + np.sum(q["W2"] ** 2))
    cos = np.sum(p["W1"] * q["W1"], axis=1) / (
        np.linalg.norm(p["W1"], axis=1) * np.linalg.norm(q["W1"], axis=1))
    top = np.sort(per_unit)[::-1][:DRIFT_UNITS].sum()
    return {"relative_distance": float(np.sqrt(per_unit.sum()) / norm),
            "top_share": float(top / per_unit.sum()) if per_unit.sum() else 0.0,
            "cosine": {"min": float(cos.min()), "p05": float(np.quantile(cos, 0.05)),
                       "median": float(np.median(cos))}}


def drift(kept, reached, far, dataset, X, best):
    """`unit_drift` against the far point ``far`` at the first kept weights and where
    the default fit first reached each tolerance (``reached``: level -> passes)."""
    wanted = {round(kept[0][0], 2): ["start"]}
    for level, passes in reached.items():
        wanted.setdefault(passes, []).append(f"best + {100 * float(level):g}%")
    points = []
    for passes, theta in kept:
        if round(passes, 2) in wanted:
            points.append({"label": ", ".join(wanted[round(passes, 2)]),
                           "passes": round(passes, 2),
                           "cost_over_best": exact_cost(X, theta, dataset) / best - 1,
                           **unit_drift(theta, far[1], dataset.n_visible, dataset.n_hidden)})
    return {"reference_passes": round(far[0], 2),
            "reference_cost": exact_cost(X, far[1], dataset), "units": DRIFT_UNITS,
            "hidden": dataset.n_hidden, "points": points}


def crossings(trace, X, dataset, best):
    """Passes at which each tolerance of `LEVELS` is first reached, and the last cost."""
    out, cost = {}, None
    for passes, theta in trace:
        cost = exact_cost(X, theta, dataset)
        for level in LEVELS:
            if str(level) not in out and cost <= (1 + level) * best:
                out[str(level)] = round(passes, 2)
    return {"reached": out, "last_passes": round(trace[-1][0], 2), "last_cost": cost}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--start", type=float, default=10.0,
                   help="passes of the default fit before the methods branch off (default 10)")
    p.add_argument("--passes", type=float, default=65.0,
                   help="passes each method gets from there (default 65)")
    p.add_argument("--cg", type=int, default=10, help="CG iterations per Gauss-Newton step")
    p.add_argument("--reference", type=float, default=600.0,
                   help="passes of the default fit the drift is measured against (default 600)")
    p.add_argument("--best-from", default=os.path.join(HERE, "results",
                                                       "time_to_quality_colour.json"))
    p.add_argument("--workdir", default=os.path.join(HERE, "work"))
    p.add_argument("--json", default=None)
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    record = provenance.start("benchmarks/colour_tail.py", argv, args.allow_load)
    dataset = datasets.make("colour", datasets.DEFAULT_ROWS["colour"], args.workdir)
    X = datasets.load(dataset).astype(np.float64)
    with open(args.best_from) as f:
        best = json.load(f)["best"]
    (start, theta0), kept, far = streamae_trace(dataset, args.start, args.start + args.passes,
                                                args.reference)
    methods = {"streamae default (continued)": crossings(kept, X, dataset, best)}
    units = drift(kept, methods["streamae default (continued)"]["reached"], far, dataset, X,
                  best)
    print("drift", units, flush=True)
    runs = (("SciPy L-BFGS-B (maxcor 100)", run_lbfgs, ()),
            ("variable projection (L-BFGS-B on the encoder)", run_varpro, ()),
            (f"truncated Gauss-Newton ({args.cg} CG products a step)", run_gauss_newton,
             (args.cg,)))
    for name, run, extra in runs:
        prob = Problem(dataset, X)
        prob.passes = start
        p0 = _split(theta0, prob.n, prob.s)
        run(prob, p0, start + args.passes, *extra)
        methods[name] = crossings([(start, theta0)] + prob.trace, X, dataset, best)
        print(name, methods[name], flush=True)
    result = provenance.finish(record)
    result.update(best=best, best_from=args.best_from, start_passes=start,
                  passes=args.passes, levels=list(LEVELS), methods=methods,
                  drift=units)
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
