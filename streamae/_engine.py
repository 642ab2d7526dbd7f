"""Passes over chunks: one evaluation of (cost, gradient) as Dask graphs.

Each pass is one kernel task per row chunk followed by a tree reduction of
the small partial sums. The tree's shape is fixed by chunk index (groups of
``split_every`` consecutive chunks), never by task completion order, so the
floating-point result does not depend on the scheduler or on timing.

Strategies
----------
two-pass
    Pass 1: sum of a2 -> rho_hat. Pass 2: forward again and backprop with the
    sparsity coefficient c. Reads the data twice.
one-pass
    One read: the c-free gradient parts plus sum f'(z2) x^T and sum f'(z2),
    combined with c after the reduction (see docs/algorithm.md).
cached
    Pass 1 keeps every a2 in memory; pass 2 reuses it instead of recomputing
    X W1^T. Reads the data twice and holds m x s activations.
"""

from dataclasses import dataclass, field

import dask
import numpy as np
import psutil

from . import _kernels as K
from ._cluster import make_runner
from ._data import describe_bad_values
from ._errors import (
    DataError,
    LostInputError,
    MemoryBudgetError,
    NumericalError,
    ParameterError,
)
from ._objective import DECODERS, Hyper, assemble, sparsity_terms
from ._progress import chunk_progress
from ._validation import check_int

STRATEGIES = ("two-pass", "one-pass", "cached")
PASSES = {"two-pass": 2, "one-pass": 1, "cached": 2}


@dataclass
class Evaluation:
    """Result of one evaluation over the whole dataset.

    Attributes
    ----------
    cost : float
    grad : dict of float64 ndarrays W1 (s, n), b1 (s,), W2 (n, s), b2 (n,)
    rho_hat : ndarray of shape (s,)
    terms : dict
        reconstruction, weight_decay and sparsity parts of the cost.
    """

    cost: float
    grad: dict
    rho_hat: np.ndarray
    terms: dict = field(default_factory=dict)


# ---------------------------------------------------------------- tasks
# Module-level functions so that they pickle for process and cluster workers.

def _as_input(block, dtype):
    return np.ascontiguousarray(block, dtype=dtype)


def _task_hidden_sum(block, p, block_rows):
    X = _as_input(block, p["W1"].dtype)
    return (K.hidden_sum(X, p["W1"], p["b1"], block_rows),)


def _task_backprop(block, p, c, row0, block_rows, linear=False):
    X = _as_input(block, p["W1"].dtype)
    return K.backprop_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], c, row0, block_rows, linear)


def _task_one_pass(block, p, row0, block_rows, linear=False):
    X = _as_input(block, p["W1"].dtype)
    return K.one_pass_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], row0, block_rows, linear)


def _task_hidden_keep(block, p, block_rows):
    X = _as_input(block, p["W1"].dtype)
    return K.hidden_activations(X, p["W1"], p["b1"], block_rows)


def _task_backprop_cached(block, kept, p, c, row0, block_rows, linear=False):
    X = _as_input(block, p["W1"].dtype)
    return K.backprop_sums_cached(X, kept[0], p["W2"], p["b2"], c, row0, block_rows, linear)


def _first_non_finite_row(block):
    """[[index of the block's first row holding NaN or Inf, or -1]]."""
    rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
    return np.array([[rows[0] if rows.size else -1]], np.int64)


def _second(pair):
    return (pair[1],)


def _merge_bad(records):
    """Combine [count, first_row] records: counts add, the first row is the smallest."""
    count = sum(int(r[0]) for r in records)
    rows = [int(r[1]) for r in records if r[0] > 0]
    return np.array([count, min(rows) if rows else -1], np.int64)


def _combine(*parts):
    """Element-wise sum of partial-sum tuples, in the order given."""
    out = []
    for values in zip(*parts):
        first = values[0]
        if isinstance(first, np.ndarray) and first.dtype == np.int64:
            out.append(_merge_bad(values))
            continue
        total = first.copy() if isinstance(first, np.ndarray) else first
        for v in values[1:]:
            total = total + v
        out.append(total)
    return tuple(out)


