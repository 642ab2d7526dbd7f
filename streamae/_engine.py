"""One evaluation of (cost, gradient) over the whole dataset.

An evaluation is one or two reduction passes (`streamae._passes.Pass`) of
the objective's kernels over the data's batches, then the assembly of the
cost and gradient from the reduced sums (`streamae._objective.Objective`).
The passes stream runs of whole subtrees of the fixed-shape reduction tree,
so the result does not depend on the scheduler, the grouping or the
read-ahead; the runs are planned once per evaluator and only the parameters
change between evaluations.

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

import uuid
from dataclasses import dataclass, field

import numpy as np
import psutil

from ._cluster import make_runner
from ._constants import STRATEGIES
from ._data import describe_bad_values
from ._errors import (
    DataError,
    LostInputError,
    MemoryBudgetError,
    NumericalError,
    ParameterError,
)
from ._kernels import shifted_sums
from ._objective import Objective
from ._passes import Pass
from ._progress import chunk_progress
from ._validation import check_int

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


# ---------------------------------------------------------------- evaluator

class Evaluator:
    """Computes (cost, gradient) of the whole dataset for given parameters.

    Parameters
    ----------
    dataset : Dataset
    hyper : Hyper
        Includes the decoder ("sigmoid" or "linear"): the `Objective` variant.
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
    read_ahead : int, optional
        Batches each task reads ahead of the one its kernels work on (a Zarr
        store; 0: none). Default `streamae._chunkread.READ_AHEAD` (2). Memory:
        ``read_ahead + 1`` batches per running task. Results do not depend on it.

    Notes
    -----
    Each task takes a fixed run of consecutive batches (`stream_group`: a
    function of the data's layout and `STREAM_BYTES`, never of the
    scheduler), so the tasks per evaluation do not grow with the number of
    chunks; the runs are described once per evaluator and only the
    parameters change between evaluations.
    """

    def __init__(self, dataset, hyper, dtype="float32", strategy="two-pass", scheduler=None,
                 block_rows=2048, split_every=8, cache_limit=None, read_ahead=None):
        if strategy not in STRATEGIES:
            raise ParameterError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        self.dataset = dataset
        self.hyper = hyper
        self.objective = Objective.of(hyper)
        self.dtype = np.dtype(dtype)
        self.strategy = strategy
        self.scheduler = scheduler or "threads"
        self.runner = make_runner(scheduler)
        self.block_rows = check_int("block_rows", block_rows, 1)
        self.data_pass = Pass(dataset, self.runner, split_every, read_ahead, self.dtype.itemsize)
        self.split_every = self.data_pass.split_every
        self.read_ahead = self.data_pass.read_ahead
        self.m = dataset.shape[0]
        self.evaluations = 0
        self.progress = False  # a bar per pass over the chunks (see streamae._progress)
        self._cache_limit = cache_limit
        self.variance = None  # the data's total variance, once `measure_variance` asked
        self._measure = False

    @classmethod
    def with_options(cls, dataset, hyper, options, **kwargs):
        """An evaluator with the kernel batches, reduction, cache budget and
        read-ahead of ``options`` (a `streamae.RunOptions`); ``kwargs``: the
        other constructor arguments."""
        return cls(dataset, hyper, block_rows=options.block_rows,
                   split_every=options.split_every, cache_limit=options.cache_limit,
                   read_ahead=options.read_ahead, **kwargs)

    @property
    def passes(self):
        """Reads of the whole dataset per evaluation."""
        return PASSES[self.strategy]

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
    def tasks_per_pass(self):
        """Kernel tasks in one pass over the data."""
        return self.data_pass.tasks_per_pass

    def pass_progress(self, label):
        """Context showing chunks done in a pass (local schedulers, ``progress`` on)."""
        enabled = self.progress and getattr(self.runner, "kind", "") != "distributed"
        return chunk_progress(label, self.tasks_per_pass, enabled)

    def measure_variance(self):
        """Take the data's total variance, sum_j sum_i (x_ij - mean_j)^2, from
        the next evaluation's reads (one-pass, or pass 1 of two-pass): each
        subtree's column moments (`streamae._passes.SubtreeMoments`), merged
        by Chan et al.'s formula in the same tree as the sums; afterwards in
        `variance`. The evaluation's own
        results are unchanged. (The ``cached`` strategy: use
        `streamae._metrics.total_variance`.)"""
        if self.strategy == "cached":
            raise ParameterError("the cached strategy measures the variance in a pass of its own")
        self._measure = True

    def compile_kernels(self, n_hidden):
        """Compile this strategy's kernels in this process (or load them from Numba's
        cache) on one row, so that the first pass over the data does not wait for them."""
        n = self.dataset.shape[1]
        X = np.full((1, n), 0.5, self.dtype)
        p = {"W1": np.zeros((n_hidden, n), self.dtype), "b1": np.zeros(n_hidden, self.dtype),
             "W2": np.zeros((n, n_hidden), self.dtype), "b2": np.zeros(n, self.dtype)}
        c = np.zeros(n_hidden, self.dtype)
        br, objective = self.block_rows, self.objective
        if self.strategy != "cached":  # the first evaluation may take the moments too
            shifted_sums(X, np.zeros(n), np.zeros(n), np.zeros(n))
        if self.strategy == "one-pass":
            objective.one_pass_batches(X, np.array([0, 1], np.int64), 0, p, br)
        elif self.strategy == "two-pass":
            objective.hidden_sum_batches(X, np.array([0, 1], np.int64), 0, p, br)
            objective.backprop_batches(X, np.array([0, 1], np.int64), 0, p, c, br)
        else:
            a2, _ = objective.hidden_keep(X, 0, p, br)
            objective.backprop_cached(X, 0, p, c, br, a2)

    def _check_data(self, bad):
        if bad[0] > 0:
            raise DataError(describe_bad_values(self.dataset, int(bad[1]),
                                                self.hyper.decoder))

    def _sparsity(self, sum_a2):
        try:
            return self.objective.sparsity(sum_a2, self.m)
        except NumericalError:
            if not np.all(np.isfinite(sum_a2)):
                self._find_bad_rows()
            raise

    def _find_bad_rows(self):
        """rho_hat is not finite: look for NaN/Inf in the data to name them."""
        row = self.data_pass.first_bad_row()
        if row >= 0:
            raise DataError(describe_bad_values(self.dataset, row, self.hyper.decoder))

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
            self._token = uuid.uuid4().hex  # new task keys for every submission
            try:
                return run(p, params)
            except LostInputError:
                if attempt == 2:
                    raise

    def _reduce(self, kernel, p, pd, *consts):
        """One reduction pass of ``kernel`` (an `Objective` kernel over runs of
        batches) over the data, computed: its named partial sums. ``pd``: the
        parameters ``p`` as `Runner.put` ships them."""
        unpack = self.objective.unpacker(kernel, *p["W1"].shape)
        if not self._measure:
            return self.data_pass.reduce_batched(kernel, unpack, pd, *consts, self.block_rows,
                                                 token=self._token)
        sums, (_, _, m2) = self.data_pass.reduce_batched(
            kernel, unpack, pd, *consts, self.block_rows, token=self._token, moments=True)
        with np.errstate(all="ignore"):  # non-finite data: reported from the sums
            self.variance = float(np.sum(m2))
        self._measure = False
        return sums

    def _two_pass(self, p, params):
        pd = self.runner.put(p)
        with self.pass_progress("two-pass 1/2"):
            hidden = self._reduce(self.objective.hidden_sum_batches, p, pd)
        rho_hat, kl, c = self._sparsity(hidden.sum_a2)
        cd = self.runner.put(c.astype(self.dtype))
        with self.pass_progress("two-pass 2/2"):
            sums = self._reduce(self.objective.backprop_batches, p, pd, cd)
        return self._finish(params, rho_hat, kl, sums)

    def _one_pass(self, p, params):
        pd = self.runner.put(p)
        with self.pass_progress("one-pass"):
            sums = self._reduce(self.objective.one_pass_batches, p, pd)
        self._check_data(sums.bad)
        rho_hat, kl, c = self._sparsity(sums.sum_a2)
        return self._finish(params, rho_hat, kl, sums.with_sparsity(c))

    def _cached(self, p, params):
        self._require_cache_fits(p["W1"].shape[0])
        pd = self.runner.put(p)
        with self.pass_progress("cached 1/2"):
            kept = self.data_pass.keep(self.objective.hidden_keep, pd, self.block_rows,
                                       token=self._token)
        hidden = self.data_pass.reduce_kept(kept)
        rho_hat, kl, c = self._sparsity(hidden.sum_a2)
        cd = self.runner.put(c.astype(self.dtype))
        with self.pass_progress("cached 2/2"):
            sums = self.data_pass.reduce(self.objective.backprop_cached, pd, cd,
                                         self.block_rows, token=self._token, kept=list(kept))
        del kept
        return self._finish(params, rho_hat, kl, sums)

    def _finish(self, params, rho_hat, kl, sums):
        """The `Evaluation` from the dataset's `GradientSums` (bad data raises)."""
        self._check_data(sums.bad)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results raise below
            cost, grad, terms = self.objective.assemble(params, self.m, sums, kl)
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


def _size(nbytes):
    """A byte count for messages: '1000 B', '2.34 KiB', '1.50 GiB'."""
    if nbytes < 1024:
        return f"{int(nbytes)} B"
    for unit in ("KiB", "MiB", "GiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.2f} {unit}"
