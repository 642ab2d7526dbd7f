"""The fixed-shape reduction tree, and how partial results combine in it.

Partial results are combined in groups of ``split_every`` consecutive ones,
then groups of those, always in index order (`tree`, `EagerTree` inside a
task, `reduce_runs` over the tasks' subtrees): the shape depends on the
number of parts and ``split_every`` only, so the result has the same bits
whatever runs it and in whatever order the parts arrive.

Three ways to combine, each exact in its order:

- `add_parts`: tuples (or named tuples) of arrays and scalars added
  element-wise, ``bad`` records (int64 ``[count, first row]``) merged (counts
  add, the first row is the smallest);
- `add_vectors`: packed partial-sum vectors (the same additions);
- `merge_moments`: (count, mean, scatter) triples, pooled by Chan et al.'s
  formula (the data variance and the whitening moments).
"""

import dask
import numpy as np

from ._errors import ParameterError


def _merge_bad(records):
    """Combine [count, first_row] records: counts add, the first row is the smallest."""
    counts = [int(r[0]) for r in records]
    if not any(counts):
        return np.array([0, -1], np.int64)
    rows = [int(r[1]) for r, c in zip(records, counts) if c > 0]
    return np.array([sum(counts), min(rows)], np.int64)


def add_parts(*parts):
    """Element-wise sum of partial-result tuples, in the order given (a named
    tuple stays one of its type).

    Float arrays are added in place into a copy of the first (the same
    additions as ``a + b + c``, no new arrays); int64 arrays are ``bad``
    records (`_merge_bad`); scalars are added.
    """
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
                np.add(total, v, out=total)
            out.append(total)
    return type(parts[0])(*out) if hasattr(parts[0], "_fields") else tuple(out)


def merge_moments(*parts):
    """Exact merge of (count, mean, scatter) triples, in order (Chan et al.)::

        m = m_a + m_b,  delta = mean_b - mean_a
        mean = mean_a + delta m_b / m
        C = C_a + C_b + delta^T delta m_a m_b / m

    Parameters
    ----------
    *parts : tuples (int, ndarray of shape (n,), ndarray of shape (n, n) or (n,))
        The scatter is a matrix (the whitening's covariance) or its diagonal
        alone (the data variance: per-column centred sums of squares).

    Returns
    -------
    tuple (int, ndarray of shape (n,), ndarray of the scatter's shape)
    """
    ma, mean_a, Ca = parts[0]
    for mb, mean_b, Cb in parts[1:]:
        if mb == 0:
            continue
        if ma == 0:
            ma, mean_a, Ca = mb, mean_b, Cb
            continue
        m = ma + mb
        delta = mean_b - mean_a
        cross = np.outer(delta, delta) if np.ndim(Ca) == 2 else delta * delta
        with np.errstate(invalid="ignore", over="ignore"):  # NaN data: reported by the caller
            mean_a = mean_a + delta * (mb / m)
            Ca = Ca + Cb + cross * (ma * mb / m)
        ma = m
    return ma, mean_a, Ca


class EagerTree:
    """`tree` done eagerly as the parts arrive, holding O(split_every x depth)
    partial results: parts are combined in groups of ``split_every``
    consecutive ones, then groups of those, in index order, exactly as
    `tree` does, so the result has the same bits."""

    def __init__(self, split_every, combine=add_parts):
        self.split_every = split_every
        self.combine = combine
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
            self.add(self.combine(*group), level + 1)

    def result(self):
        level = 0
        while self.counts[level] > 1:  # as tree: stop at a level of one part
            if self.pending[level]:
                group, self.pending[level] = self.pending[level], []
                self.add(self.combine(*group), level + 1)
            level += 1
        return self.pending[level][0]


def tree(parts, split_every=8, combine=add_parts):
    """Delayed combination of a list of delayed partial results, grouped by index."""
    if split_every < 2:
        raise ParameterError(f"split_every must be at least 2, got {split_every}")
    parts = list(parts)
    while len(parts) > 1:
        parts = [dask.delayed(combine, pure=True)(*parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    return parts[0]


def _combine_runs(combine, *runs):
    """``combine`` of the subtree results of consecutive tasks, in order."""
    return combine(*[part for run in runs for part in run])


def reduce_runs(runs, per_task, split_every, combine=add_parts):
    """Delayed total of the tasks' lists of subtree results: ``split_every /
    per_task`` consecutive tasks make one node of the tree, then `tree`.

    Parameters
    ----------
    runs : list of Delayed
        Each a list of ``per_task`` subtree results (the last task's maybe fewer).
    per_task : int
        Subtrees per task, a divisor of ``split_every``.
    """
    step = split_every // per_task
    nodes = [dask.delayed(_combine_runs, pure=True)(combine, *runs[i:i + step])
             for i in range(0, len(runs), step)]
    return tree(nodes, split_every, combine)


def add_vectors(*parts):
    """Sum of packed partial-sum vectors, in the order given (as `add_parts`
    adds each field: a copy of the first, then the others added in place)."""
    total = parts[0].copy()
    for part in parts[1:]:
        np.add(total, part, out=total)
    return total
