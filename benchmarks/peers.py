"""The peers of the time-to-quality benchmark, each run as its own documentation shows.

scipy L-BFGS-B
    ``scipy.optimize.minimize(method="L-BFGS-B", jac=True,
    options={"maxcor": 100})`` on a vectorised float32 NumPy objective of
    the data in memory (`numpy_objective`); every objective call is one
    pass; the weights are kept after every iteration (its callback).
torch LBFGS
    ``torch.optim.LBFGS(params, history_size=100, max_iter=20,
    line_search_fn="strong_wolfe")`` (``max_eval`` left to its default,
    ``max_iter * 5 // 4``), full batch in memory, called in a loop of
    ``step(closure)``; every closure call is one pass; the weights are kept
    after every ``step``, with the evaluations it made; a step still running
    when the budget is spent is interrupted (its trial weights not kept).
torch Adam, torch SGD (momentum 0.9)
    Mini-batches of shuffled rows, rho_hat per batch (as the PyTorch recipes
    do: another objective than the full-batch one), a constant learning rate
    or a cosine decay over the wall budget; the weights are kept at a fixed
    time interval; passes are rows seen / rows.

Every subject gets a wall budget and returns a `Trace`; the data is in memory
before its clock starts. Torch uses as many threads as the machine has cores.
"""

import math
import os
import time

import numpy as np
from datasets import unflat


class Trace:
    """Weights kept along one run: seconds, passes and flat float64 weights per point.

    A point given with ``thin=True`` (a cheap iteration, such as one of a
    warm-up on a subsample) closer than ``every`` seconds to the previous
    kept one is held back (only the latest such point, kept by `close` or by
    the next point), so that such a phase keeps about budget / every points;
    every other point is kept.
    """

    def __init__(self, name, budget, every=0.0, **setting):
        self.name, self.budget, self.every, self.setting = name, budget, every, setting
        self.points, self.pending, self.extra = [], None, {}
        self.t0 = time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self.t0

    def over(self):
        """True once the wall budget is spent."""
        return self.elapsed() > self.budget

    def keep(self, passes, theta, thin=False, **info):
        """Keep (or hold back) the point; True when the budget is spent."""
        seconds = self.elapsed()
        point = {"seconds": seconds, "passes": float(passes), **info,
                 "theta": np.array(theta, np.float64, copy=True).ravel()}
        if (not thin or not self.points
                or seconds - self.points[-1]["seconds"] >= self.every):
            if self.pending is not None and not thin:
                self.points.append(self.pending)
            self.points.append(point)
            self.pending = None
        else:
            self.pending = point
        return seconds > self.budget

    def close(self):
        """Keep the held-back last point, so that the run's last weights are scored."""
        if self.pending is not None:
            self.points.append(self.pending)
            self.pending = None
        return self


# ---------------------------------------------------------------- NumPy + SciPy

def numpy_objective(X, dataset):
    """Vectorised float32 cost and gradient of the data in memory, flat float64 theta."""
    m, n = X.shape
    s, rho, beta, lam = dataset.n_hidden, dataset.rho, dataset.beta, dataset.weight_decay
    linear = dataset.decoder == "linear"

    def fun(theta):
        W1, b1, W2, b2 = unflat(theta, n, s, np.float32)
        a2 = 1 / (1 + np.exp(-(X @ W1.T + b1)))
        a3 = a2 @ W2.T + b2
        if not linear:
            a3 = 1 / (1 + np.exp(-a3))
        rho_hat = a2.mean(axis=0, dtype=np.float64)
        diff = a3 - X
        kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
        cost = (0.5 * float(np.sum(diff * diff, dtype=np.float64)) / m
                + 0.5 * lam * (np.sum(W1 * W1) + np.sum(W2 * W2)) + beta * kl)
        d3 = diff if linear else diff * a3 * (1 - a3)
        sparse = (beta * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))).astype(np.float32)
        d2 = (d3 @ W2 + sparse) * a2 * (1 - a2)
        grad = [d2.T @ X / m + lam * W1, d2.mean(axis=0), d3.T @ a2 / m + lam * W2,
                d3.mean(axis=0)]
        return float(cost), np.concatenate([g.astype(np.float64).ravel() for g in grad])

    return fun


def run_scipy(X, dataset, theta0, budget, every):
    """SciPy's L-BFGS-B (100 corrections) until the budget is spent."""
    from scipy.optimize import minimize

    fun = numpy_objective(X, dataset)
    trace = Trace("scipy L-BFGS-B", budget, every)
    calls = [0]

    def counted(theta):
        calls[0] += 1
        return fun(theta)

    def callback(intermediate_result):
        if trace.keep(calls[0], intermediate_result.x):
            raise StopIteration

    trace.t0 = time.perf_counter()
    trace.keep(0, theta0)
    result = minimize(counted, theta0, jac=True, method="L-BFGS-B", callback=callback,
                      options={"maxiter": 10**6, "maxfun": 10**7, "maxcor": 100})
    trace.extra["stop"] = str(result.message)
    return trace.close()


