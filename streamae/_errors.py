"""Exceptions: each carries a one-line message naming the problem, where it
is, and the fix. The CLI prints the message and exits with status 2."""

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class StreamaeError(ValueError):
    """Base class of streamae's user-facing errors."""


class DataError(StreamaeError):
    """The data cannot be used: missing, wrong shape or dtype, bad values."""


class ParameterError(StreamaeError):
    """A hyperparameter or option is out of range."""


class NumericalError(StreamaeError, ArithmeticError):
    """The objective is not finite at the current parameters."""


class OutputExistsError(StreamaeError, FileExistsError):
    """An output exists and ``overwrite`` was not asked for."""


class MemoryBudgetError(StreamaeError, MemoryError):
    """A strategy would hold more in memory than it is allowed to."""


class NotFittedError(StreamaeError, _SklearnNotFittedError):
    """The model has no weights yet.

    Also a ``sklearn.exceptions.NotFittedError`` (and so an ``AttributeError``),
    which is what scikit-learn's tools expect from an unfitted estimator.
    """
