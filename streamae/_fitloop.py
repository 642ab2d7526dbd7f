"""One training run: the optimizer loop with its progress bar, metrics,
checkpoints and signal handling.

`SparseAutoencoder.fit` validates, opens the data and hands a `TrainingRun`
the starting weights; the run returns an `Outcome` that the estimator turns
into its fitted attributes. The run owns everything that lives only while
training: the scheduler session, the evaluator, the checkpoint file, the
SIGINT/SIGTERM flag and the bar.

Checkpoint life cycle (docs/reliability.md): with a checkpoint path, the
state is written every ``checkpoint_every`` iterations, on an interrupt, when
the cluster or the data fails mid-run, and always when the run ends, so a
finished run's checkpoint holds its final state (resuming it is a no-op, and
resuming it with a larger ``max_iter`` extends it exactly).
"""

import functools
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import _checkpoint as C
from . import _metrics, _optim, _progress, _warmup
from ._cluster import make_runner
from ._engine import Evaluator
from ._errors import ClusterError, DataError, StreamaeError, TrainingInterrupted
from ._objective import flatten, unflatten

#: Stop messages of the optimizer that mean "converged" (its tolerances).
CONVERGED = ("gradient below tolerance", "step below tolerance", "cost change below tolerance",
             "the line search found no decrease (converged to rounding precision)")


@dataclass(frozen=True)
class Settings:
    """The validated hyperparameters of one fit (see `SparseAutoencoder`)."""

    n_hidden: int
    hyper: object
    dtype: str
    seed: int
    strategy: str
    optimizer: str
    max_iter: int
    history_size: int
    learning_rate: float
    warmup: str = "none"

    def warmup_stride(self, shape):
        """Rows per subsample row of the warm-up on data of ``shape``; 0 for none."""
        return _warmup.plan(self.warmup, shape, np.dtype(self.dtype).itemsize)

    def model_identity(self, n_visible):
        """Hyperparameters a resumed run must match (the keys of streamae 0.1, and the
        decoder when it is not the sigmoid)."""
        identity = {"n_visible": n_visible, "n_hidden": self.n_hidden, "rho": self.hyper.rho,
                "beta": self.hyper.beta, "weight_decay": self.hyper.weight_decay,
                "dtype": self.dtype, "seed": self.seed}
        if self.hyper.decoder != "sigmoid":  # checkpoints of sigmoid runs keep their identity
            identity["decoder"] = self.hyper.decoder
        return identity

    def run_identity(self, dataset, options):
        """Run settings that change the floating-point result."""
        run = {"optimizer": self.optimizer, "strategy": self.strategy,
               "chunk_rows": int(dataset.array.chunks[0][0]),
               "block_rows": int(options.block_rows), "split_every": int(options.split_every)}
        if self.optimizer == "lbfgs":
            run["history_size"] = int(self.history_size)
        else:
            run["learning_rate"] = float(self.learning_rate)
        stride = self.warmup_stride(dataset.shape)
        if stride:  # (absent when there is none: checkpoints of 0.1 stay valid)
            run["warmup_stride"] = stride
        return run


@dataclass
class Outcome:
    """How a run ended.

    Attributes
    ----------
    state : OptimState
        The last completed iteration.
    stop : str
        Why it stopped, in words (``stop_reason_``).
    history : list of dict
    rho_hat : ndarray of shape (n_hidden,)
    resumed_from : int or None
    interrupt : TrainingInterrupted or None
        Raised by ``fit`` after the fitted attributes are set.
    """

    state: object
    stop: str
    history: list
    rho_hat: np.ndarray
    resumed_from: int = None
    interrupt: BaseException = None

    @property
    def reached_max_iter(self):
        return self.stop.startswith("reached max_iter")

    @property
    def converged(self):
        return self.stop.startswith(CONVERGED)


def announcer(verbose):
    """Where a run says which cluster it uses (and its dashboard): stderr, if ``verbose``."""
    if not verbose:
        return None

    def announce(line):
        print(f"streamae: {line}", file=sys.stderr, flush=True)

    return announce


