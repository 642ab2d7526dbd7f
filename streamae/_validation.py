"""Checks of user options, shared by the estimator, the engine and the writers.

Each check raises `ParameterError` (or the class given) with one line naming
the option, the rule and the value received.
"""

import math
import numbers

from ._errors import DataError, ParameterError


def check_int(name, value, low=None, *, allow_none=False, error=ParameterError):
    """``value`` as an ``int`` if it is an integer (not a bool) >= ``low``.

    Parameters
    ----------
    name : str
        The option as the user spells it (``"max_iter"``, ``"--chunk-rows"``).
    value : object
    low : int, optional
        Smallest allowed value.
    allow_none : bool
        Return None for None instead of refusing it.
    error : type
        Exception class raised (default `ParameterError`).

    Returns
    -------
    int or None
    """
    if value is None and allow_none:
        return None
    rule = "an integer" if low is None else f"an integer >= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or (low is not None and value < low):
        raise error(f"{name} must be {rule}, got {value!r}")
    return int(value)


def check_float(name, value, low=None, high=None, *, low_open=False, high_open=False,
                hint="", error=ParameterError):
    """``value`` as a finite ``float`` in the interval given.

    Parameters
    ----------
    name : str
    value : object
    low, high : float, optional
        Bounds (None: unbounded on that side).
    low_open, high_open : bool
        Exclude the bound itself.
    hint : str
        Appended after ``; `` to the message (what a typical value is).

    Returns
    -------
    float
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        raise error(f"{name} must be {_interval(low, high, low_open, high_open)}, got "
                    f"{value!r}" + (f"; {hint}" if hint else ""))
    return number


def _interval(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def check_choice(name, value, choices):
    """``value`` if it is one of ``choices``, else `ParameterError` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def require_fitted(model):
    """Raise `NotFittedError` unless ``model`` has weights."""
    if getattr(model, "W1_", None) is None:
        from ._errors import NotFittedError  # made on first use (scikit-learn's subclass)

        raise NotFittedError(
            "this SparseAutoencoder has no weights yet; call fit() first, or build one "
            "with SparseAutoencoder.from_weights() or load()")


def check_width(dataset, n_visible):
    """Raise `DataError` unless ``dataset`` has ``n_visible`` columns.

    The message starts as scikit-learn's ("X has 5 features, but ... is
    expecting 4 features as input"), then names the data and the fix.
    """
    n = dataset.shape[1]
    if n != n_visible:
        raise DataError(
            f"X has {n} features, but SparseAutoencoder is expecting {n_visible} features as "
            f"input (X is {dataset.source}); use data of the width the model was trained on")
