"""Passes over a dataset: one way through the data for every computation.

Every pass is a *kernel over streamed runs of batches* (row chunks), either

- **reduced** (`Pass.reduce`): the kernel maps each batch to a small partial
  result, and the partial results are combined in a tree of fixed shape:
  groups of ``split_every`` consecutive batches, then groups of those, in
  batch order. The shape depends on the number of batches and
  ``split_every`` only, never on the scheduler, the grouping of batches into
  tasks or the read-ahead, so the result has the same bits everywhere; or
- **written** (`Pass.write`): the kernel maps each batch to rows of a new
  array, which its task writes in whole output chunks (each output chunk
  written by exactly one task, so a task run again after a worker's loss
  writes the same bytes).

A task takes a fixed run of consecutive batches (`stream_group`: whole
subtrees of the tree, a function of the data's layout only): from a Zarr
store it streams them, reading ahead while its kernels compute
(`streamae._chunkread.RowSource`); NumPy input is held as one block per run
(on a cluster's workers, once per `Pass`); a Dask array's task takes its
run's chunks. So the tasks per pass grow with the data's bytes (8 to 16 for
data up to ``8 x STREAM_BYTES``), not with its number of chunks.

The tree and the ways partial results combine in it are `streamae._tree`.
"""

import uuid

import dask
import numpy as np

from . import _kernels as K
from ._chunkread import READ_AHEAD, LocalChunks, RowSource
from ._data import MIN_TASKS, as_readable
from ._errors import LostInputError, ParameterError
from ._tree import EagerTree, _merge_bad, add_parts, add_vectors, merge_moments, reduce_runs
from ._validation import check_int

#: A task streams consecutive batches of a Zarr store, up to about this many
#: bytes (see `stream_group`): tasks per pass grow with the data's bytes,
#: not with its number of chunks, and each lasts long enough (about a second)
#: that the scheduler's cost per task (about 1 ms on a cluster) is small.
STREAM_BYTES = 2**30




