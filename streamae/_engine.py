"""Passes over chunks: one evaluation of (cost, gradient) as Dask graphs.

Each pass is a set of kernel tasks followed by a tree reduction of the small
partial sums. A task takes a fixed run of consecutive batches (row chunks):
from a Zarr store it streams them, reading ahead while its kernels compute
(`streamae._chunkread.RowSource`); NumPy input is held as one block per run
(on a cluster's workers, once per evaluator); a Dask array's task takes its
run's chunks. The runs are planned once per evaluator from the data's layout
(`stream_group`), so the tasks per evaluation grow with the data's bytes, not
its number of chunks. The tree's shape is fixed by batch index (groups of
``split_every`` consecutive batches; a run is one subtree of it, reduced
inside its task), never by task completion order, so the floating-point
result does not depend on the scheduler, the grouping or the read-ahead.

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

import dask
import numpy as np
import psutil

from . import _kernels as K
from ._chunkread import READ_AHEAD, RowSource
from ._cluster import make_runner
from ._constants import STRATEGIES
from ._data import MIN_TASKS, describe_bad_values, in_memory_array
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

#: A task streams consecutive batches of a Zarr store, up to about this many
#: bytes (see `stream_group`): tasks per evaluation grow with the data's bytes,
#: not with its number of chunks, and each lasts long enough (about a second)
#: that the scheduler's cost per task (about 1 ms on a cluster) is small.
STREAM_BYTES = 2**30
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


def _kernel(kind, block, row0, p, c, block_rows, a2=None):
    """The partial sums of one batch of rows (a tuple), by pass ``kind``.

    Parameters
    ----------
    kind : {"hidden", "keep", "backprop", "cached", "one-pass"}
        Pass 1 of two-pass (sum of a2), pass 1 of cached (a2 and its sum),
        pass 2 of two-pass, pass 2 of cached (with ``a2``), one-pass.
    block : ndarray of shape (rows, n)
    row0 : int
        Global index of the batch's first row (for error reports).
    p : dict of ndarrays W1 (s, n), b1 (s,), W2 (n, s), b2 (n,), and ``linear`` (bool)
    c : ndarray of shape (s,) or None
        Sparsity term of d2 (pass 2 only).
    block_rows : int
    a2 : ndarray of shape (rows, s), optional
        Hidden activations kept by pass 1 of cached.
    """
    X = _as_input(block, p["W1"].dtype)
    linear = bool(p.get("linear", False))  # the decoder: a compile-time flag of the kernels
    if kind == "hidden":
        return (K.hidden_sum(X, p["W1"], p["b1"], block_rows),)
    if kind == "keep":
        a2_kept, sum_a2 = K.hidden_activations(X, p["W1"], p["b1"], block_rows)
        return [a2_kept], (sum_a2,)
    if kind == "backprop":
        return K.backprop_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], c, row0, block_rows,
                               linear)
    if kind == "cached":
        return K.backprop_sums_cached(X, a2, p["W2"], p["b2"], c, row0, block_rows, linear)
    return K.one_pass_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], row0, block_rows, linear)


def _batches(data, where, read_ahead):
    """Yield (k, first row, batch k) for a task's batches, in order.

    Parameters
    ----------
    data : RowSource, ndarray of shape (rows, n) or list of ndarrays
        A Zarr store's batches, streamed; one block of consecutive batches in
        memory; or the batches themselves (chunks of a Dask array).
    where : (int, int) or sequence of int
        For a `RowSource`: its [first, stop) batches, read in order with
        ``read_ahead`` reads ahead. Otherwise: the global first row of each
        batch, then the row after the last.
    """
    if isinstance(data, RowSource):
        first, stop = where
        for i, block in data.stream(first, stop, read_ahead):
            yield i - first, int(data.starts[i]), block
            del block  # before the next read starts: its buffer can be reused
        return
    starts = [int(w) for w in where]
    for k in range(len(starts) - 1):
        if isinstance(data, list):
            yield k, starts[k], data[k]
        else:
            yield k, starts[k], data[starts[k] - starts[0]:starts[k + 1] - starts[0]]


def _task(kind, data, where, p, c, block_rows, split_every, read_ahead, subtree, kept=None):
    """The partial sums of one task of a pass: its batches' sums reduced in
    subtrees of ``subtree`` batches, each as `tree_sum` reduces them over all
    batches.

    Parameters
    ----------
    kind : str
        As in `_kernel`.
    data, where
        The task's batches, as in `_batches`.
    subtree : int
        A power of ``split_every``: batches per subtree of the reduction tree.
    kept : tuple, optional
        For ``kind`` "cached": this task's result of the "keep" pass.

    Returns
    -------
    list of partial-sum tuples, one per subtree; for ``kind`` "keep",
    ``(a2 of each batch, that list)``.
    """
    trees = []
    activations = []
    for k, row0, block in _batches(data, where, read_ahead):
        a2 = None if kept is None else kept[0][k]
        sums = _kernel(kind, block, row0, p, c, block_rows, a2)
        del block  # before the next read completes: read_ahead + 1 batches at most
        if kind == "keep":
            activations += sums[0]
            sums = sums[1]
        if k % subtree == 0:
            trees.append(_TreeSum(split_every))
        trees[-1].add(sums)
    totals = [tree.result() for tree in trees]
    return (activations, totals) if kind == "keep" else totals


def _first_bad_row(data, where, read_ahead):
    """Global index of the first row of a task's batches holding NaN or Inf, or -1."""
    for _, row0, block in _batches(data, where, read_ahead):
        rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if rows.size:
            return row0 + int(rows[0])
    return -1


