"""Training metrics: what each record of ``history_`` holds, and the
JSON-lines file written next to a saved model.

Per iteration (record 0 is the starting point)::

    iteration, cost, reconstruction, weight_decay, sparsity   the cost and its three terms
    grad_norm, step                                            ||grad||_2, accepted step length
    rho_hat_min, rho_hat_mean, rho_hat_max
    dead_units       units with rho_hat < rho / 10
    saturated_units  units with rho_hat > min(10 rho, (1 + rho) / 2)
    explained_variance  1 - sum ||x - a3||^2 / sum_j sum_i (x_ij - mean_j)^2
    evaluations, seconds (wall time since fit started), samples_per_s
    phase            "warmup" (on a sample held in memory) or "full" (every row)
    data_passes      passes over the whole data so far, the sample's read included
                     (a warm-up iteration on a sample of k rows counts k / m)

A warm-up record also has ``level`` (0 for the smallest sample) and ``rows``
(the level's rows), and every 10th iteration of a level ``heldout_cost``
(the objective on held-out sample rows, which ends the level when it stalls);
its ``cost`` and the terms are the level's, on its own rows.

With a validation set (``fit(X, validation=V)``), the records of checks
(every ``validation_every`` full-data iterations, `streamae._validation_set`) also
have::

    validation_cost            J on V at the record's weights, with V's own rho_hat
    validation_reconstruction  its reconstruction term, sum ||x - a3||^2 / (2 m_v)

Dead and saturated are "a factor 10 away from the target": for the
exercise's rho = 0.01, below 0.001 or above 0.1. The saturated threshold is
capped at halfway between rho and 1, so that it stays above rho for large
targets (rho = 0.1 -> 0.55).

The explained variance's denominator (the data's total variance about its
column means) costs no pass of its own: a fit's first evaluation takes each
batch's column moments from the reads it makes anyway
(`streamae._engine.Evaluator.measure_variance`), or the warm-up's read of its
sample does; only the ``cached`` strategy runs `total_variance`, a streaming
pass. Its numerator is already in every evaluation (the reconstruction term is
sum ||x - a3||^2 / (2 m)).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from ._atomic import write_bytes
from ._constants import DEAD_FACTOR, unit_thresholds  # noqa: F401  (shared with the pictures)
from ._data import as_readable
from ._kernels import column_moments
from ._tree import merge_moments


def unit_counts(rho_hat, rho):
    """Numbers of dead and saturated hidden units (see `unit_thresholds`)."""
    low, high = unit_thresholds(rho)
    rho_hat = np.asarray(rho_hat)
    return int(np.sum(rho_hat < low)), int(np.sum(rho_hat > high))


def explained_variance(reconstruction, m, total):
    """``1 - SSE / total`` from the cost's reconstruction term (SSE / 2m); None if total is 0."""
    if not total or not math.isfinite(total):
        return None
    return 1.0 - 2.0 * m * reconstruction / total


def chunk_moments(block):
    """(count, column means, column M2) of one block of rows, in float64, for
    `streamae._tree.merge_moments`.

    Bad values (NaN, Inf) just make the result non-finite: the evaluation
    that follows reports them, with their rows.
    """
    x = as_readable(block)
    mean, m2 = column_moments(x)
    return x.shape[0], mean, m2


def total_variance(evaluator):
    """sum_j sum_i (x_ij - mean_j)^2 over the whole dataset, one streaming pass.

    A reduction pass (`streamae._passes.Pass.reduce`) over the data
    ``evaluator`` (a `streamae._engine.Evaluator`) evaluates, where it runs
    it, in batches of about 16 MiB (`streamae._passes.Pass.coarse`): per-batch
    counts, means and centred sums of squares pooled in the
    fixed tree by Chan et al.'s merge, so no precision is lost to
    cancellation and the result has the same bits on every scheduler.
    """
    _, _, m2 = evaluator.data_pass.coarse().reduce(_column_moments, combine=merge_moments)
    with np.errstate(all="ignore"):  # non-finite data: see chunk_moments
        return float(np.sum(m2))


def _column_moments(block, row0):
    """`chunk_moments`, as a pass's kernel."""
    return chunk_moments(block)


def metrics_path(model_path):
    """The JSON-lines file of a model: ``model.zarr`` -> ``model.metrics.jsonl``."""
    path = os.fspath(model_path).rstrip("/")
    stem = path[:-5] if path.endswith(".zarr") else path
    return stem + ".metrics.jsonl"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(record):
    """One record as one line of strict JSON (non-finite numbers become null)."""
    return json.dumps({k: _clean(v) for k, v in record.items()},
                      default=lambda v: np.asarray(v).tolist())


def write_metrics(path, history, storage_options=None):
    """Write ``history`` (a list of records) as JSON lines to ``path`` (atomically if local)."""
    text = "".join(dumps(r) + "\n" for r in history)
    if "://" in os.fspath(path):
        import fsspec

        with fsspec.open(os.fspath(path), "w", **(storage_options or {})) as f:
            f.write(text)
    else:
        write_bytes(path, text.encode("utf-8"), "metrics file")
    return path


def read_metrics(path):
    """Records of a JSON-lines metrics file (a model path finds its file)."""
    path = os.fspath(path)
    if not path.endswith(".jsonl"):
        path = metrics_path(path)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
    """A ``fit`` callback that appends each record to a JSON-lines file as
    training runs (``tail -f`` it).

    >>> model.fit(data, callback=MetricsLog("run.metrics.jsonl"))  # doctest: +SKIP

    The file is started afresh by the first call; iteration 0 is written
    together with iteration 1 (callbacks start there).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._started = False

    def __call__(self, model, record):
        lines = [record]
        mode = "a"
        if not self._started:
            lines = [*model.history_[:-1], record]
            mode, self._started = "w", True
        with open(self.path, mode, encoding="utf-8") as f:
            f.write("".join(dumps(r) + "\n" for r in lines))
        return False
