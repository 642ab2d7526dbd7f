"""The `SparseAutoencoder` estimator: fit, evaluate, transform, save, load."""

import signal
import sys
import time

import dask.array as da
import numpy as np
from tqdm.auto import tqdm

from . import _checkpoint as C
from . import _kernels as K
from . import _metrics, _optim
from ._cluster import ClusterError, make_runner
from ._data import open_dataset
from ._engine import STRATEGIES, Evaluator, make_hyper
from ._errors import DataError, ParameterError, StreamaeError
from ._objective import PARAM_NAMES, flatten, init_params, unflatten
from ._store import read_model, write_model

DTYPES = ("float32", "float64")
DEFAULT_BLOCK_ROWS = 512  # rows per kernel block: see docs/benchmarks.md


class NotFittedError(StreamaeError, AttributeError):
    """The model has no weights yet."""


def _announcer(progress):
    """Where a run says which cluster it uses (and its dashboard): stderr, if ``progress``."""
    if not progress:
        return None

    def announce(line):
        print(f"streamae: {line}", file=sys.stderr, flush=True)

    return announce


class SparseAutoencoder:
    """Sparse autoencoder with a sigmoid hidden layer, trained full-batch.

    The cost is the UFLDL objective: mean squared reconstruction error (halved),
    weight decay on W1 and W2, and beta times the KL divergence between rho and
    each hidden unit's mean activation rho_hat over the *whole* dataset.

    Parameters
    ----------
    n_hidden : int, default 25
        Hidden units s.
    rho : float, default 0.01
        Target mean activation, in (0, 1).
    beta : float, default 3.0
        Weight of the sparsity penalty, >= 0.
    weight_decay : float, default 1e-4
        lambda, L2 penalty on W1 and W2, >= 0.
    dtype : {"float32", "float64"}, default "float32"
        Arithmetic of the per-chunk kernels; sums always accumulate in float64
        and the optimizer works in float64.
    seed : int, default 0
        Seed of the weight initialisation.

    Attributes
    ----------
    W1_ : ndarray of shape (n_hidden, n_visible)
    b1_ : ndarray of shape (n_hidden,)
    W2_ : ndarray of shape (n_visible, n_hidden)
    b2_ : ndarray of shape (n_visible,)
    rho_hat_ : ndarray of shape (n_hidden,)
        Mean hidden activation over the training data at the final weights.
    history_ : list of dict
        One record per iteration (0 is the starting point): iteration, cost,
        its terms, grad_norm, step, rho_hat_min/mean/max, evaluations,
        seconds, samples_per_s.
    n_iter_ : int
    stop_reason_ : str
    evaluations_ : int
        Evaluations of the objective (passes over the data) in the whole fit.
    guard_events_ : list of dict
        Trial points the numerical guard rejected (iteration, step, hidden
        units, message); see docs/reliability.md.
    resumed_from_ : int or None
        The checkpoint's iteration when the fit was resumed, else None.
    """

    def __init__(self, n_hidden=25, rho=0.01, beta=3.0, weight_decay=1e-4, dtype="float32",
                 seed=0):
        if isinstance(n_hidden, bool) or not isinstance(n_hidden, (int, np.integer)) \
                or n_hidden < 1:
            raise ParameterError(f"n_hidden must be an integer >= 1, got {n_hidden!r}")
        if str(dtype) not in DTYPES:
            raise ParameterError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.hyper = make_hyper(rho, beta, weight_decay)
        self.n_hidden = int(n_hidden)
        self.dtype = str(dtype)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ParameterError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        self.history_ = []

    # ------------------------------------------------------------ properties
    rho = property(lambda self: self.hyper.rho)
    beta = property(lambda self: self.hyper.beta)
    weight_decay = property(lambda self: self.hyper.weight_decay)

    @property
    def params_(self):
        """Weights as a dict W1, b1, W2, b2."""
        self._require_fitted()
        return {k: getattr(self, k + "_") for k in PARAM_NAMES}

    @property
    def n_visible_(self):
        self._require_fitted()
        return self.W1_.shape[1]

    def _require_fitted(self):
        if getattr(self, "W1_", None) is None:
            raise NotFittedError(
                "this SparseAutoencoder has no weights yet; call fit() first, or build one "
                "with SparseAutoencoder.from_weights() or load()")

    def _set_params(self, params):
        for k in PARAM_NAMES:
            setattr(self, k + "_", np.asarray(params[k], np.float64))

    def __repr__(self):
        return (f"SparseAutoencoder(n_hidden={self.n_hidden}, rho={self.rho}, beta={self.beta}, "
                f"weight_decay={self.weight_decay}, dtype={self.dtype!r}, seed={self.seed})")

    # ------------------------------------------------------------ data
    def _dataset(self, data, chunk_rows=None, storage_options=None, check_width=True):
        dataset = open_dataset(data, chunk_rows=chunk_rows, storage_options=storage_options)
        if check_width and getattr(self, "W1_", None) is not None:
            n = dataset.shape[1]
            if n != self.n_visible_:
                raise DataError(
                    f"{dataset.source} has {n} features (columns), but this model expects "
                    f"{self.n_visible_}; use data of the width the model was trained on")
        return dataset

    def _evaluator(self, dataset, strategy, scheduler, block_rows, split_every, cache_limit):
        return Evaluator(dataset, self.hyper, dtype=self.dtype, strategy=strategy,
                         scheduler=scheduler, block_rows=block_rows, split_every=split_every,
                         cache_limit=cache_limit)

    # ------------------------------------------------------------ public API
    def cost_and_grad(self, data, strategy="one-pass", *, scheduler=None, workers=None,
                      chunk_rows=None, block_rows=DEFAULT_BLOCK_ROWS, split_every=8,
                      cache_limit=None, storage_options=None):
        """Cost and gradient over the whole dataset at the current weights.

        Parameters
        ----------
        data : path, URL, zarr.Array, dask.array.Array or ndarray of shape (m, n)
        strategy : {"two-pass", "one-pass", "cached"}

        Returns
        -------
        cost : float
        grad : dict of float64 ndarrays W1 (s, n), b1 (s,), W2 (n, s), b2 (n,)
        """
        self._require_fitted()
        dataset = self._dataset(data, chunk_rows, storage_options)
        runner = make_runner(scheduler, workers)
        evaluator = self._evaluator(dataset, strategy, runner, block_rows, split_every,
                                    cache_limit)
        with runner.session():
            result = evaluator(self.params_)
        return result.cost, result.grad

    def fit(self, data, strategy="one-pass", optimizer="lbfgs", max_iter=400, *,
            history_size=100, learning_rate=1.0, scheduler=None, workers=None, chunk_rows=None,
            block_rows=DEFAULT_BLOCK_ROWS, split_every=8, cache_limit=None,
            storage_options=None, progress=True, callback=None, checkpoint=None,
            checkpoint_every=0, resume=False, overwrite=False):
        """Train on the whole dataset with full-batch updates.

        Parameters
        ----------
        data : path, URL, zarr.Array, dask.array.Array or ndarray of shape (m, n)
            Values in [0, 1], one sample per row.
        strategy : {"two-pass", "one-pass", "cached"}
            How each evaluation passes over the data (see docs/algorithm.md).
        optimizer : {"lbfgs", "gd"}
        max_iter : int
            Iterations (each one line search of one or more evaluations).
        history_size : int
            L-BFGS corrections kept.
        learning_rate : float
            First step of gradient descent (later steps adapt).
        scheduler : str, distributed.Client or cluster, optional
            Where the tasks run: "threads" (default), "synchronous", "processes",
            "distributed" (the current client), a scheduler address such as
            "tcp://10.0.0.5:8786", a ``distributed.Client`` or a cluster object.
            Results are bit-identical on all of them (docs/cluster.md).
        workers : int, optional
            Threads ("threads"), processes ("processes"), or, with no scheduler
            or "distributed", the single-threaded worker processes of a
            ``LocalCluster`` started (on 127.0.0.1) for this fit and stopped
            after it. When a cluster is used and ``progress`` is on, its
            dashboard link is printed on stderr.
        chunk_rows : int, optional
            Rows per task; default the store's chunks.
        block_rows : int
            Rows per kernel block inside a task.
        progress : bool
            Show a progress bar.
        callback : callable, optional
            ``callback(model, record)`` after each iteration; return True to stop.
        checkpoint : str or os.PathLike, optional
            File holding everything needed to continue this fit exactly (see
            docs/reliability.md). With a checkpoint path, SIGINT and SIGTERM
            (when fit runs in the main thread) stop the fit after the
            evaluation in progress, write the checkpoint of the last finished
            iteration and raise `TrainingInterrupted`; the model then holds
            those weights.
        checkpoint_every : int
            Also write the checkpoint every this many iterations (0: only on an
            interrupt), and when the fit ends.
        resume : bool
            Continue from ``checkpoint`` if it exists (else start afresh). The
            result is bit-identical to an uninterrupted fit. The data,
            hyperparameters and run settings must match the checkpoint's
            (`CheckpointError` says what differs); ``max_iter`` may change.
        overwrite : bool
            Start afresh even though ``checkpoint`` exists (it is replaced at
            the first write). Without it, an existing checkpoint is refused
            unless ``resume``.

        Returns
        -------
        self

        Raises
        ------
        TrainingInterrupted
            On SIGINT or SIGTERM (a KeyboardInterrupt; ``exit_status`` is 130 or 143).
        NumericalError
            If the objective is not finite at the initial weights. Later, trial
            points where it is not finite are rejected (see ``guard_events_``).
        """
        if optimizer not in _optim.OPTIMIZERS:
            raise ParameterError(
                f"unknown optimizer {optimizer!r}; choose one of {', '.join(_optim.OPTIMIZERS)}")
        if strategy not in STRATEGIES:
            raise ParameterError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        for name, value, low in (("max_iter", max_iter, 0), ("history_size", history_size, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 < learning_rate < np.inf:
            raise ParameterError(
                f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        C.require_path(checkpoint, checkpoint_every, resume)
        dataset = self._dataset(data, chunk_rows, storage_options, check_width=False)
        m, n = dataset.shape
        runner = make_runner(scheduler, workers, _announcer(progress))
        evaluator = self._evaluator(dataset, strategy, runner, block_rows, split_every,
                                    cache_limit)
        evaluator.progress = bool(progress)
        rng = np.random.default_rng(self.seed)
        params = init_params(n, self.n_hidden, rng)

        store, saved = None, None
        if checkpoint is not None:
            # Everything that changes the floating-point result must match on resume.
            run = {"optimizer": optimizer, "strategy": strategy,
                   "chunk_rows": int(dataset.array.chunks[0][0]),
                   "block_rows": int(block_rows), "split_every": int(split_every)}
            if optimizer == "lbfgs":
                run["history_size"] = int(history_size)
            else:
                run["learning_rate"] = float(learning_rate)
            store = self._checkpointer(checkpoint, checkpoint_every, data, dataset, run, rng,
                                       storage_options)
            saved = store.open(resume=resume, overwrite=overwrite)
        flag = C.InterruptFlag(active=store is not None)

        def fun(theta):
            flag.check()
            result = evaluator(unflatten(theta, n, self.n_hidden))
            return result.cost, flatten(result.grad), result

        def save_checkpoint():
            return store.save(state, self.rho_hat_, self.history_, time.perf_counter() - t0)

        self.history_ = []
        self.resumed_from_ = None
        state = None
        if saved is not None:
            state = saved.state
            self.history_ = saved.history
            self.rho_hat_ = saved.rho_hat
            self.resumed_from_ = state.iteration
        elapsed0 = saved.elapsed if saved is not None else 0.0
        t0 = time.perf_counter() - elapsed0
        bar = tqdm(total=max_iter, initial=min(state.iteration, max_iter) if state else 0,
                   disable=not progress, unit="it", dynamic_ncols=True, desc=f"fit {strategy}")
        # The handler is armed before the cluster starts: a signal during its
        # start-up stops the run as soon as the cluster is up.
        with flag, runner.session(stop=flag.is_set), bar:
            try:
                flag.check()
                # Denominator of the explained variance: one streaming pass per
                # fit, inside the session (same workers) and the signal handler.
                with evaluator.pass_progress("data variance"):
                    self._data_variance = _metrics.total_variance(evaluator)
                t0 = time.perf_counter() - elapsed0  # training time starts here
                if state is None:
                    state, info = _optim.start(fun, flatten(params))
                    self._record(state, info, m, t0)
                    if store is not None and store.due(state):
                        save_checkpoint()
                stop = _stop_reason(state, max_iter)
                while not stop:
                    flag.check()
                    info, done = _optim.step(fun, state, optimizer, history=history_size,
                                             learning_rate=learning_rate)
                    asked = False
                    if info is not None:
                        record = self._record(state, info, m, t0)
                        bar.update(1)
                        bar.set_postfix(cost=f"{record['cost']:.5g}",
                                        rho_hat=f"{record['rho_hat_mean']:.4f}",
                                        samples_s=f"{record['samples_per_s']:.3g}",
                                        refresh=False)
                        if store is not None and store.due(state):
                            save_checkpoint()
                        asked = callback is not None and callback(self, record)
                    if done:
                        stop = state.message
                    elif asked:
                        stop = "stopped by callback"
                    else:
                        stop = _stop_reason(state, max_iter)
                if store is not None and store.every:
                    save_checkpoint()
            except (C.Stop, KeyboardInterrupt):
                flag.stopping = True
                signum = flag.signum or signal.SIGINT
                if store is None:
                    raise
                if state is None:
                    raise C.TrainingInterrupted(signum) from None
                path = save_checkpoint()
                self._finish_fit(state, n, strategy,
                                 f"interrupted by {signal.Signals(signum).name} at iteration "
                                 f"{state.iteration}")
                raise C.TrainingInterrupted(signum, path, state.iteration) from None
            except (ClusterError, DataError) as exc:
                # The cluster or the data failed mid-run: keep the iterations done.
                if store is None or state is None:
                    raise
                raise _with_checkpoint(exc, save_checkpoint, state.iteration) from None
        self._finish_fit(state, n, strategy, stop)
        return self

    def _checkpointer(self, path, every, data, dataset, run, rng, storage_options):
        """A `Checkpointer` whose identity covers the data, the model and ``run``."""
        hyper = {"n_visible": dataset.shape[1], "n_hidden": self.n_hidden, "rho": self.rho,
                 "beta": self.beta, "weight_decay": self.weight_decay,
                 "dtype": self.dtype, "seed": self.seed}
        expected = C.identity(hyper, C.data_fingerprint(data, dataset, storage_options), run)
        random_state = {"seed": self.seed, "after_init": rng.bit_generator.state}
        return C.Checkpointer(path, every, expected, {"random_state": random_state})

    def _finish_fit(self, state, n, strategy, stop):
        """Set the fitted attributes from the optimizer's ``state``."""
        self._set_params(unflatten(state.theta, n, self.n_hidden, np.float64))
        self.n_iter_ = state.iteration
        self.stop_reason_ = stop
        self.evaluations_ = state.evaluations
        self.strategy_ = strategy
        self.guard_events_ = list(state.rejections)

    def _record(self, state, info, m, t0):
        """Append the iteration's record to history_ and update rho_hat_.

        The fields are described in `streamae._metrics`.
        """
        elapsed = time.perf_counter() - t0
        self.rho_hat_ = info.rho_hat
        dead, saturated = _metrics.unit_counts(info.rho_hat, self.rho)
        record = {
            "iteration": state.iteration,
            "cost": state.cost,
            **info.terms,
            "grad_norm": float(np.linalg.norm(state.grad)),
            "step": state.step,
            "rho_hat_min": float(info.rho_hat.min()),
            "rho_hat_mean": float(info.rho_hat.mean()),
            "rho_hat_max": float(info.rho_hat.max()),
            "dead_units": dead,
            "saturated_units": saturated,
            "explained_variance": _metrics.explained_variance(
                info.terms["reconstruction"], m, getattr(self, "_data_variance", None)),
            "evaluations": state.evaluations,
            "seconds": elapsed,
            "samples_per_s": state.evaluations * m / elapsed if elapsed > 0 else 0.0,
        }
        self.history_.append(record)
        return record

    def transform(self, data, *, out=None, overwrite=False, scheduler=None, workers=None,
                  chunk_rows=None, block_rows=DEFAULT_BLOCK_ROWS, storage_options=None):
        """Hidden activations a2 = f(X W1^T + b1) for every row.

        Parameters
        ----------
        out : str or os.PathLike, optional
            Write the activations to a new Zarr array there instead of
            returning them in memory: chunked like the data, a few chunks in
            memory at a time (as ``streamae encode``, `streamae._encode.encode`).
        overwrite : bool
            With ``out``: replace an existing array.

        Returns
        -------
        ndarray of shape (m, n_hidden), dtype of the model
            Or, with ``out``, the written ``zarr.Array`` open for reading.
        """
        if out is not None:
            from ._encode import encode

            return encode(self, data, out, chunk_rows=chunk_rows, overwrite=overwrite,
                          scheduler=scheduler, workers=workers, block_rows=block_rows,
                          storage_options=storage_options)
        H = self.transform_dask(data, chunk_rows=chunk_rows, block_rows=block_rows,
                                storage_options=storage_options)
        runner = make_runner(scheduler, workers)
        with runner.session():
            return runner.compute(H)[0]

    def transform_dask(self, data, *, chunk_rows=None, block_rows=DEFAULT_BLOCK_ROWS,
                       storage_options=None):
        """Lazy hidden activations: a Dask array of shape (m, n_hidden), chunked like the data."""
        self._require_fitted()
        dataset = self._dataset(data, chunk_rows, storage_options)
        dtype = np.dtype(self.dtype)
        W1 = np.ascontiguousarray(self.W1_, dtype)
        b1 = np.ascontiguousarray(self.b1_, dtype)
        return da.map_blocks(_encode_block, dataset.array, W1, b1, int(block_rows),
                             chunks=(dataset.array.chunks[0], (self.n_hidden,)), dtype=dtype)

    @classmethod
    def from_weights(cls, W1, b1, W2, b2, rho=0.01, beta=3.0, weight_decay=1e-4,
                     dtype="float32"):
        """A model with given weights (shapes (s, n), (s,), (n, s), (n,))."""
        W1, b1, W2, b2 = (np.asarray(a, np.float64) for a in (W1, b1, W2, b2))
        if W1.ndim != 2:
            raise ParameterError(f"W1 must be 2-D (n_hidden, n_visible), got shape {W1.shape}")
        s, n = W1.shape
        expected = {"b1": (s,), "W2": (n, s), "b2": (n,)}
        for name, arr in zip(("b1", "W2", "b2"), (b1, W2, b2)):
            if arr.shape != expected[name]:
                raise ParameterError(
                    f"{name} has shape {arr.shape}, but W1 of shape {W1.shape} needs "
                    f"{expected[name]}")
        model = cls(n_hidden=s, rho=rho, beta=beta, weight_decay=weight_decay, dtype=dtype)
        model._set_params({"W1": W1, "b1": b1, "W2": W2, "b2": b2})
        return model

    def save(self, path, overwrite=False, storage_options=None):
        """Write the model as a Zarr group: weights as arrays, the rest as attributes.

        ``history_`` is also written as JSON lines beside the model, one record
        per line: ``model.zarr`` -> ``model.metrics.jsonl`` (see `streamae._metrics`).
        """
        self._require_fitted()
        attrs = {
            "n_hidden": self.n_hidden, "n_visible": self.n_visible_,
            "rho": self.rho, "beta": self.beta, "weight_decay": self.weight_decay,
            "dtype": self.dtype, "seed": self.seed,
            "rho_hat": np.asarray(getattr(self, "rho_hat_", []), float).tolist(),
            "n_iter": getattr(self, "n_iter_", 0),
            "stop_reason": getattr(self, "stop_reason_", ""),
            "history": self.history_,
        }
        for name in ("evaluations_", "strategy_", "guard_events_"):  # set by fit
            if hasattr(self, name):
                attrs[name.rstrip("_")] = getattr(self, name)
        write_model(path, self.params_, attrs, overwrite=overwrite,
                    storage_options=storage_options)
        _metrics.write_metrics(_metrics.metrics_path(path), self.history_, storage_options)
        return path

    @classmethod
    def load(cls, path, storage_options=None):
        """Read a model written by `save`."""
        params, attrs = read_model(path, storage_options=storage_options)
        model = cls.from_weights(**params, rho=attrs["rho"], beta=attrs["beta"],
                                 weight_decay=attrs["weight_decay"], dtype=attrs["dtype"])
        model.seed = attrs.get("seed", 0)
        model.history_ = list(attrs.get("history", []))
        if attrs.get("rho_hat"):
            model.rho_hat_ = np.asarray(attrs["rho_hat"], np.float64)
        model.n_iter_ = attrs.get("n_iter", 0)
        model.stop_reason_ = attrs.get("stop_reason", "")
        for name in ("evaluations", "strategy", "guard_events"):  # models of a fit
            if name in attrs:
                setattr(model, name + "_", attrs[name])
        return model


def _with_checkpoint(exc, save_checkpoint, iteration):
    """``exc`` (a fit's ClusterError or DataError), after writing the checkpoint
    of the last finished iteration; its message then says where and how to resume.

    Sets ``checkpoint`` and ``iteration`` on the error (None if the checkpoint
    could not be written: the original error is what matters).
    """
    try:
        path = save_checkpoint()
    except StreamaeError:
        path = None
    error = type(exc)(f"{exc}; the checkpoint of iteration {iteration} was written to "
                      f"'{path}': fix the cause, then resume (--resume, fit(resume=True))"
                      if path is not None else str(exc))
    error.checkpoint, error.iteration = path, iteration if path is not None else None
    return error


def _stop_reason(state, max_iter):
    """Why a fit in ``state`` should stop now, or "" to continue."""
    if state.message:
        return state.message
    if state.iteration >= max_iter:
        return f"reached max_iter={max_iter}"
    return ""


def _encode_block(block, W1, b1, block_rows, block_info=None):
    X = np.ascontiguousarray(block, dtype=W1.dtype)
    # NaN fails both comparisons, so this also refuses NaN and Inf.
    if X.size and not (X.min() >= 0 and X.max() <= 1):
        row0 = block_info[0]["array-location"][0][0] if block_info else 0
        bad = np.flatnonzero(~((X >= 0) & (X <= 1)).all(axis=1)) + row0
        raise DataError(f"cannot encode: {bad.size} row(s) with values outside [0, 1] or not "
                        f"finite, first row {bad[0]}; clean or rescale the data as it was for "
                        "training")
    return K.hidden_activations(X, W1, b1, block_rows)[0]