# One function per pass, so that task names say which pass runs (dashboard,
# progress bars).
def _task_hidden_sum(*args):
    return _task("hidden", *args)


def _task_hidden_keep(*args):
    return _task("keep", *args)


def _task_backprop(*args):
    return _task("backprop", *args)


def _task_backprop_cached(*args):
    return _task("cached", *args)


def _task_one_pass(*args):
    return _task("one-pass", *args)


_TASKS = {"hidden": _task_hidden_sum, "keep": _task_hidden_keep, "backprop": _task_backprop,
          "cached": _task_backprop_cached, "one-pass": _task_one_pass}


def _kept_sums(kept):
    return kept[1]


def _merge_bad(records):
    """Combine [count, first_row] records: counts add, the first row is the smallest."""
    counts = [int(r[0]) for r in records]
    if not any(counts):
        return np.array([0, -1], np.int64)
    rows = [int(r[1]) for r, c in zip(records, counts) if c > 0]
    return np.array([sum(counts), min(rows)], np.int64)


def _combine(*parts):
    """Element-wise sum of partial-sum tuples, in the order given."""
    out = []
    for values in zip(*parts):
        first = values[0]
        if not isinstance(first, np.ndarray):
            out.append(sum(values[1:], first))
        elif first.dtype == np.int64:
            out.append(_merge_bad(values))
        else:
            total = first.copy()
            for v in values[1:]:
                np.add(total, v, out=total)  # in place: the same additions, no new arrays
            out.append(total)
    return tuple(out)


class _TreeSum:
    """`tree_sum` done eagerly as the parts arrive, holding O(split_every x
    depth) partial sums: parts are combined in groups of ``split_every``
    consecutive ones, then groups of those, in index order, exactly as
    `tree_sum` does, so the result has the same bits."""

    def __init__(self, split_every):
        self.split_every = split_every
        self.pending = []  # per level: parts not yet combined
        self.counts = []   # per level: parts added so far

    def add(self, part, level=0):
        if level == len(self.pending):
            self.pending.append([])
            self.counts.append(0)
        self.pending[level].append(part)
        self.counts[level] += 1
        if len(self.pending[level]) == self.split_every:
            group, self.pending[level] = self.pending[level], []
            self.add(_combine(*group), level + 1)

    def result(self):
        level = 0
        while self.counts[level] > 1:  # as tree_sum: stop at a level of one part
            if self.pending[level]:
                group, self.pending[level] = self.pending[level], []
                self.add(_combine(*group), level + 1)
            level += 1
        return self.pending[level][0]


