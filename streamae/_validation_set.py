"""A held-out validation set: its checks during a fit, and early stopping on them.

A *check* evaluates, on the validation data V, the same objective J as the
training (reconstruction + weight decay + sparsity, with V's own rho_hat) at
the current weights, every ``every`` iterations of the full-data phase
(iteration 0, ``every``, ``2 every``, ...; the warm-up's records get none).
It adds ``validation_cost`` and ``validation_reconstruction`` to that
iteration's record. A check reads the weights only: the training objective,
its trajectory and its bits are the same with or without V.

Early stopping (as scikit-learn's ``MLPRegressor(early_stopping=True)``):
a check *improves* when its cost is lower than the best so far by at least
``tol``; the fit stops after ``n_iter_no_change`` consecutive checks without
an improvement, and the model takes the weights of the best check (the
lowest validation cost). Everything early stopping needs is a function of
the history's records (`progress`), so a resumed fit, whose history comes
from its checkpoint, stops exactly where the uninterrupted one does; only
the best check's weights are kept beside the history (in the checkpoint).
"""

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from ._engine import Evaluator
from ._errors import DataError, NumericalError
from ._objective import unflatten

#: The start of ``stop_reason_`` when early stopping ends a fit.
EARLY_STOPPING = "early stopping: the validation cost"


@dataclass(frozen=True)
class Progress:
    """Where early stopping stands after the checks of a history.

    Attributes
    ----------
    best_iteration : int or None
        Iteration of the check with the lowest validation cost (the first
        such check on ties); None before the first check.
    best_cost : float
        Its validation cost (inf before the first check, or when no check
        was finite).
    since : int
        Consecutive checks, up to the last one, that did not improve on the
        best cost before them by at least ``tol``.
    checks : int
        Checks in the history.
    """

    best_iteration: int
    best_cost: float
    since: int
    checks: int


def progress(history, tol):
    """The early-stopping `Progress` of the checks recorded in ``history``.

    Parameters
    ----------
    history : list of dict
        Records of a fit; a check is a record with ``validation_cost`` (None
        or NaN when V's objective was not finite: no improvement).
    tol : float
        The least decrease of the best validation cost that counts as an
        improvement.
    """
    best_iteration, best, since, checks = None, math.inf, 0, 0
    for record in history:
        if "validation_cost" not in record:
            continue
        checks += 1
        cost = _finite_or_inf(record["validation_cost"])
        since = 0 if cost < best - tol else since + 1
        if cost < best:
            best_iteration, best = record["iteration"], cost
    return Progress(best_iteration, best, since, checks)


def _finite_or_inf(value):
    return value if value is not None and math.isfinite(value) else math.inf


def stop_message(prog, n_iter_no_change, tol):
    """The stop reason when ``prog`` ends the fit, or "" to go on."""
    if prog.since < n_iter_no_change:
        return ""
    return (f"{EARLY_STOPPING} did not improve by at least tol={tol:g} in "
            f"{n_iter_no_change} consecutive checks; the best check, iteration "
            f"{prog.best_iteration}, has validation cost {prog.best_cost:.6g}")


class Validation:
    """The validation checks of one fit.

    Parameters
    ----------
    dataset : Dataset of shape (m_v, n)
        The validation data, opened as the training data is.
    hyper : Hyper
    options : RunOptions
    dtype : str
        Arithmetic of the kernels (the training's).
    runner : Runner
        The training run's runner: checks run in its scheduler session.
    every : int
        Check every this many full-data iterations.
    """

    def __init__(self, dataset, hyper, options, dtype, runner, every):
        self.dataset, self.every = dataset, every
        # One pass per check (one-pass strategy whatever the training's: a
        # check needs the cost only, and "cached" would hold V's activations).
        self.evaluator = Evaluator.with_options(dataset, hyper, options, dtype=dtype,
                                                strategy="one-pass", scheduler=runner)

    def compile_kernels(self, n_hidden):
        """Compile the kernels of a check (see `Evaluator.compile_kernels`)."""
        self.evaluator.compile_kernels(n_hidden)

    def due(self, iteration):
        """True if full-data iteration ``iteration`` is a check."""
        return iteration % self.every == 0

    def check(self, theta, n, n_hidden):
        """The record fields of a check at weights ``theta``.

        Parameters
        ----------
        theta : ndarray of shape (p,)
            Flat weights (`streamae._objective.flatten`).
        n, n_hidden : int

        Returns
        -------
        dict
            ``validation_cost`` and ``validation_reconstruction`` (inf when
            the objective on V is not finite, e.g. a hidden unit saturated on
            every row of V: the check then does not improve).

        Raises
        ------
        DataError
            V holds values the decoder does not take (the message names V).
        """
        try:
            result = self.evaluator(unflatten(theta, n, n_hidden))
        except NumericalError:
            return {"validation_cost": math.inf, "validation_reconstruction": math.inf}
        except DataError as exc:
            raise DataError(f"validation data: {exc}") from None
        return {"validation_cost": float(result.cost),
                "validation_reconstruction": float(result.terms["reconstruction"])}


def identity(fingerprint, every, early_stopping, n_iter_no_change, tol):
    """Run settings of a fit with validation that a resumed fit must match.

    ``fingerprint`` is the validation data's (`streamae._checkpoint.data_fingerprint`),
    kept as a SHA-256 of its JSON so that a mismatch reads as one line.
    """
    text = json.dumps(fingerprint, sort_keys=True, default=str).encode()
    out = {"validation_sha256": hashlib.sha256(text).hexdigest(), "validation_every": every}
    if early_stopping:
        out.update(n_iter_no_change=n_iter_no_change, tol=tol)
    return out


def best_of(saved_arrays):
    """(theta, rho_hat) of the best check kept in a checkpoint's arrays, or None."""
    if "best_theta" not in saved_arrays:
        return None
    return (np.asarray(saved_arrays["best_theta"], np.float64),
            np.asarray(saved_arrays["best_rho_hat"], np.float64))