def stream_group(batches, batch_bytes, split_every):
    """Batches per streaming task (a function of the data's layout only).

    ``g m``: ``g`` the largest power of ``split_every`` and ``m`` the largest
    divisor of ``split_every`` (below it) such that ``g m`` is not above
    ``STREAM_BYTES / batch_bytes`` nor ``batches / MIN_TASKS`` (at least 1).
    A task's batches are then ``m`` whole subtrees of ``g`` batches of the
    tree `tree` builds over all batches, and ``split_every / m`` tasks
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


# ---------------------------------------------------------------- tasks
# Module-level functions so that they pickle for process and cluster workers.

def batches(data, where, read_ahead):
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


def blocks(data, where, read_ahead):
    """Yield (k, first row, rows, offsets) for a task's batches, a read at a time:
    ``rows`` holds batches k, k + 1, ... (batch k + j is ``rows[offsets[j]:offsets[j +
    1]]``, offsets an int64 array); ``data`` and ``where`` as in `batches`."""
    if isinstance(data, RowSource):
        first, stop = where
        for i, j, rows in data.stream_reads(first, stop, read_ahead):
            offsets = data.starts[i:j + 1] - data.starts[i]
            yield i - first, int(data.starts[i]), rows, offsets
            del rows  # before the next read starts: its buffer can be reused
        return
    starts = np.asarray(where, np.int64)
    if isinstance(data, list):
        for k, chunk in enumerate(data):
            yield k, int(starts[k]), chunk, starts[k:k + 2] - starts[k]
    else:
        yield 0, int(starts[0]), data, starts - starts[0]


def _task_reduce_batched(kernel, unpack, data, where, consts, split_every, read_ahead,
                         subtree, moments=False):
    """`_task_reduce` with a kernel called once per read of consecutive batches.

    ``kernel(rows, offsets, first_row, *consts)`` returns ``(parts, bads)``:
    each batch's partial sums packed in a row of ``parts`` (float64), and its
    bad-value record (a row of ``bads``, or None). The rows are combined in the
    same subtrees, in the same order, as `_task_reduce` combines the batches'
    results (`add_vectors` adds what `add_parts` adds); bad records merge
    exactly in any order. ``unpack(vector, bad)`` names a subtree's sums.

    With ``moments``, each subtree's column moments (count, means, centred
    sums of squares: `SubtreeMoments`) are taken from the same reads; the
    result is then ``(sums, moments)``, two lists of one entry per subtree.
    """
    trees, bads, pooled = [], [], []
    for k0, row0, rows, offsets in blocks(data, where, read_ahead):
        parts, bad = kernel(rows, offsets, row0, *consts)
        first = 0  # the read's first batch not yet in a subtree's moments
        for j in range(len(parts)):
            if (k0 + j) % subtree == 0:
                trees.append(EagerTree(split_every, add_vectors))
                bads.append([])
                if moments and j > first:
                    pooled[-1].add(rows[offsets[first]:offsets[j]])
                    first = j
                pooled.append(SubtreeMoments())
            trees[-1].add(parts[j])
            if bad is not None:
                bads[-1].append(bad[j])
        if moments:
            pooled[-1].add(rows[offsets[first]:offsets[len(parts)]])
        del rows
    sums = [unpack(t.result(), _merge_bad(b) if b else None) for t, b in zip(trees, bads)]
    return (sums, [p.result() for p in pooled]) if moments else sums


class SubtreeMoments:
    """Count, column means and centred sums of squares of a subtree's rows,
    added in row order about its first row (`streamae._kernels.shifted_sums`):
    the same bits however the rows arrive (reads, tasks, schedulers), one
    kernel call per read."""

    def __init__(self):
        self.count, self.shift = 0, None

    def add(self, rows):
        """The next rows (ndarray of shape (r, n)) of the subtree."""
        rows = as_readable(rows)
        if self.shift is None:
            self.shift = rows[0].astype(np.float64)
            self.s1, self.s2 = np.zeros_like(self.shift), np.zeros_like(self.shift)
        K.shifted_sums(rows, self.shift, self.s1, self.s2)
        self.count += len(rows)

    def result(self):
        """(count, means, centred sums of squares), for `merge_moments`."""
        with np.errstate(all="ignore"):  # NaN data: reported by the evaluation
            return (self.count, self.shift + self.s1 / self.count,
                    self.s2 - self.s1 * self.s1 / self.count)


def _task_reduce(kernel, combine, data, where, consts, split_every, read_ahead, subtree,
                 kept=None):
    """The partial results of one task of a reduction: its batches' results
    combined in subtrees of ``subtree`` batches, each as `tree` combines them.

    Parameters
    ----------
    kernel : callable
        ``kernel(batch, first_row, *consts)``, or with ``kept``
        ``kernel(batch, first_row, *consts, kept_k)``: the batch's partial
        result; a kernel that returns ``(payload, partial)`` with ``kept``
        True keeps each batch's payload (see `Pass.keep`).
    data, where
        The task's batches, as in `batches`.
    subtree : int
        A power of ``split_every``: batches per subtree inside the task.
    kept : list or True, optional
        True: return the payloads too. A list: the payload of each batch
        from an earlier `Pass.keep`, passed to the kernel.

    Returns
    -------
    list of partial results, one per subtree; with ``kept`` True,
    ``(payloads, that list)``.
    """
    trees = []
    payloads = []
    for k, row0, block in batches(data, where, read_ahead):
        if kept is None or kept is True:
            part = kernel(block, row0, *consts)
        else:
            part = kernel(block, row0, *consts, kept[0][k])
        del block  # before the next read completes: read_ahead + 1 batches at most
        if kept is True:
            payloads.append(part[0])
            part = part[1]
        if k % subtree == 0:
            trees.append(EagerTree(split_every, combine))
        trees[-1].add(part)
    totals = [t.result() for t in trees]
    return (payloads, totals) if kept is True else totals


def _task_write(kernel, data, where, consts, read_ahead, out, combine=None):
    """Write one task's output rows, in whole output chunks.

    Parameters
    ----------
    kernel : callable
        ``kernel(batch, first_row, *consts)`` -> ndarray of shape (rows, k);
        with ``combine``, ``(rows, part)``: besides its rows, a small partial
        result of the batch, the task's parts combined in order.
    data, where
        The task's batches, as in `batches`; they start at an output chunk's first row.
    out : OutputChunks
        Where the rows go (the array, its chunk rows, the task's last row).

    Returns
    -------
    int
        Rows written; with ``combine``, ``(rows written, combined part)``.
    """
    writer = _ChunkWriter(out, out.stop(where, data))
    parts = []
    for _, row0, block in batches(data, where, read_ahead):
        rows = kernel(block, row0, *consts)
        del block
        if combine is not None:
            rows, part = rows
            parts.append(part)
        writer.add(row0, rows)
    return writer.written if combine is None else (writer.written, combine(*parts))


class _ChunkWriter:
    """Rows gathered into whole output chunks, each written when full."""

    def __init__(self, out, stop):
        self.out, self.stop = out, stop
        self.target = out.open()
        self.local = LocalChunks.for_array(self.target, page_cache="keep")  # files written directly
        self.buffer, self.chunk0, self.filled, self.written = None, 0, 0, 0

    def add(self, row0, rows):
        """Rows from global row ``row0`` on (ndarray of shape (r, k)), in order."""
        done = 0
        while done < len(rows):
            if self.buffer is None:
                self.chunk0 = row0 + done
                size = min(self.out.chunk_rows, self.stop - self.chunk0)
                self.buffer, self.filled = np.empty((size, rows.shape[1]), self.out.dtype), 0
            take = min(len(rows) - done, len(self.buffer) - self.filled)
            self.buffer[self.filled:self.filled + take] = rows[done:done + take]
            self.filled += take
            done += take
            if self.filled == len(self.buffer):
                self._flush()

    def _flush(self):
        chunk0, buffer = self.chunk0, self.buffer
        if self.local is None or not self.local.write_chunks(chunk0, buffer):
            self.target[chunk0:chunk0 + len(buffer)] = buffer
        self.written += len(buffer)
        self.buffer = None


class OutputChunks:
    """Where a written pass's rows go: a Zarr array (by path or URL, opened in
    each task) written in chunks of ``chunk_rows`` rows.

    Picklable: it travels to processes and cluster workers with the tasks.
    """

    def __init__(self, target, chunk_rows, dtype, storage_options=None):
        self.target = target
        self.chunk_rows = int(chunk_rows)
        self.dtype = np.dtype(dtype)
        self.storage_options = storage_options

    def open(self):
        from ._output import open_for_writing

        return open_for_writing(self.target, self.storage_options)

    @staticmethod
    def stop(where, data):
        """The row after a task's last row."""
        if isinstance(data, RowSource):
            return int(data.starts[where[1]])
        return int(where[-1])


