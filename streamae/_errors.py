"""Exceptions: every one streamae raises to its users, in one place.

Each `StreamaeError` carries a one-line message naming the problem, where it
is, and the fix; the CLI prints the message and exits with status 2.
`TrainingInterrupted` is a `KeyboardInterrupt`, not a `StreamaeError`.
(`NotFittedError` is also scikit-learn's: it is made on first use, so that
commands that never need scikit-learn do not spend a second importing it.)
"""

import contextlib
import signal
from typing import TYPE_CHECKING

# The interface whose words messages use ("python" or "cli"): `fix` picks the
# wording, the command line switches it with `cli_wording` while a command runs.
_WORDING = ["python"]


@contextlib.contextmanager
def cli_wording():
    """Messages built inside the block name command-line fixes (`fix`)."""
    _WORDING.append("cli")
    try:
        yield
    finally:
        _WORDING.pop()


def fix(cli, python):
    """The fix ``cli`` (command-line words) or ``python`` (API words), whichever
    interface is in use (`cli_wording`)."""
    return cli if _WORDING[-1] == "cli" else python


def install_hint(extra):
    """How to install streamae's optional ``extra``, from PyPI and from a checkout."""
    return (f"install it with `pip install \"streamae[{extra}]\"` (from a checkout of the "
            f"source: `pip install \".[{extra}]\"`)")


def zarr_reason(exc):
    """Why Zarr could not open something, in words (never an exception class name)."""
    name, text = type(exc).__name__, str(exc).strip().splitlines()
    if name == "ContainsArrayError":
        return "a Zarr array is there, not a group"
    if name == "ContainsGroupError" or (text and "Got 'group'" in text[0]):
        return "a Zarr group is there, not an array"
    if name.endswith("NotFoundError") or isinstance(exc, (FileNotFoundError, KeyError)):
        return "no Zarr metadata there"
    return text[0] if text else "unreadable"


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


class OutputWriteError(StreamaeError, OSError):
    """Writing an output failed (disk full, permission denied...); whatever was
    at the path before is unchanged."""


class CheckpointError(StreamaeError):
    """A checkpoint cannot be read, does not match this run, or cannot be written."""


class CheckpointExistsError(CheckpointError, FileExistsError):
    """A fresh run would replace an existing checkpoint."""


class MissingDependencyError(StreamaeError, ImportError):
    """An optional package that a feature needs is not installed."""


class ClusterError(StreamaeError, RuntimeError):
    """The Dask cluster failed in a way a retry inside the run cannot fix."""


class LostInputError(ClusterError):
    """Every copy of data scattered from the client was lost with its workers.

    The engine submits the evaluation again (scattering anew) when it sees this.
    """


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM, after writing a checkpoint.

    Attributes
    ----------
    signum : int
        The signal (``signal.SIGINT`` or ``signal.SIGTERM``).
    checkpoint : str or None
        Where the checkpoint is, or None if nothing could be saved (no
        checkpoint path, or interrupted before the first evaluation finished).
    iteration : int or None
        The iteration the checkpoint holds.
    exit_status : int
        128 + signum: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, signum, checkpoint=None, iteration=None):
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.iteration = iteration
        self.exit_status = 128 + self.signum
        name = signal.Signals(self.signum).name
        if checkpoint is None:
            text = (f"interrupted by {name} before the first iteration finished; "
                    "nothing to resume: run the same command again")
        else:
            text = (f"interrupted by {name}: checkpoint of iteration {iteration} "
                    f"written to '{checkpoint}'")
        super().__init__(text)


_NOT_FITTED_DOC = """The model has no weights yet.

    Also a ``sklearn.exceptions.NotFittedError`` (and so an ``AttributeError``),
    which is what scikit-learn's tools expect from an unfitted estimator.
    """


def _not_fitted_error():
    """`NotFittedError`, made on first use (it derives from scikit-learn's)."""
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    cls = type("NotFittedError", (StreamaeError, SklearnNotFittedError),
               {"__doc__": _NOT_FITTED_DOC, "__module__": __name__})
    return cls  # pickled by name: streamae._errors.NotFittedError


def __getattr__(name):
    if name == "NotFittedError":
        globals()[name] = _not_fitted_error()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # what documentation tools and type checkers see
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    class NotFittedError(StreamaeError, SklearnNotFittedError):
        """The model has no weights yet.

        Also a ``sklearn.exceptions.NotFittedError`` (and so an ``AttributeError``),
        which is what scikit-learn's tools expect from an unfitted estimator.
        """
