"""Filter pictures in the layout of the UFLDL exercise's ``display_network.m``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ._errors import ParameterError


def _tile_shape(n_visible: int) -> tuple[int, int]:
    """Most nearly square ``(h, w)`` with ``h * w == n_visible`` and ``h <= w``.

    A perfect square gives ``(s, s)``; a prime gives a ``(1, n)`` strip.
    """
    h = math.isqrt(n_visible)
    while n_visible % h:
        h -= 1
    return h, n_visible // h


def filter_grid(W, patch_shape=None, center: bool = True) -> np.ndarray:
    """Tile the rows of a weight matrix into one picture.

    Like ``display_network.m``: the global mean of ``W`` is subtracted (so
    that e.g. all-positive input patches show contrast around grey), each
    filter is divided by its own max ``|w|``, reshaped column-major (the
    order of :func:`streamae._patches.sample_patches`), and the tiles are laid
    out row by row in a grid of ``cols = ceil(sqrt(k))`` columns and
    ``rows = ceil(k / cols)`` rows, separated and surrounded by 1-pixel
    borders of -1 (black); unused cells stay -1 too.

    Parameters
    ----------
    W : array_like, shape (n_hidden, n_visible)
        One filter per row.
    patch_shape : tuple of int, optional
        ``(h, w)`` of a tile, with ``h * w == n_visible``.  By default the
        most nearly square factorisation: ``(s, s)`` for a perfect square,
        a ``(1, n_visible)`` strip for a prime ``n_visible``.
    center : bool, default True
        Subtract the global mean of ``W`` first, as ``display_network.m``
        does.

    Returns
    -------
    ndarray, shape (1 + rows * (h + 1), 1 + cols * (w + 1))
        float64 picture in ``[-1, 1]``.
    """
    A = np.asarray(W, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"W must be a non-empty 2-D (n_hidden, n_visible) array, got {A.shape}")
    k, n = A.shape
    h, w = _tile_shape(n) if patch_shape is None else (int(s) for s in patch_shape)
    if h < 1 or w < 1 or h * w != n:
        raise ParameterError(
            f"patch shape {patch_shape} does not hold the model's {n} inputs; give h x w with "
            f"h * w = {n}, or leave it out for the most nearly square shape")
    if center:
        A = A - A.mean()
    peak = np.abs(A).max(axis=1, keepdims=True)
    # An all-zero filter stays 0 (grey) instead of dividing by zero.
    A = A / np.where(peak > 0, peak, 1.0)

    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    grid = -np.ones((1 + rows * (h + 1), 1 + cols * (w + 1)))
    for i, f in enumerate(A):
        r, c = divmod(i, cols)
        top, left = 1 + r * (h + 1), 1 + c * (w + 1)
        grid[top : top + h, left : left + w] = f.reshape((h, w), order="F")
    return grid


def save_filter_png(W, path, scale: int = 8, patch_shape=None) -> Path:
    """Write :func:`filter_grid` of ``W`` as an 8-bit greyscale PNG.

    ``[-1, 1]`` maps linearly to ``0..255``; each picture pixel becomes a
    ``scale x scale`` block (nearest neighbour), since 8x8 filters are
    unreadable at their native size.

    Parameters
    ----------
    W : array_like, shape (n_hidden, n_visible)
        One filter per row.
    path : str or os.PathLike
        Output file.
    scale : int, default 8
        Enlargement factor, at least 1.
    patch_shape : tuple of int, optional
        Passed to :func:`filter_grid`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from PIL import Image

    if int(scale) < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    grid = filter_grid(W, patch_shape=patch_shape)
    grey = np.round((np.clip(grid, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    grey = np.repeat(np.repeat(grey, int(scale), axis=0), int(scale), axis=1)
    path = Path(os.fspath(path))
    # A 2-D uint8 array becomes mode "L"; passing mode= is deprecated in Pillow 11+.
    Image.fromarray(grey).save(path, format="PNG")
    return path
