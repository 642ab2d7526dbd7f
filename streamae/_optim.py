"""Full-batch optimizers on a flat parameter vector.

Both optimizers call ``fun(theta) -> (cost, grad, info)`` where one call is
one evaluation over the whole dataset. Their whole state lives in plain
attributes (vectors, lists and counters) of `OptimState`, so a run is
deterministic and its state can be saved and restored: an iteration started
from a restored state computes the same bits as the uninterrupted run.

`step` is transactional: it changes ``state`` only once the iteration has
finished. If ``fun`` raises (an interrupt, a data error), ``state`` is still
the last iteration boundary, which is what a checkpoint must hold.

lbfgs
    Limited-memory BFGS as in minFunc (the UFLDL exercise's optimizer): the
    two-loop recursion over up to ``history`` corrections (minFunc keeps 100)
    and a strong-Wolfe line search
    (SciPy's ``line_search``, c1 = 1e-4, c2 = 0.9) started at step 1 (for the
    first iteration the direction is scaled by min(1, 1 / ||g||_1), as minFunc
    does). When the Wolfe search fails, a backtracking Armijo search is tried
    before giving up. The initial Hessian is scaled per block of parameters
    (``blocks``: W1, b1, W2 and b2), each by its own s_b'y_b / y_b'y_b from the
    newest correction (minFunc scales all by one s'y / y'y): the layers'
    curvatures differ by orders of magnitude, and one scale for all then fits
    none of them (docs/algorithm.md).
gd
    Gradient descent with a backtracking Armijo line search: the step starts at
    twice the last accepted one (at ``learning_rate`` first) and halves until
    the cost decreases enough.

Numerical guard (step rejection)
    A trial point where ``fun`` raises `NumericalError` (some rho_hat exactly 0
    or 1, or a non-finite cost or gradient) counts as cost +inf: the Wolfe
    search is abandoned and the Armijo search halves the step until the point
    is finite and decreases the cost. Accepted points are therefore always
    finite. Each rejection is recorded in ``state.rejections`` (iteration,
    step, hidden units, message). If no finite point with enough decrease is
    found, the run stops with the last finite state and a message saying so.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import line_search

from ._constants import (
    GRAD_TOL,
    OPTIMIZERS,  # noqa: F401  (re-exported: streamae._optim.OPTIMIZERS)
)
from ._errors import NumericalError


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
        Why the optimizer stopped by its own rules ("" while running).
    rejections : list of dict
        Trial points rejected by the numerical guard: ``iteration`` (the one
        being computed), ``step``, ``units`` (hidden units named by the error)
        and ``message``.
    phase : {"full", "warmup"}
        Which objective the state belongs to: the whole data, or the warm-up's
        subsample (`streamae._warmup`).
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
    rejections: list = field(default_factory=list)
    phase: str = "full"


class _NonFinite(Exception):
    """Internal: a trial point of the Wolfe search was rejected."""


class _CachedObjective:
    """Calls ``fun`` once per distinct point, for line searches that ask for
    the cost and the gradient separately.

    A point where ``fun`` raises `NumericalError` is remembered as rejected:
    `cost` returns +inf for it, or raises `_NonFinite` while ``strict`` (the
    Wolfe search, which cannot handle infinite values).
    """

    def __init__(self, fun, theta0, direction):
        self.fun = fun
        self.theta0 = theta0
        self.direction = direction
        self.cache = {}
        self.evaluations = 0
        self.rejected = []
        self.strict = False

    def __call__(self, theta):
        key = theta.tobytes()
        if key not in self.cache:
            if len(self.cache) > 8:
                self.cache.pop(next(iter(self.cache)))
            try:
                value = self.fun(theta)
            except NumericalError as exc:
                value = None
                self.rejected.append(self._describe(theta, exc))
            self.evaluations += 1
            self.cache[key] = value
        value = self.cache[key]
        if value is None and self.strict:
            raise _NonFinite
        return value

    def _describe(self, theta, exc):
        moved = np.flatnonzero(self.direction)
        t = float((theta - self.theta0)[moved[0]] / self.direction[moved[0]]) if moved.size \
            else 0.0
        return {"step": t, "units": [int(u) for u in getattr(exc, "units", [])],
                "message": str(exc)}

    def cost(self, theta):
        value = self(theta)
        return np.inf if value is None else value[0]

    def grad(self, theta):
        return self(theta)[1]


def _two_loop(g, s_hist, y_hist, blocks=None):
    """-H g by the L-BFGS two-loop recursion.

    Parameters
    ----------
    g : ndarray of shape (p,)
    s_hist, y_hist : list of ndarray of shape (p,)
        Corrections, oldest first.
    blocks : sequence of (start, stop), optional
        Slices of theta scaled each by its own s_b'y_b / y_b'y_b in the initial
        Hessian; a block whose s_b'y_b or y_b'y_b is not positive takes the
        global s'y / y'y. None: one scale for all (minFunc's).
    """
    q = -g.copy()
    alphas = []
    for s, y in zip(reversed(s_hist), reversed(y_hist)):
        a = s.dot(q) / y.dot(s)
        alphas.append(a)
        q -= a * y
    if s_hist:
        _scale_initial(q, s_hist[-1], y_hist[-1], blocks)
    for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
        b = y.dot(q) / y.dot(s)
        q += (a - b) * s
    return q


def _scale_initial(q, s, y, blocks):
    """q *= H0 (in place): s'y / y'y overall, or per block of ``blocks``."""
    overall = s.dot(y) / y.dot(y)
    for start, stop in blocks or [(0, q.size)]:
        sy, yy = s[start:stop].dot(y[start:stop]), y[start:stop].dot(y[start:stop])
        q[start:stop] *= sy / yy if sy > 0 and yy > 0 else overall


def _armijo(obj, theta, cost, grad, d, t, c1=1e-4, tries=30):
    """Backtracking: the largest t / 2^k with sufficient decrease, or None.

    A rejected (non-finite) trial point has cost +inf and is halved like any
    other point without enough decrease.
    """
    slope = grad.dot(d)
    for _ in range(tries):
        if obj.cost(theta + t * d) <= cost + c1 * t * slope:
            return t
        t *= 0.5
    return None


def start(fun, theta0):
    """Evaluate at ``theta0`` and return the initial `OptimState` and info.

    Raises
    ------
    NumericalError
        If the objective is not finite at ``theta0``; the message says it is
        iteration 0 and keeps the hidden units the evaluation named.
    """
    state = OptimState(theta=np.asarray(theta0, np.float64).copy(), cost=0.0, grad=None)
    try:
        cost, grad, info = fun(state.theta)
    except NumericalError as exc:
        error = NumericalError(f"at the initial weights (iteration 0): {exc}")
        error.units = getattr(exc, "units", [])
        raise error from None
    state.cost, state.grad, state.evaluations = float(cost), grad, 1
    return state, info


def step(fun, state, optimizer="lbfgs", history=100, learning_rate=1.0,
         grad_tol=GRAD_TOL, change_tol=1e-9, blocks=None):
    """One iteration: updates ``state`` when it is complete.

    Nothing in ``state`` changes if ``fun`` raises anything but
    `NumericalError` (which rejects the trial point, see the module notes).
    ``grad_tol``: the step ends the fit ("gradient below tolerance") when
    max |gradient| at the new point is at most this (0: never).
    ``blocks``: the slices of theta whose initial Hessian scales are their
    own (`_two_loop`).

    Returns
    -------
    info : object
        What ``fun`` returned third at the new point, or None if no step was
        taken (``state.message`` says why).
    done : bool
        True when a stopping rule fired (``state.message`` says which).
    """
    g = state.grad
    d, t0 = _direction(state, optimizer, learning_rate, blocks)
    if g.dot(d) > -change_tol * 1e-3:
        state.message = "the search direction is not a descent direction"
        return None, True
    obj = _CachedObjective(fun, state.theta, d)
    t = _line_search(obj, state, d, t0, wolfe=optimizer == "lbfgs")
    iteration = state.iteration + 1
    rejections = [{"iteration": iteration, **r} for r in obj.rejected]
    if t is None:
        state.evaluations += obj.evaluations
        state.rejections.extend(rejections)
        state.message = _no_step_message(rejections, iteration, state.iteration)
        return None, True

    theta = state.theta + t * d
    cost, grad, info = obj(theta)
    s, y = theta - state.theta, grad - g
    old_cost = state.cost
    # Commit: from here on nothing can fail.
    if optimizer == "lbfgs" and y.dot(s) > 1e-10:
        state.s_hist.append(s)
        state.y_hist.append(y)
        if len(state.s_hist) > history:
            del state.s_hist[0], state.y_hist[0]
    state.theta, state.cost, state.grad = theta, float(cost), grad
    state.step, state.iteration = float(t), iteration
    state.evaluations += obj.evaluations
    state.rejections.extend(rejections)
    state.message = _stop_message(grad, s, old_cost - cost, grad_tol, change_tol)
    return info, bool(state.message)


def _direction(state, optimizer, learning_rate, blocks=None):
    """(search direction, first trial step) from ``state``."""
    g = state.grad
    if optimizer == "lbfgs":
        d = _two_loop(g, state.s_hist, state.y_hist, blocks)
        if not state.s_hist:
            d *= min(1.0, 1.0 / np.abs(g).sum())
        return d, 1.0
    return -g, (2.0 * state.step if state.step else learning_rate)


def _line_search(obj, state, d, t0, wolfe):
    """Step length along ``d``: a strong-Wolfe search (L-BFGS), else or on
    its failure backtracking (Armijo) from ``t0``; None if neither finds one."""
    t = None
    if wolfe:
        obj.strict = True
        try:
            with warnings.catch_warnings():
                # A failed Wolfe search warns and returns None; the Armijo fallback handles it.
                # (The warning is attributed to this module: SciPy warns with stacklevel=2.)
                warnings.filterwarnings("ignore", message="The line search algorithm did not "
                                        "converge", category=RuntimeWarning)
                warnings.filterwarnings("ignore", category=RuntimeWarning,
                                        module="scipy.optimize")
                t = line_search(obj.cost, obj.grad, state.theta, d, state.grad, state.cost,
                                c1=1e-4, c2=0.9, maxiter=20)[0]
        except _NonFinite:
            t = None
        obj.strict = False
    if t is None:
        t = _armijo(obj, state.theta, state.cost, state.grad, d, t0)
    return t


def _no_step_message(rejections, iteration, last):
    """Why the line search of ``iteration`` took no step."""
    if not rejections:
        return "the line search found no decrease (converged to rounding precision)"
    units = sorted({u for r in rejections for u in r["units"]})
    return (f"the line search found no finite point that decreases the cost at iteration "
            f"{iteration}: {len(rejections)} trial step(s) were not finite"
            + (f" (hidden unit(s) {units[:10]} saturated)" if units else "")
            + f"; stopped with the last finite weights, from iteration {last}")


def _stop_message(grad, s, decrease, grad_tol, change_tol):
    """The stopping rule that fired after a step, or "" to go on."""
    if np.abs(grad).max() <= grad_tol:
        return f"gradient below tolerance (max |g| <= {grad_tol:g})"
    if np.abs(s).max() <= change_tol:
        return f"step below tolerance (max |dtheta| <= {change_tol:g})"
    if abs(decrease) <= change_tol:
        return f"cost change below tolerance ({change_tol:g})"
    return ""