# ---------------------------------------------------------------- PyTorch

def _torch():
    import torch

    torch.set_num_threads(os.cpu_count())
    return torch


def _torch_params(torch, theta0, dataset):
    n, s = dataset.n_visible, dataset.n_hidden
    return [torch.tensor(np.array(p, np.float32), requires_grad=True)
            for p in unflat(theta0, n, s)]


def _flat(params):
    return np.concatenate([p.detach().numpy().astype(np.float64).ravel() for p in params])


def torch_cost(torch, X, params, dataset):
    """The objective of the rows ``X`` (rho_hat over these rows), as a torch scalar."""
    W1, b1, W2, b2 = params
    rho, beta, lam = dataset.rho, dataset.beta, dataset.weight_decay
    a2 = torch.sigmoid(X @ W1.T + b1)
    a3 = a2 @ W2.T + b2
    if dataset.decoder == "sigmoid":
        a3 = torch.sigmoid(a3)
    rho_hat = a2.mean(dim=0)
    kl = torch.sum(rho * torch.log(rho / rho_hat)
                   + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat)))
    return (0.5 * torch.sum((a3 - X) ** 2) / X.shape[0]
            + 0.5 * lam * (torch.sum(W1 * W1) + torch.sum(W2 * W2)) + beta * kl)


class BudgetSpent(Exception):
    """The wall budget ran out inside an optimizer step."""


def run_torch_lbfgs(X, dataset, theta0, budget, every, max_iter=20):
    """PyTorch's LBFGS as its documentation shows it, full batch, until the budget.

    The weights are kept after every ``step``; a step still running when the
    budget is spent is interrupted at its next evaluation, and the run's last
    point is the last step that finished.
    """
    torch = _torch()
    Xt = torch.from_numpy(X)
    params = _torch_params(torch, theta0, dataset)
    opt = torch.optim.LBFGS(params, history_size=100, max_iter=max_iter,
                            line_search_fn="strong_wolfe")
    trace = Trace("torch LBFGS", budget, every, max_iter=max_iter,
                  max_eval=max_iter * 5 // 4)
    calls = [0]

    def closure():
        if trace.over():  # a step of 20 iterations may outlast the budget by far
            raise BudgetSpent
        calls[0] += 1
        opt.zero_grad()
        cost = torch_cost(torch, Xt, params, dataset)
        cost.backward()
        return cost

    trace.t0 = time.perf_counter()
    trace.keep(0, theta0, evaluations=0)
    while True:
        before = calls[0]
        try:
            opt.step(closure)
        except BudgetSpent:  # its weights are a line search's trial point: not kept
            trace.extra["stop"] = "budget spent inside a step"
            return trace.close()
        done = trace.keep(calls[0], _flat(params), evaluations=calls[0] - before)
        if calls[0] - before <= 1:  # converged by its own tolerances: nothing moves
            trace.extra["stop"] = "LBFGS tolerances met"
            return trace.close()
        if done:
            return trace.close()


def _minibatch_optimizer(torch, params, method, lr):
    if method == "adam":
        return torch.optim.Adam(params, lr=lr)
    if method == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"unknown method {method!r}")


def run_minibatch(X, dataset, theta0, budget, every, method, batch, lr, schedule, seed=0):
    """Mini-batch Adam or SGD with momentum for ``budget`` seconds of wall time.

    ``schedule`` is "constant" or "cosine" (lr x (1 + cos(pi t / budget)) / 2
    at elapsed time t). A run whose batch cost turns non-finite stops there.
    """
    torch = _torch()
    Xt = torch.from_numpy(X)
    m = X.shape[0]
    params = _torch_params(torch, theta0, dataset)
    opt = _minibatch_optimizer(torch, params, method, lr)
    # Kept on a fixed grid of times (every ``every`` seconds), not thinned.
    trace = Trace(f"torch {method}", budget, 0.0, method=method, batch=batch, lr=lr,
                  schedule=schedule)
    gen = torch.Generator().manual_seed(seed)
    trace.t0 = time.perf_counter()
    trace.keep(0, theta0)
    seen = 0
    while True:
        order = torch.randperm(m, generator=gen)
        for start in range(0, m, batch):
            elapsed = trace.elapsed()
            if schedule == "cosine":
                opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(
                    1.0, elapsed / budget)))
            opt.zero_grad()
            cost = torch_cost(torch, Xt[order[start:start + batch]], params, dataset)
            if not math.isfinite(float(cost.detach())):
                trace.extra["diverged"] = True
                return trace.close()
            cost.backward()
            opt.step()
            seen += min(batch, m - start)
            if elapsed >= len(trace.points) * every or elapsed > budget:
                if trace.keep(seen / m, _flat(params)):
                    return trace.close()