def stream_group(batches, batch_bytes, split_every):
    """Batches per streaming task (a function of the data's layout only).

    ``g m``: ``g`` the largest power of ``split_every`` and ``m`` the largest
    divisor of ``split_every`` (below it) such that ``g m`` is not above
    ``STREAM_BYTES / batch_bytes`` nor ``batches / MIN_TASKS`` (at least 1).
    A task's batches are then ``m`` whole subtrees of ``g`` batches of the
    tree `tree_sum` builds over all batches, and ``split_every / m`` tasks
    make one node above them (see `reduce_runs`): results have the same bits
    whatever the grouping, and a pass has ``MIN_TASKS`` to ``2 MIN_TASKS``
    tasks when ``split_every`` is a power of two.

    Parameters
    ----------
    batches : int
        Row chunks (kernel batches) in the data.
    batch_bytes : int
        Bytes of one (full) batch.
    split_every : int
        Fan-in of the reduction tree.
    """
    want = min(STREAM_BYTES // max(1, batch_bytes), -(-batches // MIN_TASKS))
    group = 1
    while group * split_every <= want:
        group *= split_every
    subtrees = max(m for m in range(1, split_every)
                   if split_every % m == 0 and (m == 1 or group * m <= want))
    return group * subtrees


def subtree_size(run, split_every):
    """The largest power of ``split_every`` dividing ``run`` (a `stream_group`):
    batches per subtree inside a task."""
    size = 1
    while run % (size * split_every) == 0:
        size *= split_every
    return size


def _combine_runs(*runs):
    """`_combine` of the subtree sums of consecutive tasks, in order."""
    return _combine(*[part for run in runs for part in run])


def reduce_runs(runs, per_task, split_every):
    """Delayed total of the tasks' lists of subtree sums: ``split_every /
    per_task`` consecutive tasks make one node of the tree, then `tree_sum`.

    Parameters
    ----------
    runs : list of Delayed
        Each a list of ``per_task`` subtree sums (the last task's maybe fewer).
    per_task : int
        Subtrees per task, a divisor of ``split_every``.
    """
    step = split_every // per_task
    nodes = [dask.delayed(_combine_runs, pure=True)(*runs[i:i + step])
             for i in range(0, len(runs), step)]
    return tree_sum(nodes, split_every)


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
        self.dtype = np.dtype(dtype)
        self.strategy = strategy
        self.scheduler = scheduler or "threads"
        self.runner = make_runner(scheduler)
        self._plan = None  # the tasks' data, prepared on first use
        self._prepared = None
        read_ahead = READ_AHEAD if read_ahead is None else read_ahead
        self.read_ahead = check_int("read_ahead", read_ahead, 0)
        self.block_rows = check_int("block_rows", block_rows, 1)
        self.split_every = check_int("split_every", split_every, 2)
        self.m = dataset.shape[0]
        self.row_starts = dataset.row_starts[:-1].tolist()
        self.evaluations = 0
        self.progress = False  # a bar per pass over the chunks (see streamae._progress)
        if strategy == "cached":
            self._check_cache_budget(cache_limit)

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

    def _stream_plan(self):
        """[(data, where)] of each task of a pass, in index order (see `_batches`),
        built once per evaluator: tasks are runs of `stream_group` consecutive
        batches (one chunk each for `_chunk_tasks`)."""
        if self._plan is None:
            batches = len(self.row_starts)
            n = self.dataset.shape[1]
            batch_bytes = int(self.dataset.array.chunks[0][0]) * n * self.dtype.itemsize
            group = 1 if self._chunk_tasks else stream_group(batches, batch_bytes,
                                                             self.split_every)
            self._subtree = subtree_size(group, self.split_every)
            self._per_task = group // self._subtree
            ranges = [(i, min(i + group, batches)) for i in range(0, batches, group)]
            if self.dataset.reader is not None:
                # One key for the store handle, named as dask names the array
                # object that from_array reads ("original-...").
                source = dask.delayed(
                    self.dataset.reader, traverse=False,
                    name=f"original-streamae-source-{uuid.uuid4().hex}")
                self._plan = [(source, r) for r in ranges]
            else:
                self._plan = self._memory_runs(ranges)
        return self._plan

    def _memory_runs(self, ranges):
        """The plan of data not in a Zarr store. NumPy input: one block per run
        (views; held on the workers once per evaluator on a cluster). A Dask
        array: each task takes its run's chunks."""
        starts = self.dataset.row_starts.astype(np.int64)
        # Arrays, not tuples: Dask neither traverses nor hashes them element by element.
        wheres = [starts[i:j + 1] for i, j in ranges]
        memory = self.dataset.memory
        if memory is None:
            self._prepared = self.runner.prepare(self.dataset.array)
            chunks = self._prepared.to_delayed().ravel().tolist()
            if self._chunk_tasks:
                return [(chunks[i], w) for (i, _), w in zip(ranges, wheres)]
            return [(chunks[i:j], w) for (i, j), w in zip(ranges, wheres)]
        rows = tuple(int(w[-1] - w[0]) for w in wheres)
        runs = in_memory_array(memory, rows).astype(self.dataset.array.dtype)  # as read
        # Held here: on a cluster, the persisted blocks live as long as this reference.
        self._prepared = self.runner.prepare(runs)
        return list(zip(self._prepared.to_delayed().ravel().tolist(), wheres))

    @property
    def _chunk_tasks(self):
        """One task per chunk, its read fused into it: a Dask array on a cluster or
        process pool, whose chunks are made (or persisted) wherever the scheduler
        put them; a task taking several would fetch them from other workers."""
        return (self.dataset.reader is None and self.dataset.memory is None
                and getattr(self.runner, "kind", "") in ("distributed", "processes"))

    @property
    def tasks_per_pass(self):
        """Kernel tasks in one pass over the data."""
        return len(self._stream_plan())

    def _compute(self, *objs):
        # Runs read their own batches: nothing to fuse (and fusing would merge
        # them into the reduction tasks). A chunk's read is fused into its task.
        return self.runner.compute(*objs, fuse_reads=self._chunk_tasks)

    def pass_progress(self, label):
        """Context showing chunks done in a pass (local schedulers, ``progress`` on)."""
        enabled = self.progress and getattr(self.runner, "kind", "") != "distributed"
        return chunk_progress(label, self.tasks_per_pass, enabled)

    def compile_kernels(self, n_hidden):
        """Compile this strategy's kernels in this process (or load them from Numba's
        cache) on one row, so that the first pass over the data does not wait for them."""
        n = self.dataset.shape[1]
        X = np.full((1, n), 0.5, self.dtype)
        p = {"W1": np.zeros((n_hidden, n), self.dtype), "b1": np.zeros(n_hidden, self.dtype),
             "W2": np.zeros((n, n_hidden), self.dtype), "b2": np.zeros(n, self.dtype)}
        c = np.zeros(n_hidden, self.dtype)
        if self.hyper.linear:
            p["linear"] = True
        br = self.block_rows
        if self.strategy == "one-pass":
            _kernel("one-pass", X, 0, p, None, br)
        elif self.strategy == "two-pass":
            _kernel("hidden", X, 0, p, None, br)
            _kernel("backprop", X, 0, p, c, br)
        else:
            kept, _ = _kernel("keep", X, 0, p, None, br)
            _kernel("cached", X, 0, p, c, br, kept[0])

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
        find = dask.delayed(_first_bad_row, pure=True)
        rows = self._compute(*[find(d, w, self.read_ahead) for d, w in self._stream_plan()])
        found = [r for r in rows if r >= 0]
        if found:
            raise DataError(describe_bad_values(self.dataset, min(found), self.hyper.decoder))

    def __call__(self, params):
        """Evaluate at ``params`` (dict W1, b1, W2, b2; any float dtype).

        Returns
        -------
        Evaluation
        """
        p = {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in params.items()}
        if self.hyper.linear:
            p["linear"] = True
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

    def _tasks(self, kind, pd, cd=None, kept=None):
        """Delayed partial sums of one pass: one task per run of batches, in index order.

        Keys are named, not hashed from the arguments: the client's work per
        evaluation is a few objects per task, whatever the data's chunks.
        """
        function = _TASKS[kind]
        task = dask.delayed(function)
        plan = self._stream_plan()
        consts = (pd, cd, self.block_rows, self.split_every, self.read_ahead, self._subtree)
        kept = kept or [None] * len(plan)
        name = f"{function.__name__}-{self._token}"
        return [task(data, where, *consts, k, dask_key_name=(name, i))
                for i, ((data, where), k) in enumerate(zip(plan, kept))]

    def _total(self, runs):
        """Delayed total of a pass's tasks (each a list of subtree sums)."""
        return reduce_runs(runs, self._per_task, self.split_every)

    def _reduce(self, kind, pd, cd=None, kept=None):
        """One pass: its tasks, reduced by `reduce_runs`, computed."""
        sums, = self._compute(self._total(self._tasks(kind, pd, cd, kept)))
        return sums

    def _two_pass(self, p, params):
        pd = self.runner.put(p)
        with self.pass_progress("two-pass 1/2"):
            (sum_a2,) = self._reduce("hidden", pd)
        rho_hat, kl, c = self._sparsity(sum_a2)
        cd = self.runner.put(c.astype(self.dtype))
        with self.pass_progress("two-pass 2/2"):
            sq, gW1, gb1, gW2, gb2, bad = self._reduce("backprop", pd, cd)
        self._check_data(bad)
        return self._finish(params, rho_hat, kl, sq, gW1, gb1, gW2, gb2)

    def _one_pass(self, p, params):
        pd = self.runner.put(p)
        with self.pass_progress("one-pass"):
            sums = self._reduce("one-pass", pd)
        sum_a2, sq, gW1r, gb1r, gW2, gb2, fpX, sum_fp, bad = sums
        self._check_data(bad)
        rho_hat, kl, c = self._sparsity(sum_a2)
        gW1 = gW1r + c[:, None] * fpX
        gb1 = gb1r + c * sum_fp
        return self._finish(params, rho_hat, kl, sq, gW1, gb1, gW2, gb2)

    def _cached(self, p, params):
        self._require_cache_fits(p["W1"].shape[0])
        pd = self.runner.put(p)
        with self.pass_progress("cached 1/2"):
            kept = self.runner.persist(*self._tasks("keep", pd), fuse_reads=self._chunk_tasks)
        (sum_a2,), = self._compute(self._total(
            [dask.delayed(_kept_sums, pure=True)(k) for k in kept]))
        rho_hat, kl, c = self._sparsity(sum_a2)
        cd = self.runner.put(c.astype(self.dtype))
        with self.pass_progress("cached 2/2"):
            sums = self._reduce("cached", pd, cd, list(kept))
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
