"""``streamae show``: pictures of a trained model.

- ``filters.png``: every hidden unit's input weights (a row of W1), in the
  layout of the exercise's ``display_network.m`` (grey) or
  ``displayColorNetwork.m`` (colour), written with Pillow;
- ``cost.png``: the cost and its three terms per iteration (log scale);
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

from ._display import filter_grid
from ._errors import DataError, ParameterError
from ._metrics import unit_thresholds

CHANNELS = ("auto", "gray", "rgb")
CHART_SIZE = (640, 400)  # pixels
_DPI = 100
PICTURES = ("filters.png", "cost.png", "rho_hat.png")


# ---------------------------------------------------------------- filters

def infer_channels(n_visible: int) -> str:
    """"rgb" if ``n_visible`` is 3 x a square but not a square itself, else "gray".

    192 (8x8x3) and 3072 (32x32x3) are colour; 64 and 784 are grey. Widths
    that are neither (e.g. tabular data) are grey tiles of the most nearly
    square shape (see `streamae._display.filter_grid`).
    """
    third = n_visible // 3
    if n_visible % 3 == 0 and third >= 4 and math.isqrt(third) ** 2 == third \
            and math.isqrt(n_visible) ** 2 != n_visible:
        return "rgb"
    return "gray"


def colour_grid(W) -> np.ndarray:
    """Tile colour filters: rows of ``W`` are (R, G, B) blocks of column-major p x p patches.

    As ``displayColorNetwork.m``: the global mean is subtracted, tiles are
    laid out in a ``ceil(sqrt(k))``-column grid with 1-pixel black borders.
    Each filter is divided by its own max |w| over all three channels (the
    exercise scales each channel separately, which changes the colours).

    Returns
    -------
    ndarray of shape (1 + rows * (p + 1), 1 + cols * (p + 1), 3)
        float64 in [-1, 1].
    """
    A = np.asarray(W, np.float64)
    k, n = A.shape
    p = math.isqrt(n // 3)
    if n % 3 or p * p * 3 != n:
        raise ParameterError(f"colour filters need 3 * p * p inputs, got {n}")
    A = A - A.mean()
    peak = np.abs(A).max(axis=1, keepdims=True)
    A = A / np.where(peak > 0, peak, 1.0)
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    grid = -np.ones((1 + rows * (p + 1), 1 + cols * (p + 1), 3))
    for i, f in enumerate(A):
        r, c = divmod(i, cols)
        top, left = 1 + r * (p + 1), 1 + c * (p + 1)
        # (3, p*p) channel blocks -> (p, p, 3), each channel column-major.
        tile = f.reshape(3, p, p).transpose(2, 1, 0)
        grid[top:top + p, left:left + p] = tile
    return grid


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
    if channels == "rgb":
        if patch_shape is not None:
            raise ParameterError("--patch-shape applies to grey tiles only")
        n = W.shape[1]
        if n % 3 or math.isqrt(n // 3) ** 2 * 3 != n:
            raise ParameterError(f"colour tiles need 3 * p * p inputs, but the model has {n}; "
                                 "use --channels gray")
        grid = colour_grid(W)
    else:
        grid = filter_grid(W, patch_shape=patch_shape)
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


def cost_figure(history):
    """Cost and its three terms against the iteration, log scale."""
    fig = _figure()
    ax = fig.add_subplot()
    it = [r["iteration"] for r in history]
    for key, style in (("cost", dict(color="black", lw=2)),
                       ("reconstruction", dict(color="tab:blue")),
                       ("sparsity", dict(color="tab:orange")),
                       ("weight_decay", dict(color="tab:green"))):
        values = np.array([r.get(key, np.nan) for r in history], float)
        values[~(values > 0)] = np.nan  # log scale: leave out zeros (e.g. beta = 0)
        if np.isfinite(values).any():
            ax.plot(it, values, label=key.replace("_", " "), **style)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cost")
    last = history[-1]
    ev = last.get("explained_variance")
    note = f"final cost {last['cost']:.4g}" + (f", explained variance {ev:.3f}"
                                               if ev is not None else "")
    ax.set_title(note, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
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
    from ._errors import OutputExistsError
    from ._estimator import SparseAutoencoder

    if isinstance(model, SparseAutoencoder):
        if out is None:
            raise ParameterError("give out= (a directory) to show a model that is not saved")
    else:
        path = os.fspath(model)
        if out is None and "://" in path:
            raise ParameterError(f"give --out (a local directory) for the pictures of '{path}'")
        out = default_out(path) if out is None else out
        model = SparseAutoencoder.load(path, storage_options=storage_options)
    out = Path(os.fspath(out))
    if out.exists() and not out.is_dir():
        raise DataError(f"'{out}' exists and is not a directory; give a directory with --out")
    targets = [out / name for name in PICTURES]
    taken = [t for t in targets if t.exists()]
    if taken and not overwrite:
        raise OutputExistsError(f"'{taken[0]}' already exists; choose another --out directory "
                                "or pass --overwrite to replace the pictures")
    out.mkdir(parents=True, exist_ok=True)

    W = model.W1_
    if getattr(model, "whitening_", None) is not None:  # draw the filters in the raw space
        from ._whiten import dewhiten

        W = dewhiten(W, model.whitening_)
    written = {"filters.png": save_filters(W, targets[0], channels, patch_shape, scale)}
    if model.history_:
        written["cost.png"] = _save_figure(cost_figure(model.history_), targets[1])
    rho_hat = getattr(model, "rho_hat_", None)
    if rho_hat is not None and np.size(rho_hat):
        written["rho_hat.png"] = _save_figure(rho_hat_figure(rho_hat, model.rho), targets[2])
    return written
