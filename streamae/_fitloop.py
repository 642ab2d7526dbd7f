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
from . import _metrics, _optim, _progress, _validation_set, _warmup
from ._cluster import make_runner
from ._data import describe_bad_values
from ._engine import Evaluator
from ._errors import ClusterError, DataError, StreamaeError, TrainingInterrupted
from ._objective import flatten, param_blocks, unflatten

#: Stop messages of the optimizer that mean "converged" (its tolerances).
CONVERGED = ("gradient below tolerance", "step below tolerance", "cost change below tolerance",
             "the line search found no decrease (converged to rounding precision)",
             _validation_set.EARLY_STOPPING)


STOPPED_BY_CALLBACK = "stopped by callback"


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
    warmup_iter: int = _warmup.DEFAULT_ITER
    tol: float = _optim.GRAD_TOL
    validation_every: int = 1
    early_stopping: bool = False
    n_iter_no_change: int = 10

    def warmup_plan(self, shape):
        """The warm-up `streamae._warmup.Plan` on data of ``shape``, or None."""
        return _warmup.plan(self.warmup, shape, np.dtype(self.dtype).itemsize, self.n_hidden,
                            self.warmup_iter)

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
            run["lbfgs_scaling"] = "blocks"
        else:
            run["learning_rate"] = float(self.learning_rate)
        plan = self.warmup_plan(dataset.shape)
        if plan is not None:  # (absent when there is none)
            run["warmup"] = plan.describe()
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
    best : tuple or None
        With early stopping: (theta, rho_hat) of the best validation check.
    best_iteration : int or None
        With a validation set: the iteration of the best check.
    """

    state: object
    stop: str
    history: list
    rho_hat: np.ndarray
    resumed_from: int = None
    interrupt: BaseException = None
    best: tuple = None
    best_iteration: int = None

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
        self.plan = settings.warmup_plan(dataset.shape)
        self.blocks = param_blocks(self.n, settings.n_hidden)
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
        self.passes_before = 0.0  # passes over the data before the first evaluation
        self.flag = C.InterruptFlag(active=False)
        self.validation = None  # a `streamae._validation_set.Validation`, with one
        self.best = None  # with early stopping: (theta, rho_hat) of the best check

    def use_validation(self, dataset):
        """Check the validation data ``dataset`` (shape (m_v, n)) every
        ``validation_every`` full-data iterations, in this run's scheduler session."""
        self.validation = _validation_set.Validation(
            dataset, self.settings.hyper, self.options, self.settings.dtype, self.runner,
            self.settings.validation_every)

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
            self.best = _validation_set.best_of(saved.arrays)

    def _fun(self, theta, evaluator=None):
        self.flag.check()
        result = (evaluator or self.evaluator)(unflatten(theta, self.n, self.settings.n_hidden))
        return result.cost, flatten(result.grad), result

    def _start(self, theta0, warm=None):
        """Evaluate at ``theta0`` unless resumed in the full phase; the record of
        iteration 0. L-BFGS keeps the correction pairs of a ``warm`` state."""
        if self.state is not None and self.state.phase == "full":
            self._validate_last()  # if the fit was interrupted before its check
            return
        self.state, info = _optim.start(self._fun, theta0)
        if warm is not None and self.settings.optimizer == "lbfgs":
            self.state.s_hist, self.state.y_hist = list(warm.s_hist), list(warm.y_hist)
        self._record(info)
        self._validate_last()
        if self.store is not None and self.store.due(self.state):
            self.save()

    def _warm_up(self, theta0):
        """The warm-up on levels of a sample (`streamae._warmup`), if there is one.

        Returns the full phase's start: weights (ndarray of shape (p,)) and the
        warm-up's final `OptimState` (None without a warm-up); and "" or, when
        the callback stopped the fit in the warm-up, `STOPPED_BY_CALLBACK`.
        """
        if not self._warming_up():
            return theta0, None, ""
        first = _warmup.offset(self.settings.seed, self.plan.stride)
        with self.evaluator.pass_progress("warm-up: reading the sample"):
            sample, self.data_variance = _warmup.read_sample(
                self.evaluator.data_pass, self.plan.stride, first)
        self._keep_variance(self.data_variance)
        self._check_sample(sample, first)
        resumed = _warmup_level(self.history) if self.state is not None else None
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):  # the levels' threads use one each
            for level in range(resumed or 0, len(self.plan.levels)):
                if self._run_level(sample, level, theta0, resumed == level) == \
                        STOPPED_BY_CALLBACK:
                    return self.state.theta, None, STOPPED_BY_CALLBACK
                theta0 = self.state.theta
        # self.state stays the warm-up's until the full phase's first evaluation:
        # an interrupt before it saves the warm-up's end.
        return self.state.theta, self.state, ""

    def _run_level(self, sample, level, theta, resumed):
        """L-BFGS on level ``level`` of the sample from ``theta`` (or from the
        resumed state), carrying the correction pairs, until its budget or its
        held-out cost stalls (`streamae._warmup.stalled`); returns why it stopped."""
        plan, s = self.plan, self.settings
        train, heldout = (_warmup.LevelEvaluator(rows, s.hyper, s.dtype, self.options.block_rows,
                                                 self.options.split_every)
                          for rows in plan.rows(sample, level))
        fun = functools.partial(self._fun, evaluator=train)
        phase = _Phase("warmup", train.m, _passes_before(self.history, level,
                       self.passes_before), plan.fraction(level), level)
        check = functools.partial(self._check_level, heldout, phase)
        if resumed:
            phase.checks = sum("heldout_cost" in r for r in self._level_records(level))
        else:
            carried = self.state
            self.state, info = _optim.start(fun, theta)
            self.state.phase = "warmup"
            if carried is not None:
                self.state.iteration = carried.iteration
                self.state.s_hist, self.state.y_hist = carried.s_hist, carried.y_hist
            check(self._record(info, phase))
        start = _level_start(self.history, level)
        if resumed and self._stalled(level):
            return "the held-out cost stalled"  # the checkpoint was written as the level ended
        share = round(1 / phase.per_evaluation)
        label = f"warm-up level {level + 1}/{len(plan.levels)} (1/{share} of the rows)"
        with _progress.bar(label, plan.iterations[level], "it", enabled=self.verbose,
                           initial=self.state.iteration - start, leave=False) as bar:
            stop = self._loop(bar, fun, phase, start + plan.iterations[level], check)
        if stop != STOPPED_BY_CALLBACK:
            self.state.message = ""  # a level's own convergence moves the warm-up up a level
        return stop

    def _stalled(self, level):
        """True if the last record of ``level`` is a check at which it stalled."""
        checks = [r for r in self._level_records(level) if "heldout_cost" in r]
        last = self._level_records(level)[-1]
        return len(checks) > 1 and checks[-1] is last and _warmup.stalled(
            checks[-2], last, top=self.plan.is_top(level))

    def _level_records(self, level):
        return [r for r in self.history if r.get("phase") == "warmup" and r.get("level") == level]

    def _check_level(self, heldout, phase, record):
        """Every `WINDOW` iterations of a level: score the weights on the level's
        held-out rows (into ``record``); True if the level has stalled."""
        records = self._level_records(phase.level)
        if (record["iteration"] - records[0]["iteration"]) % _warmup.WINDOW:
            return False
        record["heldout_cost"] = heldout(unflatten(self.state.theta, self.n,
                                                   self.settings.n_hidden)).cost
        phase.checks += 1
        record["data_passes"] = phase.passes(self.state.evaluations)
        earlier = [r for r in records[:-1] if "heldout_cost" in r]
        return bool(earlier) and _warmup.stalled(
            earlier[-1], record, top=self.plan.is_top(phase.level))

    def _check_sample(self, sample, first):
        """Refuse a sample with values the decoder does not take, naming the data's row."""
        bad = ~np.isfinite(sample).all(axis=1)
        if self.settings.hyper.decoder == "sigmoid":
            bad |= ((sample < 0) | (sample > 1)).any(axis=1)
        rows = np.flatnonzero(bad)
        if rows.size:
            raise DataError(describe_bad_values(self.dataset, first + int(rows[0]) *
                                                self.plan.stride, self.settings.hyper.decoder))

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
                        if self.validation is not None:
                            self.validation.compile_kernels(self.settings.n_hidden)
                    self.t0 = time.perf_counter() - self.elapsed0  # training time starts here
                    # The sample's read (which measures the variance too), or none.
                    self.passes_before = 1.0 if self._warming_up() else self._measure_variance()
                theta0, warm, stop = self._warm_up(theta0)
                if not stop:
                    self._start(theta0, warm)
                    stop = self._loop(bar, self._fun, self._full_phase(), self.settings.max_iter)
                if self.store is not None:
                    self.save()  # a finished run's checkpoint holds its final state
            except (C.Stop, KeyboardInterrupt):
                return self._interrupted()
            except (ClusterError, DataError) as exc:
                # The cluster or the data failed mid-run: keep the iterations done.
                if self.store is None or self.state is None:
                    raise
                raise _with_checkpoint(exc, self.save, self.state.iteration) from None
        return self._outcome(stop)

    def _outcome(self, stop, interrupt=None):
        """The `Outcome` of the run, stopped for reason ``stop``."""
        best_iteration = None
        if self.validation is not None:
            progress = _validation_set.progress(self.history, self.settings.tol)
            best_iteration = progress.best_iteration
        return Outcome(self.state, stop, self.history, self.rho_hat, self.resumed_from,
                       interrupt=interrupt, best=self.best, best_iteration=best_iteration)

    def _warming_up(self):
        """True if the warm-up has yet to run (its sample's read measures the variance)."""
        return self.plan is not None and (self.state is None or self.state.phase == "warmup")

    def _measure_variance(self):
        """Ask for the denominator of the explained variance, the data's total
        variance: the first evaluation takes it from its own reads (no pass of
        its own); the ``cached`` strategy, whose first pass keeps activations,
        runs a streaming pass for it now. Returns the passes spent before the
        first evaluation (0 or 1)."""
        if self.data_variance is not None:
            return 0.0
        if self.evaluator.strategy != "cached":
            self.evaluator.measure_variance()
            return 0.0
        with self.evaluator.pass_progress("data variance"):
            self._keep_variance(_metrics.total_variance(self.evaluator))
        return 1.0

    def _keep_variance(self, value):
        self.data_variance = value
        if self.store is not None:
            self.store.keep(data_variance=value)

    def _full_phase(self):
        """The full phase's `_Phase`: its passes follow the warm-up's, if any."""
        before = max((r.get("data_passes", 0.0) for r in self.history
                      if r.get("phase") == "warmup"), default=self.passes_before)
        return _Phase("full", self.m, before, float(self.evaluator.passes))

    def _loop(self, bar, fun, phase, limit, check=None):
        """Optimizer iterations until a stopping rule, iteration ``limit`` or
        ``check(record)`` returning True; returns the stop reason."""
        s = self.settings
        stop = _stop_reason(self.state, limit)
        while not stop:
            self.flag.check()
            info, done = _optim.step(fun, self.state, s.optimizer, history=s.history_size,
                                     learning_rate=s.learning_rate, grad_tol=s.tol,
                                     blocks=self.blocks)
            asked = halt = False
            if info is not None:
                record = self._record(info, phase)
                halt = check is not None and check(record)
                if phase.name == "full":
                    self._validate_last()
                    done = done or bool(self.state.message)  # early stopping
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
                stop = STOPPED_BY_CALLBACK
            elif halt:
                stop = "the held-out cost stalled"
            else:
                stop = _stop_reason(self.state, limit)
        return stop

    def _validate_last(self):
        """The validation check of the last record if it is due and has not run (a
        fit interrupted between an iteration and its check runs it on resume), then
        the early-stopping rule: ``state.message`` says when it stops the fit."""
        record, s = self.history[-1], self.settings
        if self.validation is None or record.get("phase") != "full" \
                or record["iteration"] != self.state.iteration or "validation_cost" in record \
                or not self.validation.due(record["iteration"]):
            return
        record.update(self.validation.check(self.state.theta, self.n, s.n_hidden))
        if not s.early_stopping:
            return
        progress = _validation_set.progress(self.history, s.tol)
        if progress.best_iteration == record["iteration"]:
            self.best = (self.state.theta.copy(), np.array(self.rho_hat, np.float64))
        if not self.state.message:
            self.state.message = _validation_set.stop_message(progress, s.n_iter_no_change,
                                                              s.tol)

    def _call_back(self, record):
        """``callback(model, record)``, the model holding this iteration's weights."""
        self.model._set_weights(unflatten(self.state.theta, self.n, self.settings.n_hidden))
        return self.callback(self.model, record)

    def _record(self, info, phase=None):
        """Append the iteration's record to the history (fields: `streamae._metrics`)."""
        phase = phase or self._full_phase()
        if self.data_variance is None and self.evaluator.variance is not None:
            self._keep_variance(self.evaluator.variance)  # measured by the first evaluation
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
                info.terms["reconstruction"], self.m, self.data_variance),
            "evaluations": state.evaluations,
            "seconds": elapsed,
            "samples_per_s": state.evaluations * m / elapsed if elapsed > 0 else 0.0,
            "phase": phase.name,
            "data_passes": phase.passes(state.evaluations),
        }
        if phase.level is not None:
            record["level"], record["rows"] = phase.level, phase.rows
        self.history.append(record)
        return record

    # ------------------------------------------------------------ ends
    def save(self):
        """Write the checkpoint of the current state; returns its path."""
        best = None if self.best is None else {"best_theta": self.best[0],
                                                "best_rho_hat": self.best[1]}
        return self.store.save(self.state, self.rho_hat, self.history,
                               time.perf_counter() - self.t0, best)

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
        return self._outcome(stop, TrainingInterrupted(signum, path, self.state.iteration))


@dataclass
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
    level : int or None
        The warm-up's level (index into `streamae._warmup.Plan.levels`).
    checks : int
        Evaluations of the level's held-out rows so far (each costs as much
        as one of the level's).
    """

    name: str
    rows: int
    before: float
    per_evaluation: float
    level: int = None
    checks: int = 0

    def passes(self, evaluations):
        """Passes over the data after ``evaluations`` of the phase's own."""
        return self.before + (evaluations + self.checks) * self.per_evaluation


def _warmup_level(history):
    """The warm-up level of the last record of ``history`` (0 if it has none)."""
    return history[-1].get("level", 0) if history else 0


def _level_start(history, level):
    """The iteration at which warm-up level ``level`` started (its first record)."""
    return next(r["iteration"] for r in history
                if r.get("phase") == "warmup" and r.get("level", 0) == level)


def _passes_before(history, level, before_warmup):
    """Passes over the data before warm-up level ``level``'s first evaluation."""
    if level == 0:
        return before_warmup
    return max(r["data_passes"] for r in history
               if r.get("phase") == "warmup" and r.get("level", 0) == level - 1)


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
