"""Full-batch optimizers on a flat parameter vector.

Both optimizers call ``fun(theta) -> (cost, grad, info)`` where one call is
one evaluation over the whole dataset. Their whole state lives in plain
attributes (vectors, lists and counters), so a run is deterministic and its
state can be saved and restored.

lbfgs
    Limited-memory BFGS as in minFunc (the UFLDL exercise's optimizer): the
    two-loop recursion with the initial Hessian scaled by s'y / y'y, up to
    ``history`` corrections (minFunc keeps 100), and a strong-Wolfe line search
    (SciPy's ``line_search``, c1 = 1e-4, c2 = 0.9) started at step 1 (for the
    first iteration the direction is scaled by min(1, 1 / ||g||_1), as minFunc
    does). When the Wolfe search fails, a backtracking Armijo search is tried
    before giving up.
gd
    Gradient descent with a backtracking Armijo line search: the step starts at
    twice the last accepted one (at ``learning_rate`` first) and halves until
    the cost decreases enough.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import line_search

OPTIMIZERS = ("lbfgs", "gd")


@dataclass
class OptimState:
    """Everything an optimizer needs to continue.

    Attributes
    ----------
    theta : ndarray of shape (p,)
        Current parameters (float64).
    cost : float
    grad : ndarray of shape (p,)
    iteration : int
        Completed iterations.
    evaluations : int
        Calls of ``fun`` so far.
    step : float
        Last accepted step length.
    s_hist, y_hist : list of ndarray
        L-BFGS corrections (oldest first).
    message : str
        Why the run stopped ("" while running).
    """

    theta: np.ndarray
    cost: float
    grad: np.ndarray
    iteration: int = 0
    evaluations: int = 0
    step: float = 0.0
    s_hist: list = field(default_factory=list)
    y_hist: list = field(default_factory=list)
    message: str = ""


class _CachedObjective:
    """Calls ``fun`` once per distinct point, for line searches that ask for
    the cost and the gradient separately."""

    def __init__(self, fun, state):
        self.fun = fun
        self.state = state
        self.cache = {}

    def __call__(self, theta):
        key = theta.tobytes()
        if key not in self.cache:
            if len(self.cache) > 8:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = self.fun(theta)
            self.state.evaluations += 1
        return self.cache[key]

    def cost(self, theta):
        return self(theta)[0]

    def grad(self, theta):
        return self(theta)[1]


def _two_loop(g, s_hist, y_hist):
    """-H g by the L-BFGS two-loop recursion."""
    q = -g.copy()
    alphas = []
    for s, y in zip(reversed(s_hist), reversed(y_hist)):
        a = s.dot(q) / y.dot(s)
        alphas.append(a)
        q -= a * y
    if s_hist:
        s, y = s_hist[-1], y_hist[-1]
        q *= s.dot(y) / y.dot(y)
    for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
        b = y.dot(q) / y.dot(s)
        q += (a - b) * s
    return q


def _armijo(obj, theta, cost, grad, d, t, c1=1e-4, tries=30):
    """Backtracking: the largest t / 2^k with sufficient decrease, or None."""
    slope = grad.dot(d)
    for _ in range(tries):
        if obj.cost(theta + t * d) <= cost + c1 * t * slope:
            return t
        t *= 0.5
    return None


def start(fun, theta0):
    """Evaluate at ``theta0`` and return the initial `OptimState` and info."""
    state = OptimState(theta=np.asarray(theta0, np.float64).copy(), cost=0.0, grad=None)
    cost, grad, info = fun(state.theta)
    state.cost, state.grad, state.evaluations = float(cost), grad, 1
    return state, info


def step(fun, state, optimizer="lbfgs", history=100, learning_rate=1.0,
         grad_tol=1e-5, change_tol=1e-9):
    """One iteration: updates ``state`` in place.

    Returns
    -------
    info : object
        What ``fun`` returned third at the new point.
    done : bool
        True when a stopping rule fired (``state.message`` says which).
    """
    obj = _CachedObjective(fun, state)
    g = state.grad
    if optimizer == "lbfgs":
        d = _two_loop(g, state.s_hist, state.y_hist)
        if not state.s_hist:
            d *= min(1.0, 1.0 / np.abs(g).sum())
        t0 = 1.0
    else:
        d = -g
        t0 = 2.0 * state.step if state.step else learning_rate
    if g.dot(d) > -change_tol * 1e-3:
        state.message = "the search direction is not a descent direction"
        return None, True

    t = None
    if optimizer == "lbfgs":
        with warnings.catch_warnings():
            # A failed Wolfe search warns and returns None; the Armijo fallback handles it.
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="scipy.optimize")
            t = line_search(obj.cost, obj.grad, state.theta, d, g, state.cost,
                            c1=1e-4, c2=0.9, maxiter=20)[0]
    if t is None:
        t = _armijo(obj, state.theta, state.cost, g, d, t0)
    if t is None:
        state.message = "the line search found no decrease (converged to rounding precision)"
        return None, True

    theta = state.theta + t * d
    cost, grad, info = obj(theta)
    s, y = theta - state.theta, grad - g
    if optimizer == "lbfgs" and y.dot(s) > 1e-10:
        state.s_hist.append(s)
        state.y_hist.append(y)
        if len(state.s_hist) > history:
            del state.s_hist[0], state.y_hist[0]
    old_cost = state.cost
    state.theta, state.cost, state.grad = theta, float(cost), grad
    state.step, state.iteration = float(t), state.iteration + 1

    if np.abs(grad).max() <= grad_tol:
        state.message = f"gradient below tolerance (max |g| <= {grad_tol:g})"
    elif np.abs(s).max() <= change_tol:
        state.message = f"step below tolerance (max |dtheta| <= {change_tol:g})"
    elif abs(old_cost - cost) <= change_tol:
        state.message = f"cost change below tolerance ({change_tol:g})"
    return info, bool(state.message)