def _task_collect(kernel, data, where, consts, read_ahead):
    """One task's output rows, in order: ``kernel(batch, first_row, *consts)``
    of each of its batches, joined (ndarray of shape (rows, k))."""
    parts = []
    for _, row0, block in batches(data, where, read_ahead):
        parts.append(kernel(block, row0, *consts))
        del block
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _task_first_bad_row(data, where, read_ahead):
    """Global index of the first row of a task's batches holding NaN or Inf, or -1."""
    for _, row0, block in batches(data, where, read_ahead):
        rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if rows.size:
            return row0 + int(rows[0])
    return -1


# ---------------------------------------------------------------- the pass

class Pass:
    """The runs of a dataset's batches, and the passes over them.

    Parameters
    ----------
    dataset : Dataset
    runner : Runner
        Where the tasks run (`streamae._cluster.make_runner`).
    split_every : int
        Fan-in of the reduction tree.
    read_ahead : int, optional
        Batches each task reads ahead of the one its kernel works on (a Zarr
        store; 0: none). Default `streamae._chunkread.READ_AHEAD`. Results do
        not depend on it.
    itemsize : int, optional
        Bytes per value the kernels work in (sets the bytes of a batch, and so
        the runs); default the data's.

    Notes
    -----
    The runs (`stream_group`) are planned once, on first use, and reused by
    every pass: on a cluster, NumPy input is shipped to the workers once.
    """

    def __init__(self, dataset, runner, split_every=8, read_ahead=None, itemsize=None):
        self.dataset = dataset
        self.runner = runner
        self.split_every = check_int("split_every", split_every, 2)
        read_ahead = READ_AHEAD if read_ahead is None else read_ahead
        self.read_ahead = check_int("read_ahead", read_ahead, 0)
        self.itemsize = int(itemsize or np.dtype(dataset.array.dtype).itemsize)
        self._plans = {}
        self._prepared = None  # the data as the runner holds it (kept alive here)
        self._source = None

    # ------------------------------------------------------------ planning
    @property
    def batches(self):
        """Batches (row chunks) of the data."""
        return len(self.dataset.array.chunks[0])

    @property
    def batch_rows(self):
        return int(self.dataset.array.chunks[0][0])

    @property
    def chunk_tasks(self):
        """One task per batch, its read fused into it: a Dask array on a cluster or
        process pool, whose chunks are made (or persisted) wherever the scheduler
        put them; a task taking several would fetch them from other workers."""
        return (self.dataset.reader is None and self.dataset.memory is None
                and getattr(self.runner, "kind", "") in ("distributed", "processes"))

    def group(self, align=1):
        """Batches per task: `stream_group` (one for `chunk_tasks`), rounded to a
        multiple of ``align``."""
        n = self.dataset.shape[1]
        if self.chunk_tasks:
            group = 1
        else:
            group = stream_group(self.batches, self.batch_rows * n * self.itemsize,
                                 self.split_every)
        return max(align, group // align * align)

    def plan(self, align=1):
        """[(data, where)] of each task, in index order (see `batches`): runs of
        `group` consecutive batches, built once per alignment."""
        if align not in self._plans:
            group = self.group(align)
            ranges = [(i, min(i + group, self.batches)) for i in range(0, self.batches, group)]
            if self.dataset.reader is not None:
                self._plans[align] = [(self._store_source(), r) for r in ranges]
            else:
                self._plans[align] = self._memory_runs(ranges)
        return self._plans[align]

    def _store_source(self):
        """One key for the store handle, named as dask names the array object
        that from_array reads ("original-..."), shared by every task."""
        if self._source is None:
            self._source = dask.delayed(
                self.dataset.reader, traverse=False,
                name=f"original-streamae-source-{uuid.uuid4().hex}")
        return self._source

    def _memory_runs(self, ranges):
        """The plan of data not in a Zarr store. NumPy input: one block per run
        (views; held on the workers once per pass on a cluster). A Dask
        array: each task takes its run's chunks."""
        from ._data import in_memory_array

        starts = self.dataset.row_starts.astype(np.int64)
        # Arrays, not tuples: Dask neither traverses nor hashes them element by element.
        wheres = [starts[i:j + 1] for i, j in ranges]
        memory = self.dataset.memory
        if memory is None:
            if self._prepared is None:
                self._prepared = self.runner.prepare(self.dataset.array)
            chunks = self._prepared.to_delayed().ravel().tolist()
            if self.chunk_tasks:
                return [(chunks[i], w) for (i, _), w in zip(ranges, wheres)]
            return [(chunks[i:j], w) for (i, j), w in zip(ranges, wheres)]
        rows = tuple(int(w[-1] - w[0]) for w in wheres)
        runs = in_memory_array(memory, rows).astype(self.dataset.array.dtype)  # as read
        # Held here: on a cluster, the persisted blocks live as long as this reference.
        prepared = self.runner.prepare(runs)
        self._prepared = (self._prepared, prepared)
        return list(zip(prepared.to_delayed().ravel().tolist(), wheres))

    def coarse(self):
        """A `Pass` over the same store in batches of whole batches of this one,
        about `streamae._data.TASK_BYTES` each (for passes whose batches need not
        be the evaluations', such as the data variance: fewer, larger batches
        cost less per row); this pass itself for data held in memory."""
        from . import _data

        rows = self.batch_rows
        per = max(1, _data.TASK_BYTES // max(1, rows * self.dataset.shape[1] * self.itemsize))
        dataset = self.dataset.regrouped(min(rows * per, self.dataset.shape[0]))
        if dataset is self.dataset:
            return self
        return Pass(dataset, self.runner, self.split_every, self.read_ahead, self.itemsize)

    def subtree(self):
        """Batches per subtree inside a task of the reduction plan."""
        return subtree_size(self.group(), self.split_every)

    @property
    def tasks_per_pass(self):
        """Kernel tasks in one reduction pass over the data."""
        return len(self.plan())

    # ------------------------------------------------------------ building tasks
    def compute(self, *objs):
        # Runs read their own batches: nothing to fuse (and fusing would merge
        # them into the reduction tasks). A chunk's read is fused into its task.
        return self.runner.compute(*objs, fuse_reads=self.chunk_tasks)

    def tasks(self, kernel, consts, token=None, combine=add_parts, kept=None):
        """Delayed partial results of one reduction pass: one task per run of
        batches, in index order (see `_task_reduce` for ``kept``).

        Keys are named ``_task_<kernel>-<token>``, not hashed from the
        arguments: the client's work per pass is a few objects per task,
        whatever the data's chunks, and the task stream names the pass.
        """
        plan = self.plan()
        token = token or uuid.uuid4().hex
        name = f"_task_{kernel.__name__.lstrip('_')}-{token}"
        task = dask.delayed(_task_reduce)
        subtree = self.subtree()
        kept = kept if kept is not None else [None] * len(plan)
        kept = [kept] * len(plan) if kept is True else kept
        return [task(kernel, combine, data, where, consts, self.split_every, self.read_ahead,
                     subtree, k, dask_key_name=(name, i))
                for i, ((data, where), k) in enumerate(zip(plan, kept))]

    def batched_tasks(self, kernel, unpack, consts, token=None, moments=False):
        """As `tasks`, for a kernel over reads of consecutive batches
        (`_task_reduce_batched`); keys named ``_task_<kernel without _batches>``."""
        plan = self.plan()
        token = token or uuid.uuid4().hex
        name = f"_task_{kernel.__name__.lstrip('_').removesuffix('_batches')}-{token}"
        task = dask.delayed(_task_reduce_batched, nout=2 if moments else None)
        subtree = self.subtree()
        return [task(kernel, unpack, data, where, consts, self.split_every, self.read_ahead,
                     subtree, moments, dask_key_name=(name, i))
                for i, (data, where) in enumerate(plan)]

    def reduce_batched(self, kernel, unpack, *consts, token=None, moments=False):
        """`reduce` with a kernel called once per read of consecutive batches
        (`_task_reduce_batched`): the same result, bit for bit.

        With ``moments``, also the data's (count, column means, column centred
        sums of squares), from the same reads (no second pass): returns
        ``(sums, moments)``.
        """
        runs = self.batched_tasks(kernel, unpack, consts, token, moments)
        if not moments:
            total, = self.compute(self.total(runs))
            return total
        sums = self.total([run[0] for run in runs])
        pooled = self.total([run[1] for run in runs], merge_moments)
        return tuple(self.compute(sums, pooled))

    def total(self, runs, combine=add_parts):
        """Delayed total of a reduction pass's tasks (each a list of subtree results)."""
        return reduce_runs(runs, self.group() // self.subtree(), self.split_every, combine)

    # ------------------------------------------------------------ the passes
    def reduce(self, kernel, *consts, combine=add_parts, token=None, kept=None):
        """One reduction pass, computed.

        Parameters
        ----------
        kernel : callable
            ``kernel(batch, first_row, *consts)``: a batch's partial result
            (module-level, so that it pickles).
        combine : callable
            `add_parts` (sums) or `merge_moments`.
        kept : list, optional
            The result of a `keep` pass: each batch's payload is passed to
            ``kernel`` after ``consts``.

        Returns
        -------
        The combined partial result of every batch.
        """
        runs = self.tasks(kernel, consts, token, combine, kept)
        total, = self.compute(self.total(runs, combine))
        return total

    def keep(self, kernel, *consts, token=None):
        """Tasks of a reduction pass whose kernel returns ``(payload, partial)``:
        each task's payloads and subtree results, persisted (on a cluster, kept
        on the workers) for a later `reduce_kept`."""
        return self.runner.persist(*self.tasks(kernel, consts, token, kept=True),
                                   fuse_reads=self.chunk_tasks)

    def reduce_kept(self, kept):
        """The combined partial results of a `keep` pass."""
        total, = self.compute(self.total(
            [dask.delayed(_kept_parts, pure=True)(k) for k in kept]))
        return total

    def write(self, out, kernel, *consts, combine=None):
        """A written pass: ``kernel`` maps every batch to its output rows, which
        the tasks write into ``out`` (an `OutputChunks` whose chunk rows are a
        multiple of the batch rows), each output chunk by one task.

        With ``combine`` (a function of partial results, associative, such as
        a minimum and maximum), ``kernel`` returns ``(rows, part)``, and the
        parts of every batch are combined in batch order.

        Returns
        -------
        int
            Rows written; with ``combine``, ``(rows written, combined part)``.
        """
        m = self.dataset.shape[0]
        if out.chunk_rows >= m:
            align = self.batches  # one chunk: one task
        elif out.chunk_rows % self.batch_rows or len(set(self.dataset.array.chunks[0][:-1])) > 1:
            raise ParameterError(
                f"output chunks of {out.chunk_rows} rows are not whole batches of "
                f"{self.batch_rows} rows; give chunk_rows a multiple of {self.batch_rows}")
        else:
            align = out.chunk_rows // self.batch_rows
        plan = self.plan(align)
        for attempt in range(3):  # as the evaluations: again if scattered constants were lost
            token = uuid.uuid4().hex
            name = f"_task_{kernel.__name__.lstrip('_')}-{token}"
            shipped = tuple(self.runner.put(c) for c in consts)
            task = dask.delayed(_task_write)
            tasks = [task(kernel, data, where, shipped, self.read_ahead, out, combine,
                          dask_key_name=(name, i)) for i, (data, where) in enumerate(plan)]
            try:
                done = self.compute(*tasks)
            except LostInputError:
                if attempt == 2:
                    raise
                continue
            if combine is None:
                return int(sum(done))
            return int(sum(n for n, _ in done)), combine(*[part for _, part in done])

    def collect(self, kernel, *consts):
        """A pass whose output is returned, not written: ``kernel`` maps every
        batch to its output rows; each task joins its run's rows, and the
        tasks' rows are joined here, in order.

        Returns
        -------
        ndarray of shape (m, k)
        """
        token = uuid.uuid4().hex
        name = f"_task_{kernel.__name__.lstrip('_')}-{token}"
        shipped = tuple(self.runner.put(c) for c in consts)
        task = dask.delayed(_task_collect)
        parts = self.compute(*[task(kernel, data, where, shipped, self.read_ahead,
                                    dask_key_name=(name, i))
                               for i, (data, where) in enumerate(self.plan())])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def first_bad_row(self):
        """The first row holding NaN or Inf, or -1 (one more pass)."""
        find = dask.delayed(_task_first_bad_row, pure=True)
        rows = self.compute(*[find(d, w, self.read_ahead) for d, w in self.plan()])
        found = [r for r in rows if r >= 0]
        return min(found) if found else -1


def _kept_parts(kept):
    return kept[1]


def open_input(data, options):
    """The `Dataset` of a written pass's input: batches of ``options.chunk_rows``
    rows if given (the output's chunks), else the data's own (for a Dask
    array, its first chunk's rows, so that the batches are uniform).

    Parameters
    ----------
    data : path, URL, zarr.Array, dask.array.Array or ndarray of shape (m, n)
    options : RunOptions
    """
    import dask.array as da

    from ._data import open_dataset

    chunk_rows = options.chunk_rows
    if chunk_rows is None and isinstance(data, da.Array):
        chunk_rows = int(data.chunks[0][0])
    return open_dataset(data, chunk_rows=chunk_rows, storage_options=options.storage_options,
                        page_cache=options.page_cache)


def output_chunk_rows(batch_rows, m, width, itemsize):
    """Rows per chunk of a pass's output: whole input batches, about
    `streamae._output.CHUNK_BYTES` (16 MiB; see `default_chunk_rows`) whatever
    the input's chunks, so that the next pass reads it in few, large chunks.

    Parameters
    ----------
    batch_rows : int
        Rows per input batch.
    m, width, itemsize : int
        The output's rows, columns and bytes per value.
    """
    from ._output import default_chunk_rows

    want = default_chunk_rows(m, width, itemsize)
    return min(max(1, want // batch_rows) * batch_rows, m)
