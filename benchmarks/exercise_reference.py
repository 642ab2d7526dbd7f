"""The demo's training against an independent float64 NumPy + SciPy L-BFGS-B run.

Same patches (``streamae._patches.demo_patches``), same initial weights, 400
iterations. The reference uses ``streamae.reference_cost_and_grad`` (plain
NumPy, float64) and ``scipy.optimize.minimize(method="L-BFGS-B")`` with 100
corrections, as close to the exercise's minFunc set-up as SciPy gets.

Run: python benchmarks/exercise_reference.py [--json out.json]
"""

import argparse
import json
import time

import numpy as np
from scipy.optimize import minimize

from streamae import SparseAutoencoder, reference_cost_and_grad
from streamae._demo import EXERCISE
from streamae._objective import flatten, init_params, make_hyper, unflatten
from streamae._patches import demo_patches


def scipy_reference(X, max_iter=400):
    n, s = X.shape[1], EXERCISE["n_hidden"]
    hyper = make_hyper(EXERCISE["rho"], EXERCISE["beta"], EXERCISE["weight_decay"])
    theta0 = flatten(init_params(n, s, np.random.default_rng(0)))

    def fun(theta):
        cost, grad = reference_cost_and_grad(X, unflatten(theta, n, s), hyper)
        return cost, flatten(grad)

    t0 = time.perf_counter()
    res = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "maxcor": 100, "maxfun": 10 * max_iter})
    return {"cost": float(res.fun), "iterations": int(res.nit), "evaluations": int(res.nfev),
            "seconds": time.perf_counter() - t0}


def streamae_run(X, strategy, dtype, max_iter=400):
    model = SparseAutoencoder(**EXERCISE, dtype=dtype, random_state=0, strategy=strategy,
                              max_iter=max_iter, run_options={"chunk_rows": X.shape[0] // 2})
    t0 = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - t0
    # Final cost re-evaluated in float64 by the independent NumPy reference.
    exact, _ = reference_cost_and_grad(X, model.params_, model.hyper)
    return {"cost": float(exact), "iterations": model.n_iter_,
            "evaluations": model.evaluations_, "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--max-iter", type=int, default=400)
    args = parser.parse_args()
    X = demo_patches()
    rows = {"numpy+scipy L-BFGS-B float64": scipy_reference(X, args.max_iter)}
    for strategy, dtype in [("one-pass", "float32"), ("two-pass", "float32"),
                            ("one-pass", "float64")]:
        rows[f"streamae {strategy} {dtype}"] = streamae_run(X, strategy, dtype, args.max_iter)
    print(f"{'run':32s} {'final cost':>12s} {'iters':>6s} {'evals':>6s} {'seconds':>8s}")
    for name, r in rows.items():
        print(f"{name:32s} {r['cost']:12.6f} {r['iterations']:6d} {r['evaluations']:6d} "
              f"{r['seconds']:8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
