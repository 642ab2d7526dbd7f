"""A cheaper start: L-BFGS on a subsample held in memory, then the exact fit.

Early in a full-batch fit every pass over the data buys one step, and on a
store larger than memory a pass costs minutes. Most of the way to the
optimum can be found on a subsample: every ``stride``-th row from a seeded
offset (one read of the data), held in memory, where one evaluation costs
1/``stride`` of a pass and reads nothing. The full-data L-BFGS then starts
from the subsample's weights *and its correction pairs*: the same model on
1/16 of the rows has nearly the same curvature, so the full phase starts
with a good Hessian model instead of a steepest-descent step.

The fit still ends on the exact objective over every row (rho_hat over the
whole dataset); only its starting point changes. Everything is a function
of the data, the seed and fixed constants (never of the machine or the
scheduler), so a fit with a warm-up is as reproducible and resumable as one
without. See docs/algorithm.md ("A cheaper start") and docs/benchmarks.md
(time to quality).
"""

import math

import numpy as np

from ._constants import WARMUPS
from ._data import open_dataset
from ._engine import Evaluator
from ._errors import ParameterError

#: Rows of the data per row of the subsample (at least).
STRIDE = 16
#: The subsample is held in memory: at most this many bytes (the stride grows).
MAX_BYTES = 256 * 2**20
#: With ``warmup="auto"``, warm up only when the subsample has this many rows:
#: below, passes are cheap and the data small enough that it does not pay.
MIN_ROWS = 16384
#: Tasks per evaluation of the subsample (fixed: results must not depend on the machine).
TASKS = 8


def check_warmup(value):
    """``value`` if it is one of `WARMUPS`, else a one-line `ParameterError`."""
    if not isinstance(value, str) or value not in WARMUPS:
        raise ParameterError(f"warmup must be one of {', '.join(map(repr, WARMUPS))}, got "
                             f"{value!r}")
    return value


def plan(mode, shape, itemsize):
    """The subsample's stride for a fit on data of ``shape`` (m, n), or 0 for no warm-up.

    Parameters
    ----------
    mode : {"auto", "subsample", "none"}
        ``auto`` warms up when the subsample has at least `MIN_ROWS` rows;
        ``subsample`` whenever it has at least two; ``none`` never.
    shape : tuple of int
    itemsize : int
        Bytes per value of the data as the kernels read it.
    """
    m, n = shape
    if mode == "none":
        return 0
    stride = max(STRIDE, math.ceil(m * n * itemsize / MAX_BYTES))
    rows = m // stride
    if rows < (MIN_ROWS if mode == "auto" else 2):
        return 0
    return stride


def offset(seed, stride):
    """The subsample's first row: drawn from ``seed`` (independent of the initial weights)."""
    return int(np.random.default_rng([seed, 0x5EED]).integers(stride))


def subsample(runner, dataset, stride, first):
    """Rows ``first, first + stride, ...`` of ``dataset`` as an in-memory array.

    One pass over the data on ``runner``; returns ndarray of shape
    (ceil((m - first) / stride), n).
    """
    (rows,) = runner.compute(dataset.array[first::stride])
    return np.ascontiguousarray(rows)


def evaluator(rows, settings, runner, options):
    """An `Evaluator` (one-pass: the rows are in memory) of the subsample ``rows``."""
    chunk_rows = max(1, math.ceil(rows.shape[0] / TASKS))
    dataset = open_dataset(rows, chunk_rows=chunk_rows)
    return Evaluator.with_options(dataset, settings.hyper, options, dtype=settings.dtype,
                                  strategy="one-pass", scheduler=runner)