class TrainingRun:
    """The optimizer loop of one fit over ``dataset``.

    Parameters
    ----------
    model : SparseAutoencoder
        Receives ``history_`` and ``rho_hat_`` as the run goes, for callbacks.
    settings : Settings
    dataset : Dataset
        The training data, shape (m, n).
    options : RunOptions
    verbose : bool
        Progress bars and cluster announcements on stderr.
    callback : callable, optional
        ``callback(model, record)`` after each iteration; True stops the run.
    """

    def __init__(self, model, settings, dataset, options, verbose=False, callback=None):
        self.model, self.settings, self.dataset = model, settings, dataset
        self.m, self.n = dataset.shape
        self.verbose, self.callback = bool(verbose), callback
        self.options = options
        self.stride = settings.warmup_stride(dataset.shape)
        self.runner = make_runner(options.scheduler, options.workers, announcer(verbose))
        self.evaluator = Evaluator.with_options(
            dataset, settings.hyper, options, dtype=settings.dtype, strategy=settings.strategy,
            scheduler=self.runner)
        self.evaluator.progress = self.verbose
        self.store = None
        self.state = None
        self.history, self.rho_hat, self.resumed_from = [], None, None
        self.elapsed0 = 0.0
        self.t0 = time.perf_counter()
        self.data_variance = None
        self.flag = C.InterruptFlag(active=False)

    # ------------------------------------------------------------ start
    def use_checkpoint(self, path, every, identity, extra, resume, overwrite):
        """Write checkpoints at ``path``; continue from it if ``resume`` and it exists."""
        self.store = C.Checkpointer(path, every, identity, extra)
        saved = self.store.open(resume=resume, overwrite=overwrite)
        self.flag = C.InterruptFlag(active=True)
        if saved is not None:
            self.state, self.history, self.rho_hat = saved.state, saved.history, saved.rho_hat
            self.resumed_from, self.elapsed0 = saved.state.iteration, saved.elapsed
            self.data_variance = saved.data_variance  # no second pass to measure it

    def _fun(self, theta, evaluator=None):
        self.flag.check()
        result = (evaluator or self.evaluator)(unflatten(theta, self.n, self.settings.n_hidden))
        return result.cost, flatten(result.grad), result

    def _start(self, theta0, warm=None):
        """Evaluate at ``theta0`` unless resumed in the full phase; the record of
        iteration 0. L-BFGS keeps the correction pairs of a ``warm`` state."""
        if self.state is not None:
            return
        self.state, info = _optim.start(self._fun, theta0)
        if warm is not None and self.settings.optimizer == "lbfgs":
            self.state.s_hist, self.state.y_hist = list(warm.s_hist), list(warm.y_hist)
        self._record(info)
        if self.store is not None and self.store.due(self.state):
            self.save()

    def _warm_up(self, theta0):
        """The warm-up phase on the subsample (`streamae._warmup`), if there is one.

        Returns the full phase's start: weights (ndarray of shape (p,)) and the
        warm-up's final `OptimState` (None without a warm-up).
        """
        resumed = self.state is not None and self.state.phase == "warmup"
        if not self.stride or (self.state is not None and not resumed):
            return theta0, None
        first = _warmup.offset(self.settings.seed, self.stride)
        with self.evaluator.pass_progress("warm-up: reading the subsample"):
            rows = _warmup.subsample(self.runner, self.dataset, self.stride, first)
        evaluator = _warmup.evaluator(rows, self.settings, self.runner, self.options)
        fun = functools.partial(self._fun, evaluator=evaluator)
        phase = _Phase("warmup", rows.shape[0], 1.0, rows.shape[0] / self.m)
        if not resumed:
            self.state, info = _optim.start(fun, theta0)
            self.state.phase = "warmup"
            self._record(info, phase)
        with _progress.bar(f"warm-up on 1/{self.stride} of the rows", self.settings.max_iter,
                           "it", enabled=self.verbose, initial=self.state.iteration,
                           leave=False) as bar:
            self._loop(bar, fun, phase)
        warm, self.state = self.state, None
        return warm.theta, warm

    def _finished(self):
        return self.state is not None and C.finished(self.state, self.settings.max_iter)

    # ------------------------------------------------------------ the loop
    def execute(self, theta0):
        """Train from ``theta0`` (ndarray of shape (p,)), or from the checkpoint.

        Returns
        -------
        Outcome

        Raises
        ------
        ClusterError, DataError
            The cluster or the data failed; with a checkpoint, its message
            says where the last iteration was saved.
        """
        self.model.history_ = self.history
        bar = _progress.bar(
            f"fit {self.settings.strategy}", self.settings.max_iter, "it", enabled=self.verbose,
            initial=min(self.state.iteration, self.settings.max_iter)
            if self.state and self.state.phase == "full" else 0)
        # The handler is armed before the cluster starts: a signal during its
        # start-up stops the run as soon as the cluster is up.
        with self.flag, self.runner.session(stop=self.flag.is_set), bar:
            try:
                self.flag.check()
                if not self._finished():
                    with _progress.phase("compiling kernels", enabled=self.verbose):
                        self.evaluator.compile_kernels(self.settings.n_hidden)
                    self._measure_variance()
                theta0, warm = self._warm_up(theta0)
                self._start(theta0, warm)
                stop = self._loop(bar, self._fun, self._full_phase())
                if self.store is not None:
                    self.save()  # a finished run's checkpoint holds its final state
            except (C.Stop, KeyboardInterrupt):
                return self._interrupted()
            except (ClusterError, DataError) as exc:
                # The cluster or the data failed mid-run: keep the iterations done.
                if self.store is None or self.state is None:
                    raise
                raise _with_checkpoint(exc, self.save, self.state.iteration) from None
        return Outcome(self.state, stop, self.history, self.rho_hat, self.resumed_from)

    def _measure_variance(self):
        """Denominator of the explained variance: one streaming pass, inside the
        session (same workers) and the signal handler."""
        if self.data_variance is None:
            with self.evaluator.pass_progress("data variance"):
                self.data_variance = _metrics.total_variance(self.evaluator)
            if self.store is not None:
                self.store.keep(data_variance=self.data_variance)
        self.t0 = time.perf_counter() - self.elapsed0  # training time starts here

    def _full_phase(self):
        """The full phase's `_Phase`: its passes follow the warm-up's, if any."""
        before = max((r.get("data_passes", 0.0) for r in self.history
                      if r.get("phase") == "warmup"), default=0.0)
        return _Phase("full", self.m, before, float(self.evaluator.passes))

    def _loop(self, bar, fun, phase):
        """Optimizer iterations until a stopping rule; returns the stop reason."""
        s = self.settings
        stop = _stop_reason(self.state, s.max_iter)
        while not stop:
            self.flag.check()
            info, done = _optim.step(fun, self.state, s.optimizer,
                                     history=s.history_size, learning_rate=s.learning_rate)
            asked = False
            if info is not None:
                record = self._record(info, phase)
                # The postfix first: the line drawn by update shows this iteration's cost.
                bar.set_postfix(cost=f"{record['cost']:.5g}",
                                rho_hat=f"{record['rho_hat_mean']:.4f}",
                                samples_s=f"{record['samples_per_s']:.3g}", refresh=False)
                bar.update(1)
                if self.store is not None and self.store.due(self.state):
                    self.save()
                asked = self.callback is not None and self._call_back(record)
            if done:
                stop = self.state.message
            elif asked:
                stop = "stopped by callback"
            else:
                stop = _stop_reason(self.state, s.max_iter)
        return stop

    def _call_back(self, record):
        """``callback(model, record)``, the model holding this iteration's weights."""
        self.model._set_weights(unflatten(self.state.theta, self.n, self.settings.n_hidden))
        return self.callback(self.model, record)

    def _record(self, info, phase=None):
        """Append the iteration's record to the history (fields: `streamae._metrics`)."""
        phase = phase or self._full_phase()
        state, m = self.state, phase.rows
        elapsed = time.perf_counter() - self.t0
        self.rho_hat = self.model.rho_hat_ = info.rho_hat
        dead, saturated = _metrics.unit_counts(info.rho_hat, self.settings.hyper.rho)
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
                info.terms["reconstruction"], m, self.data_variance),
            "evaluations": state.evaluations,
            "seconds": elapsed,
            "samples_per_s": state.evaluations * m / elapsed if elapsed > 0 else 0.0,
            "phase": phase.name,
            "data_passes": phase.before + state.evaluations * phase.per_evaluation,
        }
        self.history.append(record)
        return record

    # ------------------------------------------------------------ ends
    def save(self):
        """Write the checkpoint of the current state; returns its path."""
        return self.store.save(self.state, self.rho_hat, self.history,
                               time.perf_counter() - self.t0)

    def _interrupted(self):
        """SIGINT/SIGTERM (or Ctrl-C): write the checkpoint, then report the interrupt."""
        self.flag.stopping = True
        signum = self.flag.signum or signal.SIGINT
        if self.store is None:
            raise
        if self.state is None:
            raise TrainingInterrupted(signum) from None
        path = self.save()
        where = "warm-up " if self.state.phase == "warmup" else ""
        stop = (f"interrupted by {signal.Signals(signum).name} at {where}iteration "
                f"{self.state.iteration}")
        return Outcome(self.state, stop, self.history, self.rho_hat, self.resumed_from,
                       interrupt=TrainingInterrupted(signum, path, self.state.iteration))


@dataclass(frozen=True)
class _Phase:
    """What the records of one phase of a fit count.

    Attributes
    ----------
    name : {"full", "warmup"}
    rows : int
        Rows of the objective the phase optimizes.
    before : float
        Passes over the whole data before the phase's first evaluation.
    per_evaluation : float
        Passes over the whole data (or their equivalent in rows) per evaluation.
    """

    name: str
    rows: int
    before: float
    per_evaluation: float


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
                      f"'{path}': fix the cause, then resume with `resume=True`"
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
