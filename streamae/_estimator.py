"""The `SparseAutoencoder` estimator: a scikit-learn transformer trained full-batch.

``fit`` reads as its phases: validate the hyperparameters -> open the data ->
start the run (`streamae._fitloop.TrainingRun`, which owns the scheduler
session, the checkpoint and the signals) -> optimizer loop -> set the fitted
attributes. Save and load are `streamae._store`'s model format.
"""

import dataclasses
import importlib
import numbers
import os
import warnings

import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import _check_feature_names, check_array

from . import _checkpoint as C
from . import _metrics, _optim, _validation_set
from ._cluster import make_runner
from ._constants import CHECKPOINT_NAME, DTYPES, GRAD_TOL
from ._data import Dataset, open_dataset
from ._encode import encode, hidden_graph, hidden_rows
from ._engine import STRATEGIES, Evaluator
from ._errors import (
    CheckpointExistsError,
    DataError,
    MissingDependencyError,
    OutputExistsError,
    ParameterError,
    install_hint,
)
from ._fitloop import Settings, TrainingRun
from ._hints import check_before_training
from ._objective import PARAM_NAMES, flatten, init_params, make_hyper, unflatten
from ._options import as_run_options
from ._store import check_writable, read_model, write_model
from ._store import exists as _exists
from ._validation import (
    check_choice,
    check_float,
    check_int,
    check_width,
    require_fitted,
)
from ._warmup import DEFAULT_ITER as DEFAULT_WARMUP_ITER
from ._warmup import check_warmup
from ._whiten import whitening_of

_SEED_ALIAS = "deprecated"


class SparseAutoencoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Sparse autoencoder with a sigmoid hidden layer, trained full-batch.

    The cost is the UFLDL objective: mean squared reconstruction error (halved),
    weight decay on W1 and W2, and ``beta`` times the KL divergence between
    ``rho`` and each hidden unit's mean activation rho_hat over the *whole*
    dataset. The data (values in [0, 1], one sample per row) may be larger
    than memory: a Zarr array path or URL, a ``zarr.Array``, a Dask array, a
    NumPy array or a pandas DataFrame.

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
    strategy : {"one-pass", "two-pass", "cached"}, default "one-pass"
        How each evaluation passes over the data (docs/algorithm.md); all give
        the same objective.
    optimizer : {"lbfgs", "gd"}, default "lbfgs"
        Full-batch L-BFGS (as minFunc) or gradient descent.
    max_iter : int, default 400
        Iterations of one ``fit`` on the full data (each a line search of one
        or more evaluations); the warm-up's iterations on subsamples are not
        counted (``warmup_iter`` bounds them). Reaching it with the gradient
        still above ``tol`` warns with
        ``sklearn.exceptions.ConvergenceWarning``.
    tol : float, default 1e-5
        Gradient tolerance, >= 0: the fit has converged when max |gradient|
        is at most ``tol`` after an iteration (0: never on the gradient). With
        ``early_stopping``, also the least decrease of the best validation
        cost that counts as an improvement (as scikit-learn's MLP ``tol``).
    history_size : int, default 100
        L-BFGS corrections kept.
    learning_rate : float, default 1.0
        First step of gradient descent (later steps adapt).
    dtype : {"float32", "float64"}, default "float32"
        Arithmetic of the per-chunk kernels; sums always accumulate in float64
        and the optimizer works in float64.
    random_state : int, default 0
        Seed of the weight initialisation (an integer >= 0, so that a
        checkpoint can record it and a resumed run can check it).
    decoder : {"sigmoid", "linear"}, default "sigmoid"
        Output layer. "sigmoid": a3 = f(z3), data must be in [0, 1].
        "linear": a3 = z3 (the tutorial's linear decoder), data may be any
        finite real, e.g. whitened (`streamae.whiten`). The hidden layer, and
        so `transform`, is the same for both.
    warmup : {"auto", "subsample", "none"}, default "auto"
        A cheaper start (docs/algorithm.md, "A cheaper start"): one pass reads
        a seeded sample of the rows (every 2nd row or sparser, at most 256 MiB)
        into memory; L-BFGS then runs on growing levels of its even rows (each
        4 times the rows of the one before), carrying weights and L-BFGS
        corrections up, each level ending when its cost on held-out odd rows
        stalls; the exact full-data fit starts from there and still ends on
        the exact objective over every row. "auto" warms up on data of 65,536
        rows or more when a level of at least 2,048 rows and 8 rows per
        hidden unit exists; "subsample" whenever a level exists; "none" never
        (the plain full-batch fit). The warm-up's records in ``history_`` have
        ``phase`` "warmup" and their ``level``.
    warmup_iter : int, default 200
        The warm-up's own budget: iterations of its smallest level, at most;
        each level above gets half as many. Independent of ``max_iter``; 0
        turns the warm-up off.
    validation_every : int, default 1
        With ``fit(X, validation=V)``: evaluate the objective on V every this
        many full-data iterations (iteration 0, k, 2k, ...; the warm-up's
        iterations are not checked). Each check is one pass over V.
    early_stopping : bool, default False
        Stop when the validation cost has not improved by at least ``tol``
        for ``n_iter_no_change`` consecutive checks; the model then holds the
        weights of the check with the lowest validation cost
        (``best_validation_iteration_``), whatever ended the fit. Needs
        ``fit(X, validation=V)``.
    n_iter_no_change : int, default 10
        Checks without an improvement that stop the fit with
        ``early_stopping`` (checks, not iterations, when
        ``validation_every`` > 1).
    warm_start : bool, default False
        A new ``fit`` starts from the current weights (fresh L-BFGS memory)
        instead of a new initialisation; ``max_iter`` counts that fit's
        iterations.
    verbose : bool, default False
        Progress bars on stderr (and the cluster's dashboard link). Off by
        default because an estimator inside a Pipeline or a GridSearchCV fits
        many times and should stay quiet, as scikit-learn's do; the
        ``streamae train`` command turns it on unless ``--quiet``.
    clip : bool, default False
        Clip input values into [0, 1] as they are read, in every method (NaN
        and Inf are still refused). Off by default: values outside [0, 1]
        usually mean unscaled data, and are refused with the rows named
        (rescale with ``streamae import --scale minmax``).
    run_options : RunOptions or dict, optional
        Where and how the work runs (scheduler, workers, chunk_rows,
        block_rows, split_every, cache_limit, storage_options), for every
        method; see `streamae.RunOptions`. Results never depend on the
        scheduler or the workers. Give a live ``distributed.Client`` inside
        a `RunOptions` (which ``clone`` keeps as is), not in a dict (which
        ``clone`` deep-copies).
    seed : int, optional
        Deprecated alias of ``random_state`` (FutureWarning); will be removed.

    Attributes
    ----------
    W1_ : ndarray of shape (n_hidden, n_features_in_)
    b1_ : ndarray of shape (n_hidden,)
    W2_ : ndarray of shape (n_features_in_, n_hidden)
    b2_ : ndarray of shape (n_features_in_,)
    n_features_in_ : int
        Columns of the training data (n_visible).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when fitted on a DataFrame with string column names.
    rho_hat_ : ndarray of shape (n_hidden,)
        Mean hidden activation over the training data at the final weights.
    history_ : list of dict
        One record per iteration (0 is the starting point): iteration, cost,
        its terms, grad_norm, step, rho_hat_min/mean/max, dead and saturated
        units, explained_variance, evaluations, seconds, samples_per_s, phase
        ("warmup" on a level of the sample, whose cost is the level's, or
        "full"), data_passes (passes over the whole data so far, counting the
        first pass that measures the data or reads the sample, and a warm-up
        evaluation as its share of the rows); warm-up records also have
        ``level`` (0 the smallest) and ``rows``
        (`streamae._metrics`); with a validation set, the records of checks
        also have ``validation_cost`` and ``validation_reconstruction``.
    n_iter_ : int
        Iterations done (counted from the checkpoint's start when resumed).
    stop_reason_ : str
    converged_ : bool
        True if an optimizer tolerance or early stopping stopped the fit (not
        ``max_iter``, a callback, an interrupt or a failed line search).
    best_validation_iteration_ : int or None
        With a validation set: the iteration of the check with the lowest
        validation cost (its weights are the model's with
        ``early_stopping``); else None.
    evaluations_ : int
        Evaluations of the objective (passes over the data) in the whole fit.
    guard_events_ : list of dict
        Trial points the numerical guard rejected (iteration, step, hidden
        units, message); see docs/reliability.md.
    resumed_from_ : int or None
        The checkpoint's iteration when the fit was resumed, else None.
    whitening_ : dict or None
        The whitening of the training data when it is a store written by
        `streamae.whiten` (mean, matrix M, kind, epsilon): `streamae encode`
        applies it to new raw data, `streamae show` draws W1 M.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> pipe = make_pipeline(SparseAutoencoder(n_hidden=50, max_iter=100),
    ...                      LogisticRegression())  # doctest: +SKIP
    >>> pipe.fit(X, y).score(X_test, y_test)  # doctest: +SKIP
    """

    def __init__(self, n_hidden=25, *, rho=0.01, beta=3.0, weight_decay=1e-4,
                 strategy="one-pass", optimizer="lbfgs", max_iter=400, history_size=100,
                 learning_rate=1.0, dtype="float32", random_state=0, warm_start=False,
                 verbose=False, clip=False, run_options=None, warmup="auto",
                 decoder="sigmoid", warmup_iter=DEFAULT_WARMUP_ITER, tol=GRAD_TOL,
                 validation_every=1, early_stopping=False, n_iter_no_change=10,
                 seed=_SEED_ALIAS):
        self.n_hidden = n_hidden
        self.rho = rho
        self.beta = beta
        self.weight_decay = weight_decay
        self.strategy = strategy
        self.optimizer = optimizer
        self.max_iter = max_iter
        self.history_size = history_size
        self.learning_rate = learning_rate
        self.dtype = dtype
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.clip = clip
        self.run_options = run_options
        self.warmup = warmup
        self.decoder = decoder
        self.warmup_iter = warmup_iter
        self.tol = tol
        self.validation_every = validation_every
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Values must be in [0, 1] (for the sigmoid decoder) unless clipped into it.
        tags.input_tags.positive_only = not self.clip and self.decoder != "linear"
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = []  # output dtype is the model's ``dtype``
        tags.non_deterministic = False
        return tags

    def set_output(self, *, transform=None):
        """Set the container `transform` returns, as scikit-learn's ``set_output``.

        ``transform="pandas"`` (or ``"polars"``) needs that package: checked
        here, so that a missing one is named now and not at the first
        ``transform``.

        Raises
        ------
        MissingDependencyError
            The package is not installed (the message says how to install it).
        """
        if transform in ("pandas", "polars"):
            try:
                importlib.import_module(transform)
            except ImportError:
                how = install_hint("pandas") if transform == "pandas" else \
                    "install it with `pip install polars`"
                raise MissingDependencyError(
                    f"set_output(transform={transform!r}) needs the '{transform}' package, "
                    f"which is not installed; {how}") from None
        return super().set_output(transform=transform)

    # ------------------------------------------------------------ validation
    @property
    def hyper(self):
        """The validated objective hyperparameters (rho, beta, weight_decay)."""
        return make_hyper(self.rho, self.beta, self.weight_decay, self.decoder)

    def _settings(self):
        """All hyperparameters, validated; one-line `ParameterError` naming a bad one."""
        n_hidden = check_int("n_hidden", self.n_hidden, 1)
        if str(self.dtype) not in DTYPES:
            raise ParameterError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        hyper = self.hyper
        seed = self.random_state
        if not (isinstance(self.seed, str) and self.seed == _SEED_ALIAS):
            warnings.warn("SparseAutoencoder(seed=...) is deprecated and will be removed; use "
                          "random_state=...", FutureWarning, stacklevel=3)
            seed = self.seed
        name = "random_state" if seed is self.random_state else "seed"
        check_choice("optimizer", self.optimizer, _optim.OPTIMIZERS)
        check_choice("strategy", self.strategy, STRATEGIES)
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise ParameterError(f"early_stopping must be True or False, got "
                                 f"{self.early_stopping!r}")
        return Settings(
            n_hidden=n_hidden, hyper=hyper, dtype=str(self.dtype), seed=check_int(name, seed, 0),
            strategy=self.strategy, optimizer=self.optimizer,
            max_iter=check_int("max_iter", self.max_iter, 0),
            history_size=check_int("history_size", self.history_size, 1),
            learning_rate=check_float("learning_rate", self.learning_rate, 0, low_open=True),
            warmup=check_warmup(self.warmup),
            warmup_iter=check_int("warmup_iter", self.warmup_iter, 0),
            tol=check_float("tol", self.tol, 0, hint="e.g. 1e-5"),
            validation_every=check_int("validation_every", self.validation_every, 1),
            early_stopping=bool(self.early_stopping),
            n_iter_no_change=check_int("n_iter_no_change", self.n_iter_no_change, 1))

    # ------------------------------------------------------------ fitted state
    @property
    def params_(self):
        """Weights as a dict W1, b1, W2, b2 (float64 ndarrays)."""
        require_fitted(self)
        return {k: getattr(self, k + "_") for k in PARAM_NAMES}

    @property
    def n_visible_(self):
        """Input width n (same as ``n_features_in_``)."""
        require_fitted(self)
        return self.W1_.shape[1]

    @property
    def _n_features_out(self):
        """Output width for ``get_feature_names_out`` (names sparseautoencoder0, ...)."""
        return self.W1_.shape[0]

    def _set_weights(self, params):
        for k in PARAM_NAMES:
            setattr(self, k + "_", np.asarray(params[k], np.float64))
        self.n_features_in_ = self.W1_.shape[1]

    def _dataset(self, X, options, *, reset):
        """``X`` opened as a row-chunked `Dataset`; checks or sets the input width.

        Returns
        -------
        data : the input as given (a DataFrame as an ndarray)
        dataset : Dataset
        """
        if not reset:
            require_fitted(self)
        data = _as_data(self, X, reset=reset)
        dataset = self._open(data, options)
        if not reset:
            check_width(dataset, self.W1_.shape[1])
        return data, dataset

    def _validation_data(self, V, options, n):
        """The validation data of ``fit`` opened and checked as the training data is
        (after it): (data, `Dataset`); refused unless it has the training data's ``n``
        columns."""
        data = _as_data(self, V, reset=False)
        dataset = self._open(data, options)
        if dataset.shape[1] != n:
            raise DataError(
                f"the validation data has {dataset.shape[1]} features, but X has {n} "
                f"(validation is {dataset.source}); give held-out rows of the same columns")
        try:
            check_before_training(data, dataset, self.hyper.decoder, self.clip,
                                  options.storage_options)
        except DataError as exc:
            raise DataError(f"validation data: {exc}") from None
        return data, dataset

    def _open(self, data, options):
        """``data`` (as `_as_data` returns it) as a `Dataset`, clipped with ``clip``."""
        dataset = open_dataset(data, chunk_rows=options.chunk_rows,
                               storage_options=options.storage_options,
                               page_cache=options.page_cache)
        if self.clip:
            array = dataset.array.map_blocks(_clip_unit, dtype=dataset.array.dtype)
            dataset = Dataset(array, dataset.source, dataset.unit_rows)
        return dataset

    # ------------------------------------------------------------ fit
    def fit(self, X, y=None, *, validation=None, checkpoint=None, checkpoint_every=0,
            resume=False, overwrite=False, callback=None):
        """Train on the whole dataset with full-batch updates.

        A `ConvergenceWarning` says when ``max_iter`` stopped the fit with
        max |gradient| above ``tol``.

        Parameters
        ----------
        X : path, URL, zarr.Array, dask.array.Array, ndarray or DataFrame of shape (m, n)
            Values in [0, 1], one sample per row; never loaded whole.
        y : None
            Ignored (for Pipeline compatibility).
        validation : array-like of shape (m_v, n), optional
            Held-out rows, of any type X may be, never trained on: every
            ``validation_every`` full-data iterations their objective (with
            their own rho_hat) is recorded in ``history_``
            (``validation_cost``, ``validation_reconstruction``); needed by
            ``early_stopping``. The training is the same with or without it.
        checkpoint : str or os.PathLike, optional
            File holding everything needed to continue this fit exactly
            (docs/reliability.md), written when the fit ends, every
            ``checkpoint_every`` iterations, and on SIGINT or SIGTERM (fit in
            the main thread), which stop the fit after the evaluation in
            progress with the last finished iteration's weights.
        checkpoint_every : int, default 0
            Also write the checkpoint every this many iterations.
        resume : bool, default False
            Continue from ``checkpoint`` if it exists (else start afresh),
            bit-identically to an uninterrupted fit. The data, hyperparameters
            and run settings must match (`CheckpointError` says what differs);
            ``max_iter`` may grow: a finished run then goes on from its last
            iteration (with the same ``max_iter`` it returns at once).
        overwrite : bool, default False
            Start afresh even though ``checkpoint`` exists (replaced at the
            first write); without it (or ``resume``) an existing one is refused.
        callback : callable, optional
            ``callback(model, record)`` after each iteration (``record`` as in
            ``history_``, the model holding that iteration's weights); return
            True to stop.

        Returns
        -------
        self : SparseAutoencoder

        Raises
        ------
        TrainingInterrupted
            On SIGINT or SIGTERM with a checkpoint (``exit_status`` 130 or 143).
        NumericalError
            If the objective is not finite at the initial weights (later
            non-finite trial points are rejected: ``guard_events_``).
        """
        settings = self._settings()
        saving = _checked_saving(settings, validation, checkpoint, checkpoint_every, resume,
                                 overwrite)
        run, theta0 = self._training_run(settings, X, validation, callback, saving)
        self._end_fit(run.execute(theta0), run, settings, checkpoint)
        return self

    def _end_fit(self, outcome, run, settings, checkpoint):
        """Keep the weights and history of ``outcome``, then raise its interrupt, or
        warn if ``max_iter`` stopped it short of ``tol``."""
        self._set_fitted(outcome, run.settings, run.n)
        if outcome.interrupt is not None:
            raise outcome.interrupt
        if outcome.reached_max_iter:
            self._warn_not_converged(outcome, settings, checkpoint)

    def _training_run(self, settings, X, validation, callback, saving):
        """The `TrainingRun` of a fit on ``X`` and its starting weights (flat).

        Opens and checks the data (and the validation rows), keeps a
        whitened store's transform in ``whitening_`` and draws the initial
        weights. ``saving``: None, or (path, every, resume, overwrite) of
        `fit`'s checkpoint, which the run then writes (or resumes from).
        """
        options = as_run_options(self.run_options)
        data, dataset = self._dataset(X, options, reset=True)
        check_before_training(data, dataset, settings.hyper.decoder, self.clip,
                              options.storage_options)
        held = None if validation is None else \
            self._validation_data(validation, options, dataset.shape[1])
        # A store written by `streamae whiten`: keep its transform, for encode and show.
        self.whitening_ = whitening_of(data, options.storage_options)
        theta0, rng = self._initial_theta(settings, dataset)
        if self.warm_start and getattr(self, "W1_", None) is not None:
            settings = dataclasses.replace(settings, warmup="none")  # already trained weights
        run = TrainingRun(self, settings, dataset, options, self.verbose, callback)
        if held is not None:
            run.use_validation(held[1])
        if saving is not None:
            path, every, resume, overwrite = saving
            identity = _run_identity(settings, (data, dataset), held, options)
            extra = {"random_state": {"seed": settings.seed,
                                      "after_init": rng.bit_generator.state}}
            run.use_checkpoint(path, every, identity, extra, resume, overwrite)
        return run, theta0

    def _initial_theta(self, settings, dataset):
        """Starting weights (flat) and the generator after initialisation.

        The random initialisation is always drawn (so the generator's state is
        the same either way); with ``warm_start`` and weights of the right
        width, those weights are the start instead.
        """
        n = dataset.shape[1]
        rng = np.random.default_rng(settings.seed)
        params = init_params(n, settings.n_hidden, rng)
        if self.warm_start and getattr(self, "W1_", None) is not None:
            check_width(dataset, self.W1_.shape[1])
            if self.W1_.shape[0] != settings.n_hidden:
                raise ParameterError(
                    f"warm_start: the current weights have {self.W1_.shape[0]} hidden units, "
                    f"but n_hidden is {settings.n_hidden}; set n_hidden back, or "
                    "warm_start=False to start afresh")
            params = self.params_
        return flatten(params), rng

    def _set_fitted(self, outcome, settings, n):
        """The fitted attributes from a run's `Outcome`: with early stopping (and no
        interrupt, whose checkpoint holds the last weights), the best check's weights."""
        state = outcome.state
        theta, rho_hat = state.theta, outcome.rho_hat
        if outcome.best is not None and outcome.interrupt is None:
            theta, rho_hat = outcome.best
        self._set_weights(unflatten(theta, n, settings.n_hidden, np.float64))
        self.history_ = outcome.history
        self.rho_hat_ = rho_hat
        self.best_validation_iteration_ = outcome.best_iteration
        self.resumed_from_ = outcome.resumed_from
        self.n_iter_ = state.iteration
        self.stop_reason_ = outcome.stop
        self.converged_ = outcome.converged
        self.evaluations_ = state.evaluations
        self.strategy_ = settings.strategy
        self.guard_events_ = list(state.rejections)

    def _warn_not_converged(self, outcome, settings, checkpoint=None):
        worst = float(np.abs(outcome.state.grad).max())
        if worst > settings.tol:
            # Resuming is advice only when this fit wrote a checkpoint.
            resume = (f" (or resume the checkpoint '{os.fspath(checkpoint)}' with a larger "
                      "max_iter)" if checkpoint is not None else "")
            warnings.warn(ConvergenceWarning(
                f"SparseAutoencoder reached max_iter={settings.max_iter} with max |gradient| "
                f"{worst:.3g} above tol={settings.tol:g}; raise max_iter{resume} for a "
                "converged fit"), stacklevel=3)

    # ------------------------------------------------------------ evaluation
    def cost_and_grad(self, X):
        """Cost and gradient over the whole dataset at the current weights.

        Uses ``strategy`` and ``run_options``.

        Parameters
        ----------
        X : path, URL, zarr.Array, dask.array.Array, ndarray or DataFrame of shape (m, n)

        Returns
        -------
        cost : float
        grad : dict of float64 ndarrays W1 (s, n), b1 (s,), W2 (n, s), b2 (n,)
        """
        return self._evaluate(X)[:2]

    def _evaluate(self, X):
        """(cost, grad, Evaluation) at the current weights, one evaluation."""
        require_fitted(self)
        check_choice("strategy", self.strategy, STRATEGIES)
        if str(self.dtype) not in DTYPES:
            raise ParameterError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        options = as_run_options(self.run_options)
        _, dataset = self._dataset(X, options, reset=False)
        runner = make_runner(options.scheduler, options.workers)
        evaluator = Evaluator.with_options(dataset, self.hyper, options, dtype=str(self.dtype),
                                           strategy=self.strategy, scheduler=runner)
        with runner.session():
            result = evaluator(self.params_)
        return result.cost, result.grad, result

    def score(self, X, y=None):
        """Minus the mean reconstruction error per sample (higher is better).

        score = -(1/m) sum_i 1/2 ||a3_i - x_i||^2, the reconstruction term of
        the cost with its sign flipped (no weight decay or sparsity term), so
        that ``GridSearchCV`` prefers models that reconstruct better. One
        streaming pass over ``X``.

        Parameters
        ----------
        X : path, URL, zarr.Array, dask.array.Array, ndarray or DataFrame of shape (m, n)
        y : None
            Ignored.

        Returns
        -------
        float
        """
        return -float(self._evaluate(X)[2].terms["reconstruction"])

    # ------------------------------------------------------------ transform
    def transform(self, X, *, out=None, overwrite=False):
        """Hidden activations a2 = sigmoid(X W1^T + b1) for every row.

        Parameters
        ----------
        X : path, URL, zarr.Array, dask.array.Array, ndarray or DataFrame of shape (m, n)
        out : str or os.PathLike, optional
            Write the activations to a new Zarr array there instead of
            returning them: chunked like the data, a few chunks in memory at
            a time (as `streamae.encode`).
        overwrite : bool, default False
            With ``out``: replace an existing array.

        Returns
        -------
        ndarray of shape (m, n_hidden), dtype ``dtype``
            For a Dask array ``X``, a lazy Dask array chunked like ``X`` (or
            by ``run_options.chunk_rows``), nothing computed; with ``out``,
            the written ``zarr.Array`` open for reading.
        """
        options = as_run_options(self.run_options)
        if out is not None:
            return encode(self, X, out, overwrite=overwrite, run_options=options)
        if isinstance(X, da.Array):
            return self.transform_dask(X)
        _, dataset = self._dataset(X, options, reset=False)
        runner = make_runner(options.scheduler, options.workers)
        with runner.session():
            return hidden_rows(dataset, runner, self.W1_, self.b1_, self.dtype, options,
                               self.decoder)

    def transform_dask(self, X):
        """Lazy hidden activations: a Dask array of shape (m, n_hidden), chunked like ``X``.

        Parameters
        ----------
        X : path, URL, zarr.Array, dask.array.Array, ndarray or DataFrame of shape (m, n)

        Returns
        -------
        dask.array.Array of shape (m, n_hidden)
        """
        options = as_run_options(self.run_options)
        _, dataset = self._dataset(X, options, reset=False)
        return hidden_graph(dataset, self.W1_, self.b1_, self.dtype, options.block_rows,
                            self.decoder)

    def inverse_transform(self, X):
        """Reconstruction a3 = sigmoid(H W2^T + b2) (linear decoder: H W2^T + b2) from
        hidden activations H.

        Parameters
        ----------
        X : ndarray or dask.array.Array of shape (m, n_hidden)
            Hidden activations, as `transform` returns them.

        Returns
        -------
        ndarray of shape (m, n_features_in_), float64
            A lazy Dask array for Dask input.
        """
        require_fitted(self)
        H = X if isinstance(X, da.Array) else np.asarray(X, np.float64)
        if H.ndim != 2 or H.shape[1] != self.W1_.shape[0]:
            raise ParameterError(
                f"inverse_transform needs hidden activations of shape (m, {self.W1_.shape[0]}), "
                f"got shape {tuple(H.shape)}; pass what transform() returned")
        if isinstance(H, da.Array):
            return H.map_blocks(_reconstruct, self.W2_, self.b2_, self.decoder, dtype=np.float64,
                                chunks=(H.chunks[0], (self.W2_.shape[0],)))
        return _reconstruct(H, self.W2_, self.b2_, self.decoder)

    # ------------------------------------------------------------ weights in and out
    @classmethod
    def from_weights(cls, W1, b1, W2, b2, **params):
        """A fitted model with given weights.

        Parameters
        ----------
        W1 : array-like of shape (n_hidden, n_visible)
        b1 : array-like of shape (n_hidden,)
        W2 : array-like of shape (n_visible, n_hidden)
        b2 : array-like of shape (n_visible,)
        **params
            Constructor parameters (``rho``, ``beta``, ``dtype``, ...);
            ``n_hidden`` is W1's first dimension.

        Returns
        -------
        SparseAutoencoder
        """
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
        model = cls(n_hidden=s, **params)
        model._settings()  # the same checks as fit
        model._set_weights({"W1": W1, "b1": b1, "W2": W2, "b2": b2})
        model.history_ = []  # no training history
        return model

    def save(self, path, overwrite=False, storage_options=None):
        """Write the model as a Zarr group: weights as arrays, the rest as attributes.

        ``history_`` is also written as JSON lines beside the model, one record
        per line: ``model.zarr`` -> ``model.metrics.jsonl`` (see `streamae._metrics`).
        """
        require_fitted(self)
        attrs = _model_attrs(self)
        write_model(path, self.params_, attrs, overwrite=overwrite,
                    storage_options=storage_options, keep=_own_checkpoint(path, self.params_))
        _metrics.write_metrics(_metrics.metrics_path(path), getattr(self, "history_", []),
                               storage_options)
        return path

    @classmethod
    def load(cls, path, storage_options=None):
        """Read a model written by `save` (by this version or streamae 0.1)."""
        params, attrs = read_model(path, storage_options=storage_options)
        saved = attrs.get("params", {})
        known = set(cls().get_params()) - {"seed", "run_options", "n_hidden"}
        hyper = {k: v for k, v in saved.items() if k in known}
        hyper.update(rho=attrs["rho"], beta=attrs["beta"], weight_decay=attrs["weight_decay"],
                     dtype=attrs["dtype"], random_state=attrs.get("seed", 0))
        model = cls.from_weights(**params, **hyper)
        model.history_ = list(attrs.get("history", []))
        if attrs.get("rho_hat"):
            model.rho_hat_ = np.asarray(attrs["rho_hat"], np.float64)
        model.n_iter_ = attrs.get("n_iter", 0)
        model.stop_reason_ = attrs.get("stop_reason", "")
        for name in ("evaluations", "strategy", "guard_events", "converged",
                     "best_validation_iteration"):  # from a fit
            if name in attrs:
                setattr(model, name + "_", attrs[name])
        model.whitening_ = attrs.get("whitening")
        if attrs.get("feature_names_in") is not None:
            model.feature_names_in_ = np.asarray(attrs["feature_names_in"], dtype=object)
        return model


def _model_attrs(model):
    """The attributes `save` writes: those of streamae 0.1, then ``params``."""
    seed = model.random_state if isinstance(model.random_state, numbers.Integral) else 0
    attrs = {
        "n_hidden": int(model.W1_.shape[0]), "n_visible": model.n_visible_,
        "rho": float(model.rho), "beta": float(model.beta),
        "weight_decay": float(model.weight_decay), "dtype": str(model.dtype),
        "seed": int(seed),
        "rho_hat": np.asarray(getattr(model, "rho_hat_", []), float).tolist(),
        "n_iter": getattr(model, "n_iter_", 0),
        "stop_reason": getattr(model, "stop_reason_", ""),
        "history": getattr(model, "history_", []),
    }
    for name in ("evaluations_", "strategy_", "guard_events_", "converged_",
                 "best_validation_iteration_"):  # set by fit
        if hasattr(model, name):
            attrs[name.rstrip("_")] = getattr(model, name)
    if getattr(model, "whitening_", None) is not None:
        attrs["whitening"] = model.whitening_
    if hasattr(model, "feature_names_in_"):
        attrs["feature_names_in"] = [str(v) for v in model.feature_names_in_]
    # The hyperparameters; not how this process ran the fit (run options,
    # progress bars, warm start).
    attrs["params"] = {k: v for k, v in model.get_params().items()
                       if k not in ("run_options", "seed", "verbose", "warm_start")
                       and isinstance(v, (bool, int, float, str))}
    return attrs


def _checked_saving(settings, validation, checkpoint, every, resume, overwrite):
    """`fit`'s checkpoint settings as (path, every, resume, overwrite), or None
    without a checkpoint; a one-line `ParameterError` for a combination that
    cannot work."""
    C.require_path(checkpoint, every, resume)
    if settings.early_stopping and validation is None:
        raise ParameterError(
            "`early_stopping=True` needs a validation set: give held-out rows (never "
            "trained on, with the data's columns) as `validation=DATA`")
    return None if checkpoint is None else (checkpoint, every, resume, overwrite)


def _run_identity(settings, training, held, options):
    """The checkpoint identity of a fit (`streamae._checkpoint.identity`).

    ``training`` and ``held``: (data, `Dataset`) of the training and of the
    validation data (None without): a run with validation also records V's
    fingerprint and the checks' settings, which change its history and stop.
    """
    dataset = training[1]
    identity = C.identity(settings.model_identity(dataset.shape[1]),
                          C.data_fingerprint(*training, options.storage_options),
                          settings.run_identity(dataset, options))
    if held is not None:
        identity["run"].update(_validation_set.identity(
            C.data_fingerprint(*held, options.storage_options), settings.validation_every,
            settings.early_stopping, settings.n_iter_no_change, settings.tol))
    return identity


def _as_data(model, X, *, reset):
    """``X`` as `open_dataset` takes it; records or checks DataFrame column names.

    Paths, Zarr and Dask arrays pass through untouched (they are never
    loaded); a DataFrame becomes an ndarray after scikit-learn's feature-name
    check (fit records ``feature_names_in_``, other methods compare with it).
    """
    if isinstance(X, (str, os.PathLike, zarr.Array, da.Array)):
        if reset and hasattr(model, "feature_names_in_"):
            del model.feature_names_in_
        return X
    _check_feature_names(model, X, reset=reset)
    if sp.issparse(X):
        raise DataError("sparse input is not supported: the kernels read dense rows; pass "
                        "X.toarray() if it fits in memory, or write it to a Zarr array")
    if isinstance(X, np.ndarray) and X.dtype.kind != "O":
        # Shape, dtype (complex too) and values: open_dataset and the passes name
        # what is wrong.
        return X
    # Lists and object arrays become numbers.
    try:
        return check_array(X, dtype="numeric", ensure_all_finite=False, ensure_2d=False,
                           allow_nd=True, ensure_min_samples=0, ensure_min_features=0)
    except ValueError as exc:
        reason = str(exc).strip().splitlines()[0].rstrip(".")
        raise DataError(f"X cannot be used as an array of numbers ({reason}); give a 2-D array "
                        "of floats in [0, 1], one sample per row") from None


def _clip_unit(block):
    """``block`` with its finite values clipped into [0, 1]; NaN and Inf stay (and are
    refused by the passes over the data)."""
    return np.where(np.isfinite(block), np.clip(block, 0, 1), block)


def _reconstruct(H, W2, b2, decoder="sigmoid"):
    """sigmoid(H W2^T + b2), or H W2^T + b2 for the linear decoder, in float64."""
    z = np.asarray(H, np.float64) @ W2.T + b2
    return z if decoder == "linear" else 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------- a run writing a model folder

@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a fit that writes the model ``out`` (``streamae train``) found there.

    Attributes
    ----------
    checkpoint : str
        The run's checkpoint (`streamae._checkpoint.locate`).
    done : bool
        The checkpoint's run has finished for this ``max_iter`` and ``out``
        holds its model: nothing to train.
    replace : bool
        The new model may replace ``out`` (absent, or holding only this run's
        checkpoint, or this run's earlier result, or ``overwrite``).
    notes : tuple of str
        What the user should know before the run starts.
    """

    checkpoint: str
    done: bool
    replace: bool
    notes: tuple


def plan_run(out, checkpoint=None, *, resume=False, overwrite=False, max_iter=400,
             storage_options=None):
    """Decide, before any work, what a fit that writes the model ``out`` does.

    The rules (docs/reliability.md): ``out`` may be replaced when it holds
    nothing but this run's checkpoint, or, with ``resume``, the model this
    run's checkpoint finished with; anything else only with ``overwrite``.

    Returns
    -------
    RunPlan

    Raises
    ------
    OutputExistsError, CheckpointExistsError
        ``out`` or the checkpoint holds something this run may not replace.
    """
    path, note = C.locate(out, checkpoint, resume)
    notes = [note] if note else []
    kind = _out_kind(os.fspath(out), path, storage_options)
    has_checkpoint = os.path.lexists(path)
    if not overwrite:
        _refuse(out, path, kind, has_checkpoint, resume)
    if resume and not has_checkpoint:
        notes.append(f"no checkpoint at '{path}'; starting from the beginning")
    done = (resume and not overwrite and kind == "result"
            and C.finished(C.read(path).state, max_iter))
    # Absent now: what the run finds there at its end is its own checkpoint's folder.
    replace = overwrite or kind in ("absent", "run folder", "result")
    check_writable(out, replace, storage_options=storage_options, what="model")
    return RunPlan(path, done, replace, tuple(notes))


def _refuse(out, path, kind, has_checkpoint, resume):
    """Raise the error of a run (without ``overwrite``) that may not write ``out``."""
    if kind == "other":
        why = (f" and does not hold the weights of the checkpoint '{path}'"
               if resume and has_checkpoint else "")
        raise OutputExistsError(f"model '{out}' already exists{why}; choose another path or "
                                "pass `overwrite=True` to replace it")
    if resume or not has_checkpoint:
        return
    if kind == "result":
        raise OutputExistsError(
            f"model '{out}' already exists (a finished run: extend it with `resume=True` and "
            "a larger `max_iter`, or start over with `overwrite=True`)")
    raise CheckpointExistsError(
        f"checkpoint '{path}' already exists (its run has not written its model); continue "
        "that run with `resume=True`, or start over with `overwrite=True`")


def _out_kind(out, checkpoint, storage_options=None):
    """What ``out`` holds: "absent"; "run folder" (a local folder holding nothing but
    its checkpoint and temporaries); "result" (a model with exactly the weights of
    ``checkpoint``); or "other"."""
    local = "://" not in out
    if local and not os.path.lexists(out):
        return "absent"
    if local and os.path.isdir(out) and all(
            name == CHECKPOINT_NAME or (name.startswith(".") and ".tmp-" in name)
            for name in os.listdir(out)):
        return "run folder"
    if not local and not _exists(out, storage_options):
        return "absent"
    try:
        theta = flatten(read_model(out, storage_options=storage_options)[0])
    except DataError:
        return "other"
    return "result" if C.holds(checkpoint, theta) else "other"


def _own_checkpoint(path, params):
    """``(CHECKPOINT_NAME,)`` if the local model folder ``path`` holds the checkpoint
    of the run that ended with ``params`` (kept when the model is written), else ()."""
    path = os.fspath(path)
    if "://" in path or not C.holds(os.path.join(path, CHECKPOINT_NAME), flatten(params)):
        return ()
    return (CHECKPOINT_NAME,)
