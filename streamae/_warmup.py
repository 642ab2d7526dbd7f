"""A cheaper start: L-BFGS on growing subsamples held in memory, then the exact fit.

Early in a full-batch fit every pass over the data buys one step, and on a
store larger than memory a pass costs minutes. Most of the way to the
optimum can be found on subsamples. One read of the data takes a *sample*:
every ``stride``-th row from a seeded offset, held in memory (at most
`MAX_BYTES`). The warm-up then runs L-BFGS on *levels* of that sample, each
`GROWTH` times the rows of the one before (every 64th, 16th, 4th row of the
sample, then all of it): an iteration on a level costs its share of a pass
and reads nothing. Weights and the L-BFGS correction pairs are carried from
level to level and into the full-data fit: the same model on a subsample
has nearly the same curvature.

Every `WINDOW` iterations a level's weights are scored on held-out rows of
the sample; the level ends when that score stops following the level's own
cost, or stops falling by more than the level's sampling error on a level
too small for the model (`stalled`), after its iteration budget
(`Plan.iterations`, from the ``warmup_iter`` parameter, independent of
``max_iter``), or when the optimizer converges on it.

The fit still ends on the exact objective over every row (rho_hat over the
whole dataset); only its starting point changes. Every choice is a function
of the data's shape, the model's size, the seed and fixed constants (never of
the machine or the scheduler), and the levels are evaluated in this process
in a fixed order, so a fit with a warm-up is as reproducible and resumable
as one without. See docs/algorithm.md ("A cheaper start").
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._constants import WARMUPS
from ._engine import Evaluation, _not_finite
from ._errors import ParameterError
from ._metrics import chunk_moments
from ._objective import Objective, param_blocks
from ._tree import EagerTree, merge_moments

#: Rows of the data per row of the sample, at least (the stride grows with
#: the data so that the sample stays under `MAX_BYTES`). The sample's even
#: rows are the levels' pool, its odd rows the held-out pool.
SAMPLE_STRIDE = 2
#: The sample is held in memory: at most this many bytes.
MAX_BYTES = 256 * 2**20
#: Rows of a level over rows of the level below it.
GROWTH = 4
#: Levels, at most (the largest ones that qualify).
MAX_LEVELS = 4
#: A level has at least this many rows, and one row per `WEIGHTS_PER_ROW` of
#: the model's weights: below, its optimum says little about the full data's.
#: Small levels are cheap (an iteration on 1/256 of the data costs 1/256 of a
#: pass) and the gap rule (`GAP`) moves up from one with too few rows.
MIN_LEVEL_ROWS = 512
WEIGHTS_PER_ROW = 128
#: With ``warmup="auto"``, warm up only on data of this many rows or more:
#: below, passes are cheap and the plain fit is as quick.
AUTO_MIN_ROWS = 65536
#: Default ``warmup_iter``: the iteration budget of the smallest level (the
#: others get half of it).
DEFAULT_ITER = 200
#: Every this many iterations a level's weights are scored on held-out rows
#: of the sample (as many as the level's, none of them in it).
WINDOW = 10
#: A level ends when, over the last `WINDOW` iterations, the held-out cost
#: fell by less than this share of the level's own decrease: an iteration on
#: the next level costs `GROWTH` times more, so it pays once less than
#: 1 / `GROWTH` of this level's progress carries to rows it has not seen.
KAPPA = 1.0 / GROWTH
#: A level below the top one also ends when its held-out cost exceeds its own
#: by more than `GAP` of the held-out cost (it has too few rows for the model:
#: its optimum is far from the data's) and, over the last `WINDOW` iterations,
#: the held-out cost fell by less than `GAP_SHARE` of that gap: what is left
#: to gain on this level is within its sampling error, which the next level,
#: `GROWTH` times larger, has less of. (The top level's next step is the full
#: data, at a whole pass per evaluation: it goes on while it follows.)
GAP = 0.05
GAP_SHARE = 0.5
#: Chunks of each level's evaluation (fixed: results must not depend on the machine).
CHUNKS = 8


def check_warmup(value):
    """``value`` if it is one of `WARMUPS`, else a one-line `ParameterError`."""
    if not isinstance(value, str) or value not in WARMUPS:
        raise ParameterError(f"warmup must be one of {', '.join(map(repr, WARMUPS))}, got "
                             f"{value!r}")
    return value


@dataclass(frozen=True)
class Plan:
    """The warm-up of one fit.

    Attributes
    ----------
    stride : int
        Rows of the data per row of the sample.
    levels : tuple of int
        Level ``j`` trains on every ``levels[j]``-th even row of the sample
        and is scored on as many of its odd rows; smallest level first (the
        last is 1: every even row).
    iterations : tuple of int
        Iteration budget of each level.
    """

    stride: int
    levels: tuple
    iterations: tuple

    def describe(self):
        """The plan as plain values (for checkpoints and messages)."""
        return {"stride": self.stride, "levels": list(self.levels),
                "iterations": list(self.iterations)}

    def fraction(self, level):
        """The share of the data's rows in level ``level`` (index into `levels`)."""
        return 1.0 / (2 * self.stride * self.levels[level])

    def is_top(self, level):
        """True for the last level, the one before the full data."""
        return level == len(self.levels) - 1

    def rows(self, sample, level):
        """The level's training rows and held-out rows of ``sample`` (views)."""
        step = 2 * self.levels[level]
        return sample[0::step], sample[1::step]


