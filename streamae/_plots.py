"""Pictures of a trained model (``streamae show``, and the demo's filters).

- ``filters.png``: every hidden unit's input weights (a row of W1), in the
  layout of the exercise's ``display_network.m`` (grey) or
  ``displayColorNetwork.m`` (colour): tiles laid out by
  ``skimage.util.montage``, written with Pillow;
- ``cost.png``: the cost and its three terms against the passes over the data
  (log scale), the warm-up on a subsample drawn apart from the full-data fit, and the
  validation cost at its checks when the fit had a validation set;
- ``rho_hat.png``: histogram of the hidden units' mean activations, with the
  target rho and the dead / saturated thresholds marked.

The two charts are drawn with Matplotlib's object-oriented API on the Agg
canvas (no display, no global state), 640 x 400 pixels each.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ._constants import unit_thresholds
from ._errors import DataError, ParameterError

CHANNELS = ("auto", "gray", "rgb")
CHART_SIZE = (640, 400)  # pixels
_DPI = 100
PICTURES = ("filters.png", "cost.png", "rho_hat.png")


# ---------------------------------------------------------------- filters

def infer_channels(n_visible: int) -> str:
    """"rgb" if ``n_visible`` is 3 x a square but not a square itself, else "gray".

    192 (8x8x3) and 3072 (32x32x3) are colour; 64 and 784 are grey. Widths
    that are neither (e.g. tabular data) are grey tiles of the most nearly
    square shape (see `tile_shape`).
    """
    third = n_visible // 3
    if n_visible % 3 == 0 and third >= 4 and math.isqrt(third) ** 2 == third \
            and math.isqrt(n_visible) ** 2 != n_visible:
        return "rgb"
    return "gray"


def tile_shape(n_visible: int) -> tuple[int, int]:
    """Most nearly square ``(h, w)`` with ``h * w == n_visible`` and ``h <= w``.

    A perfect square gives ``(s, s)``; a prime gives a ``(1, n)`` strip.
    """
    h = math.isqrt(n_visible)
    while n_visible % h:
        h -= 1
    return h, n_visible // h


def _tiles(A, channels, patch_shape):
    """Rows of ``A`` as tiles: (k, h, w) grey or (k, p, p, 3) colour, each column-major."""
    k, n = A.shape
    if channels == "rgb":
        p = math.isqrt(n // 3)
        if patch_shape is not None:
            raise ParameterError("`patch_shape` applies to grey tiles only")
        if 3 * p * p != n:
            raise ParameterError(f"colour tiles need 3 * p * p inputs, but the model has {n}; "
                                 "use `channels='gray'`")
        # (3, p*p) channel blocks -> (p, p, 3), each channel column-major.
        return A.reshape(k, 3, p, p).transpose(0, 3, 2, 1)
    h, w = tile_shape(n) if patch_shape is None else (int(s) for s in patch_shape)
    if h < 1 or w < 1 or h * w != n:
        raise ParameterError(
            f"patch shape {patch_shape} does not hold the model's {n} inputs; give h x w with "
            f"h * w = {n}, or leave it out for the most nearly square shape")
    return A.reshape(k, w, h).transpose(0, 2, 1)


def filter_grid(W, patch_shape=None, center: bool = True, channels: str = "gray") -> np.ndarray:
    """Tile the rows of a weight matrix into one picture.

    As the exercise's ``display_network.m`` (grey) and
    ``displayColorNetwork.m`` (colour): the global mean of ``W`` is
    subtracted (so that e.g. all-positive input patches show contrast around
    grey), each filter is divided by its own max ``|w|`` (over all three
    channels: the exercise scales each channel separately, which changes the
    colours), reshaped column-major (the order of
    `streamae._patches.sample_patches`), and the tiles are laid out row by
    row (``skimage.util.montage``) in a grid of ``cols = ceil(sqrt(k))``
    columns and ``rows = ceil(k / cols)`` rows, separated and surrounded by
    1-pixel borders of -1 (black); unused cells stay -1 too.

    Parameters
    ----------
    W : array_like, shape (n_hidden, n_visible)
        One filter per row; for colour, (R, G, B) blocks of ``p * p`` values.
    patch_shape : tuple of int, optional
        ``(h, w)`` of a grey tile, with ``h * w == n_visible``.  By default
        the most nearly square factorisation (`tile_shape`).
    center : bool, default True
        Subtract the global mean of ``W`` first.
    channels : {"gray", "rgb"}

    Returns
    -------
    ndarray, shape (1 + rows * (h + 1), 1 + cols * (w + 1)) or (..., 3)
        float64 picture in ``[-1, 1]``.
    """
    from skimage.util import montage

    A = np.asarray(W, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"W must be a non-empty 2-D (n_hidden, n_visible) array, got {A.shape}")
    if center:
        A = A - A.mean()
    peak = np.abs(A).max(axis=1, keepdims=True)
    # An all-zero filter stays 0 (grey) instead of dividing by zero.
    tiles = _tiles(A / np.where(peak > 0, peak, 1.0), channels, patch_shape)
    cols = math.ceil(math.sqrt(len(tiles)))
    colour = tiles.ndim == 4
    return montage(tiles, fill=(-1.0,) * 3 if colour else -1.0,
                   grid_shape=(math.ceil(len(tiles) / cols), cols), padding_width=1,
                   channel_axis=-1 if colour else None)


def auto_scale(grid_shape) -> int:
    """Pixels per weight: 8 for small grids, less for big ones (about 640 px wide at most)."""
    return max(1, min(8, 640 // max(grid_shape[:2])))


def filter_image(W, channels="auto", patch_shape=None, scale=None) -> np.ndarray:
    """The filter picture as 8-bit pixels.

    Parameters
    ----------
    W : array_like of shape (n_hidden, n_visible)
    channels : {"auto", "gray", "rgb"}
        See `infer_channels`.
    patch_shape : tuple of int, optional
        ``(h, w)`` of a grey tile (default: most nearly square).
    scale : int, optional
        Enlargement (nearest neighbour); default `auto_scale`.

    Returns
    -------
    ndarray of uint8, shape (H, W) grey or (H, W, 3) colour
    """
    W = np.asarray(W, np.float64)
    if channels not in CHANNELS:
        raise ParameterError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
    if channels == "auto":
        channels = "gray" if patch_shape is not None else infer_channels(W.shape[1])
    grid = filter_grid(W, patch_shape=patch_shape, channels=channels)
    scale = auto_scale(grid.shape) if scale is None else int(scale)
    if scale < 1:
        raise ParameterError(f"scale must be at least 1, got {scale}")
    pixels = np.round((np.clip(grid, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)


def save_filters(W, path, channels="auto", patch_shape=None, scale=None) -> Path:
    """Write `filter_image` as a PNG (Pillow)."""
    from PIL import Image

    path = Path(os.fspath(path))
    Image.fromarray(filter_image(W, channels, patch_shape, scale)).save(path, format="PNG")
    return path


# ---------------------------------------------------------------- charts

def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(CHART_SIZE[0] / _DPI, CHART_SIZE[1] / _DPI), dpi=_DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    return fig


_TERMS = (("cost", dict(color="black", lw=2)), ("reconstruction", dict(color="tab:blue")),
          ("sparsity", dict(color="tab:orange")), ("weight_decay", dict(color="tab:green")))


def cost_figure(history):
    """Cost and its three terms against the passes over the data, log scale; the
    validation cost (records with ``validation_cost``) beside the cost, dashed.

    The x-axis counts passes over the whole data (``data_passes``; the
    iteration for histories without it), so a warm-up on a subsample and the
    full-data fit after it share one axis at their true cost. The warm-up's
    curves are dashed and labelled apart (their cost is the subsample's), and
    a vertical line marks where the full-data fit starts.
    """
    fig = _figure()
    ax = fig.add_subplot()
    phases = [r.get("phase", "full") for r in history]
    x_key = "data_passes" if all("data_passes" in r for r in history) else "iteration"
    for phase in ("warmup", "full"):
        rows = [r for r, p in zip(history, phases) if p == phase]
        # One legend entry per term: the warm-up's curves are labelled "_..." (left
        # out of the legend) when the full phase draws the same terms.
        hidden = "_" if phase == "warmup" and "full" in phases else ""
        suffix = " (warm-up, subsample)" if phase == "warmup" else ""
        for key, style in _TERMS if rows else ():
            values = np.array([r.get(key, np.nan) for r in rows], float)
            values[~(values > 0)] = np.nan  # log scale: leave out zeros (e.g. beta = 0)
            if np.isfinite(values).any():
                ax.plot([r[x_key] for r in rows], values,
                        label=hidden + key.replace("_", " ") + suffix,
                        dashes=(4, 2) if phase == "warmup" else (), **style)
    if "warmup" in phases and "full" in phases:
        start = next(r[x_key] for r, p in zip(history, phases) if p == "full")
        ax.plot([], [], color="grey", dashes=(4, 2), label="warm-up on a subsample")
        ax.axvline(start, color="grey", lw=1, ls=":", label="full-data fit starts")
    checks = [(r[x_key], r["validation_cost"]) for r in history
              if r.get("validation_cost") is not None and 0 < r["validation_cost"] < np.inf]
    if checks:
        ax.plot(*zip(*checks), color="black", ls="--", lw=1.5, label="validation cost")
    ax.set_yscale("log")
    ax.set_xlabel("passes over the data" if x_key == "data_passes" else "iteration")
    ax.set_ylabel("cost")
    last = history[-1]
    ev = last.get("explained_variance")
    note = f"final cost {last['cost']:.4g}" + (f", explained variance {ev:.3f}"
                                               if ev is not None else "")
    ax.set_title(note, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def rho_hat_figure(rho_hat, rho):
    """Histograms of rho_hat: against the thresholds (log axis), and zoomed in.

    Left: every unit on a log axis with the target rho and the dead /
    saturated thresholds. Right: the same values on a linear axis spanning
    only their own range, where the spread around the target shows.
    """
    rho_hat = np.asarray(rho_hat, float)
    low, high = unit_thresholds(rho)
    fig = _figure()
    wide, zoom = fig.subplots(1, 2, width_ratios=(3, 2))
    lo = max(min(rho_hat.min(), low) / 2, 1e-12)
    hi = min(1.0, max(rho_hat.max(), high) * 2)
    bins = np.geomspace(lo, hi, 41)
    wide.hist(np.clip(rho_hat, lo, hi), bins=bins, color="tab:blue", edgecolor="white")
    wide.set_xscale("log")
    wide.axvline(rho, color="black", lw=2, label=f"target {rho:g}")
    wide.axvline(low, color="tab:red", ls="--", label=f"dead < {low:g}")
    wide.axvline(high, color="tab:purple", ls="--", label=f"saturated > {high:g}")
    wide.set_xlabel("rho_hat (log scale)")
    wide.set_ylabel("hidden units")
    wide.legend(fontsize=8, loc="upper left")

    a, b = float(rho_hat.min()), float(rho_hat.max())
    pad = (b - a) * 0.05 or max(abs(a) * 0.01, 1e-9)
    zoom.hist(rho_hat, bins=np.linspace(a - pad, b + pad, 21), color="tab:blue",
              edgecolor="white")
    if a - pad <= rho <= b + pad:
        zoom.axvline(rho, color="black", lw=2)
    zoom.set_xlabel("rho_hat (zoom)")
    zoom.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    zoom.tick_params(axis="x", labelsize=8)

    from matplotlib.ticker import MaxNLocator

    for ax in (wide, zoom):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of units
    dead, sat = int(np.sum(rho_hat < low)), int(np.sum(rho_hat > high))
    fig.suptitle(f"{rho_hat.size} hidden units: rho_hat from {a:.3g} to {b:.3g}, mean "
                 f"{rho_hat.mean():.3g}; {dead} dead, {sat} saturated", fontsize=10)
    return fig


def _save_figure(fig, path):
    fig.savefig(os.fspath(path), dpi=_DPI, format="png")
    return Path(os.fspath(path))


# ---------------------------------------------------------------- show

def default_out(model_path) -> str:
    """``model.zarr`` -> ``model-pictures``."""
    path = os.fspath(model_path).rstrip("/")
    stem = path[:-5] if path.endswith(".zarr") else path
    return stem + "-pictures"


def show(model, out=None, *, channels="auto", patch_shape=None, scale=None, overwrite=False,
         storage_options=None):
    """Write ``filters.png``, ``cost.png`` and ``rho_hat.png`` for a model.

    Parameters
    ----------
    model : str or SparseAutoencoder
        A saved model (path) or a fitted estimator.
    out : str or os.PathLike, optional
        Directory for the pictures; default ``<model>-pictures`` beside a
        saved model (required for an estimator).
    channels, patch_shape, scale
        See `filter_image`.
    overwrite : bool
        Replace pictures that exist; without it an existing one is an error.

    Returns
    -------
    dict
        Picture name -> path written. ``cost.png`` is left out when the model
        has no training history, ``rho_hat.png`` when it has no rho_hat.
    """
    from ._atomic import missing_dirs, remove_empty
    from ._errors import OutputExistsError

    if not isinstance(model, (str, os.PathLike)):  # a fitted estimator
        if out is None:
            raise ParameterError("give out= (a directory) to show a model that is not saved")
    else:
        path = os.fspath(model)
        if out is None and "://" in path:
            raise ParameterError(f"give `out` (a local directory) for the pictures of '{path}'")
        out = default_out(path) if out is None else out
        model = _Saved(path, storage_options)
    out = Path(os.fspath(out))
    if out.exists() and not out.is_dir():
        raise DataError(f"'{out}' exists and is not a directory; give a directory as `out`")
    targets = [out / name for name in PICTURES]
    taken = [t for t in targets if t.exists()]
    if taken and not overwrite:
        raise OutputExistsError(f"'{taken[0]}' already exists; choose another `out` directory "
                                "or pass `overwrite=True` to replace the pictures")
    W = model.W1_
    if getattr(model, "whitening_", None) is not None:  # draw the filters in the raw space
        from ._whiten import dewhiten

        W = dewhiten(W, model.whitening_)
    filters = filter_image(W, channels, patch_shape, scale)  # bad options fail here
    created = missing_dirs(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _write_pictures(model, filters, targets)
    except BaseException:
        remove_empty(created)  # a failed command leaves no empty folder
        raise


class _Saved:
    """What the pictures need of a saved model, read without the estimator (whose
    imports would cost more than drawing): weights, history, rho_hat, rho."""

    def __init__(self, path, storage_options=None):
        from ._store import read_model

        params, attrs = read_model(path, storage_options=storage_options)
        self.W1_ = params["W1"]
        self.history_ = list(attrs.get("history", []))
        self.rho = attrs["rho"]
        self.rho_hat_ = np.asarray(attrs["rho_hat"], np.float64) if attrs.get("rho_hat") \
            else None
        self.whitening_ = attrs.get("whitening")


def _write_pictures(model, filters, targets):
    """Write the filters image and the charts of ``model`` to ``targets``."""
    from PIL import Image

    Image.fromarray(filters).save(targets[0], format="PNG")
    written = {"filters.png": targets[0]}
    if model.history_:
        written["cost.png"] = _save_figure(cost_figure(model.history_), targets[1])
    rho_hat = getattr(model, "rho_hat_", None)
    if rho_hat is not None and np.size(rho_hat):
        written["rho_hat.png"] = _save_figure(rho_hat_figure(rho_hat, model.rho), targets[2])
    return written