def tree_sum(parts, split_every=8):
    """Delayed sum of a list of delayed partial-sum tuples, grouped by index."""
    if split_every < 2:
        raise ParameterError(f"split_every must be at least 2, got {split_every}")
    parts = list(parts)
    while len(parts) > 1:
        parts = [dask.delayed(_combine, pure=True)(*parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    return parts[0]


# ---------------------------------------------------------------- evaluator

class Evaluator:
    """Computes (cost, gradient) of the whole dataset for given parameters.

    Parameters
    ----------
    dataset : Dataset
    hyper : Hyper
        Includes the decoder ("sigmoid" or "linear"), passed to the kernels.
    dtype : {"float32", "float64"}
        Dtype of the kernels' arithmetic; sums accumulate in float64.
    strategy : {"two-pass", "one-pass", "cached"}
    scheduler : str, distributed.Client or Runner, optional
        Where the tasks run (see `streamae._cluster`): "threads" (default),
        "synchronous", "processes", a ``distributed.Client``, or a `Runner`
        (which the estimator opens for a scheduler address or ``workers=N``).
    block_rows : int
        Rows per kernel block inside a chunk.
    split_every : int
        Fan-in of the reduction tree.
    cache_limit : int, optional
        Bytes the ``cached`` strategy may keep; default half the available RAM.
    """

    def __init__(self, dataset, hyper, dtype="float32", strategy="two-pass", scheduler=None,
                 block_rows=2048, split_every=8, cache_limit=None):
        if strategy not in STRATEGIES:
            raise ParameterError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        self.dataset = dataset
        self.hyper = hyper
        self.dtype = np.dtype(dtype)
        self.strategy = strategy
        self.scheduler = scheduler or "threads"
        self.runner = make_runner(scheduler)
        self._array = None  # the data as the runner reads it, prepared on first use
        self._block_list = None
        self.block_rows = check_int("block_rows", block_rows, 1)
        self.split_every = check_int("split_every", split_every, 2)
        self.m = dataset.shape[0]
        self.row_starts = dataset.row_starts[:-1].tolist()
        self.evaluations = 0
        self.progress = False  # a bar per pass over the chunks (see streamae._progress)
        if strategy == "cached":
            self._check_cache_budget(cache_limit)

    @property
    def passes(self):
        """Reads of the whole dataset per evaluation."""
        return PASSES[self.strategy]

    def _check_cache_budget(self, cache_limit):
        s = None  # filled when parameters are known; estimate needs n_hidden
        self._cache_limit = cache_limit
        return s

    def _cache_bytes(self, n_hidden):
        return self.m * n_hidden * self.dtype.itemsize

    def _require_cache_fits(self, n_hidden):
        need = self._cache_bytes(n_hidden)
        limit = self._cache_limit
        if limit is None:
            limit = psutil.virtual_memory().available // 2
            allowed = "half the available memory"
        else:
            allowed = "cache_limit"
        if need > limit:
            raise MemoryBudgetError(
                f"strategy 'cached' would keep {_size(need)} of hidden activations "
                f"({self.m} rows x {n_hidden} units x {self.dtype.name}) in memory, more than "
                f"the {_size(limit)} allowed ({allowed}); use strategy 'one-pass' or "
                "'two-pass', which keep only one chunk per task"
            )

    @property
    def array(self):
        """The data as the scheduler reads it (in-memory data is shipped once)."""
        if self._array is None:
            self._array = self.runner.prepare(self.dataset.array)
        return self._array

    def _blocks(self):
        # Built once: to_delayed costs ~50 us a chunk, every evaluation.
        if self._block_list is None:
            self._block_list = self.array.to_delayed().ravel().tolist()
        return self._block_list

    def _compute(self, *objs):
        return self.runner.compute(*objs)

    def pass_progress(self, label):
        """Context showing chunks done in a pass (local schedulers, ``progress`` on)."""
        enabled = self.progress and getattr(self.runner, "kind", "") != "distributed"
        return chunk_progress(label, len(self.row_starts), enabled)

    def compile_kernels(self, n_hidden):
        """Compile this strategy's kernels in this process (or load them from Numba's
        cache) on one row, so that the first pass over the data does not wait for them."""
        n = self.dataset.shape[1]
        X = np.full((1, n), 0.5, self.dtype)
        p = {"W1": np.zeros((n_hidden, n), self.dtype), "b1": np.zeros(n_hidden, self.dtype),
             "W2": np.zeros((n, n_hidden), self.dtype), "b2": np.zeros(n, self.dtype)}
        c = np.zeros(n_hidden, self.dtype)
        if self.strategy == "one-pass":
            _task_one_pass(X, p, 0, self.block_rows)
        elif self.strategy == "two-pass":
            _task_hidden_sum(X, p, self.block_rows)
            _task_backprop(X, p, c, 0, self.block_rows)
        else:
            kept = _task_hidden_keep(X, p, self.block_rows)
            _task_backprop_cached(X, kept, p, c, 0, self.block_rows)

    def _check_data(self, bad):
        if bad[0] > 0:
            raise DataError(describe_bad_values(self.dataset, int(bad[1]),
                                                self.hyper.decoder))

    def _sparsity(self, sum_a2):
        try:
            return sparsity_terms(sum_a2, self.m, self.hyper)
        except NumericalError:
            if not np.all(np.isfinite(sum_a2)):
                self._find_bad_rows()
            raise

    def _find_bad_rows(self):
        """rho_hat is not finite: look for NaN/Inf in the data to name them."""
        bad = self.array.map_blocks(_first_non_finite_row, chunks=(1, 1), dtype=np.int64)
        rows = np.asarray(self._compute(bad)[0]).ravel()
        found = np.flatnonzero(rows >= 0)
        if found.size:
            i = int(found[0])
            raise DataError(describe_bad_values(self.dataset, self.row_starts[i] + rows[i],
                                                self.hyper.decoder))

    def __call__(self, params):
        """Evaluate at ``params`` (dict W1, b1, W2, b2; any float dtype).

        Returns
        -------
        Evaluation
        """
        p = {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in params.items()}
        run = {"two-pass": self._two_pass, "one-pass": self._one_pass,
               "cached": self._cached}[self.strategy]
        result = self._retry_lost_params(run, p, params)
        self.evaluations += 1
        return result

    def _retry_lost_params(self, run, p, params):
        """Run one evaluation; again if a lost worker took scattered inputs with it.

        Lost *computed* results are recomputed by the cluster itself; only data
        scattered from the client (large parameters) cannot be, so the
        evaluation is submitted again, up to twice. The result is the same.
        """
        for attempt in range(3):
            try:
                return run(p, params)
            except LostInputError:
                if attempt == 2:
                    raise

    def _two_pass(self, p, params):
        blocks, br = self._blocks(), self.block_rows
        pd = self.runner.put(p)
        with self.pass_progress("two-pass 1/2"):
            (sum_a2,), = self._compute(tree_sum(
                [dask.delayed(_task_hidden_sum, pure=True)(b, pd, br) for b in blocks],
                self.split_every))
        rho_hat, kl, c = self._sparsity(sum_a2)
        cd = self.runner.put(c.astype(self.dtype))
        with self.pass_progress("two-pass 2/2"):
            sums, = self._compute(tree_sum(
                [dask.delayed(_task_backprop, pure=True)(b, pd, cd, r0, br, self.hyper.linear)
                 for b, r0 in zip(blocks, self.row_starts)], self.split_every))
        sq, gW1, gb1, gW2, gb2, bad = sums
        self._check_data(bad)
        return self._finish(params, rho_hat, kl, sq, gW1, gb1, gW2, gb2)

    def _one_pass(self, p, params):
        blocks, br = self._blocks(), self.block_rows
        pd = self.runner.put(p)
        with self.pass_progress("one-pass"):
            sums, = self._compute(tree_sum(
                [dask.delayed(_task_one_pass, pure=True)(b, pd, r0, br, self.hyper.linear)
                 for b, r0 in zip(blocks, self.row_starts)], self.split_every))
        sum_a2, sq, gW1r, gb1r, gW2, gb2, fpX, sum_fp, bad = sums
        self._check_data(bad)
        rho_hat, kl, c = self._sparsity(sum_a2)
        gW1 = gW1r + c[:, None] * fpX
        gb1 = gb1r + c * sum_fp
        return self._finish(params, rho_hat, kl, sq, gW1, gb1, gW2, gb2)

    def _cached(self, p, params):
        self._require_cache_fits(p["W1"].shape[0])
        blocks, br = self._blocks(), self.block_rows
        pd = self.runner.put(p)
        with self.pass_progress("cached 1/2"):
            kept = self.runner.persist(*[dask.delayed(_task_hidden_keep, pure=True)(b, pd, br)
                                         for b in blocks])
        (sum_a2,), = self._compute(tree_sum(
            [dask.delayed(_second, pure=True)(k) for k in kept], self.split_every))
        rho_hat, kl, c = self._sparsity(sum_a2)
        cd = self.runner.put(c.astype(self.dtype))
        with self.pass_progress("cached 2/2"):
            sums, = self._compute(tree_sum(
                [dask.delayed(_task_backprop_cached, pure=True)(b, k, pd, cd, r0, br,
                                                                 self.hyper.linear)
                 for b, k, r0 in zip(blocks, kept, self.row_starts)], self.split_every))
        del kept
        sq, gW1, gb1, gW2, gb2, bad = sums
        self._check_data(bad)
        return self._finish(params, rho_hat, kl, sq, gW1, gb1, gW2, gb2)

    def _finish(self, params, rho_hat, kl, sq, gW1, gb1, gW2, gb2):
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results raise below
            cost, grad, terms = assemble(params, self.hyper, self.m, float(sq), kl,
                                         gW1, gb1, gW2, gb2)
        if not np.isfinite(cost) or not all(np.all(np.isfinite(g)) for g in grad.values()):
            raise _not_finite(cost, grad)
        return Evaluation(cost, grad, rho_hat, terms)


def _not_finite(cost, grad):
    """NumericalError naming the hidden units whose gradient is not finite (in ``.units``)."""
    bad = (~np.isfinite(grad["W1"]).all(axis=1) | ~np.isfinite(grad["b1"])
           | ~np.isfinite(grad["W2"]).all(axis=0))
    units = np.flatnonzero(bad)
    where = (f"; non-finite gradient for hidden unit(s) {units[:10].tolist()}" if units.size
             else "")
    error = NumericalError(
        f"the cost ({cost:g}) or gradient is not finite at the current parameters{where}; "
        "use dtype='float64' or check the data's scale")
    error.units = units.tolist()
    return error


def make_hyper(rho, beta, weight_decay, decoder="sigmoid"):
    """Validated `Hyper`; raises ParameterError naming the bad value."""
    if decoder not in DECODERS:
        raise ParameterError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}; "
                             "use 'linear' for real-valued (e.g. whitened) data")
    if not 0.0 < rho < 1.0:
        raise ParameterError(f"rho must be in (0, 1), got {rho}; a typical value is 0.01 to 0.1")
    if not 0.0 <= beta < np.inf:  # also refuses NaN
        raise ParameterError(
            f"beta must be finite and >= 0, got {beta}; use 0 to turn sparsity off")
    if not 0.0 <= weight_decay < np.inf:
        raise ParameterError(
            f"weight_decay must be finite and >= 0, got {weight_decay}; use 0 to turn it off")
    return Hyper(float(rho), float(beta), float(weight_decay), str(decoder))


def _size(nbytes):
    """A byte count for messages: '1000 B', '2.34 KiB', '1.50 GiB'."""
    if nbytes < 1024:
        return f"{int(nbytes)} B"
    for unit in ("KiB", "MiB", "GiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.2f} {unit}"