def plan(mode, shape, itemsize, n_hidden, warmup_iter=DEFAULT_ITER):
    """The warm-up `Plan` of a fit on data of ``shape`` (m, n), or None for none.

    Parameters
    ----------
    mode : {"auto", "subsample", "none"}
        ``auto`` warms up on data of `AUTO_MIN_ROWS` rows or more when at
        least one level qualifies (`MIN_LEVEL_ROWS` rows, and a row per
        `WEIGHTS_PER_ROW` weights); ``subsample`` whenever a level of two
        rows or more exists; ``none`` never.
    shape : tuple of int
    itemsize : int
        Bytes per value of the data as the kernels read it.
    n_hidden : int
    warmup_iter : int
        Iteration budget of the smallest level, whose iterations cost least;
        the levels above it get half as many. 0: no warm-up.
    """
    m, n = shape
    if mode == "none" or warmup_iter == 0 or (mode == "auto" and m < AUTO_MIN_ROWS):
        return None
    stride = max(SAMPLE_STRIDE, math.ceil(m * n * itemsize / MAX_BYTES))
    pool = m // stride // 2  # even rows of the sample
    weights = param_blocks(n, n_hidden)[-1][1]
    least = max(MIN_LEVEL_ROWS, math.ceil(weights / WEIGHTS_PER_ROW)) if mode == "auto" else 2
    levels = []
    step = 1
    while pool // step >= least and len(levels) < MAX_LEVELS:
        levels.insert(0, step)
        step *= GROWTH
    if not levels:
        return None
    iterations = (warmup_iter,) + (max(1, warmup_iter // 2),) * (len(levels) - 1)
    return Plan(stride, tuple(levels), iterations)


def stalled(before, after, top=False):
    """True if a level should end at check ``after`` (the check before it:
    ``before``; both records with ``cost`` and ``heldout_cost``).

    It ends when the held-out cost fell by less than `KAPPA` times the
    level's own cost, or, unless it is the ``top`` level, when its held-out
    cost exceeds its own by more than `GAP` of it and fell by less than
    `GAP_SHARE` of that gap.
    """
    fell = before["heldout_cost"] - after["heldout_cost"]
    gap = after["heldout_cost"] - after["cost"]
    return bool(fell < KAPPA * (before["cost"] - after["cost"]) or (
        not top and gap > GAP * after["heldout_cost"] and fell < GAP_SHARE * gap))


def offset(seed, stride):
    """The sample's first row: drawn from ``seed`` (independent of the initial weights)."""
    return int(np.random.default_rng([seed, 0x5EED]).integers(stride))


def read_sample(data_pass, stride, first):
    """The sample and the data's total variance, in one pass over the data.

    A reduction pass (`streamae._passes.Pass.reduce`, in batches of about
    16 MiB: `Pass.coarse`) whose kernel takes a batch's sample rows and its
    column moments; the tree joins the rows in order and merges the moments
    (`join_samples`), so tasks stream runs of chunks like every other pass.

    Parameters
    ----------
    data_pass : streamae._passes.Pass
        The data, shape (m, n).
    stride, first : int
        The sample is rows ``first, first + stride, ...``.

    Returns
    -------
    rows : ndarray of shape (ceil((m - first) / stride), n)
    total_variance : float
        sum_j sum_i (x_ij - mean_j)^2 over every row (`streamae._metrics`).
    """
    rows, (_, _, m2) = data_pass.coarse().reduce(_sample_and_moments, first, stride,
                                                 combine=join_samples)
    with np.errstate(all="ignore"):  # non-finite data: reported by the sample's check
        return np.ascontiguousarray(rows), float(np.sum(m2))


def _sample_and_moments(block, row0, first, stride):
    """A batch's sample rows and its (count, column means, column M2)."""
    return np.array(block[(first - row0) % stride::stride]), chunk_moments(block)


def join_samples(*parts):
    """(sample rows, moments) of consecutive batches, in order: rows joined,
    moments merged (`streamae._tree.merge_moments`)."""
    rows = np.concatenate([rows for rows, _ in parts])
    return rows, merge_moments(*[moments for _, moments in parts])


class LevelEvaluator:
    """(cost, gradient) of the one-pass objective on rows held in this process.

    The rows are cut into `CHUNKS` fixed chunks whose kernels run on a few
    threads (Numba releases the GIL) and whose sums are added in the engine's
    fixed tree: the result depends on the rows only, never on the machine,
    and no scheduler round trip is paid on levels that take milliseconds.

    Parameters
    ----------
    rows : ndarray of shape (r, n)
    hyper : Hyper
    dtype : str
        Arithmetic of the kernels.
    block_rows : int
    split_every : int
        Fan-in of the reduction tree.
    """

    def __init__(self, rows, hyper, dtype, block_rows, split_every):
        self.m = rows.shape[0]
        self.hyper, self.dtype = hyper, np.dtype(dtype)
        self.block_rows, self.split_every = block_rows, split_every
        bounds = np.linspace(0, self.m, min(CHUNKS, self.m) + 1).astype(int)
        self.chunks = [np.ascontiguousarray(rows[a:b], self.dtype)
                       for a, b in zip(bounds[:-1], bounds[1:])]
        self.evaluations = 0

    def __call__(self, params):
        """Evaluate at ``params`` (dict W1, b1, W2, b2); returns `Evaluation`."""
        p = {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in params.items()}
        objective = Objective.of(self.hyper)
        with ThreadPoolExecutor(min(len(self.chunks), os.cpu_count() or 1)) as pool:
            parts = list(pool.map(
                lambda X: objective.one_pass(X, 0, p, self.block_rows), self.chunks))
        tree = EagerTree(self.split_every)
        for part in parts:
            tree.add(part)
        sums = tree.result()
        rho_hat, kl, c = objective.sparsity(sums.sum_a2, self.m)
        with np.errstate(over="ignore", invalid="ignore"):
            cost, grad, terms = objective.assemble(params, self.m, sums.with_sparsity(c), kl)
        if not np.isfinite(cost) or not all(np.all(np.isfinite(g)) for g in grad.values()):
            raise _not_finite(cost, grad)
        self.evaluations += 1
        return Evaluation(cost, grad, rho_hat, terms)
