"""Patches: cut at random from images, normalised as the UFLDL exercise does.

Two uses of one sampling rule (each patch's image uniform, then its top-left
corner uniform among the positions where it fits):

- in memory, for the demo and the exercise's ``sampleIMAGES``:
  `demo_patches` = `sample_patches` of the whitened built-in photographs ->
  `normalize_patches`;
- streamed into a chunked Zarr array by ``streamae patches``
  (`write_patches`)::

    images (a folder Pillow reads, or the built-in photographs; see
    streamae._images)
      -> grey or RGB floats in [0, 1], longer side at most ``max_side``
      -> optional 1/f whitening, per image      (once; a folder's images go one
                                                 at a time to a memory-mapped
                                                 scratch file in TMPDIR)
      -> pass 1, per batch: draw positions, cut, remove each patch's mean,
         sum of squares                                         -> global std
      -> pass 2, per batch: the same patches again, clipped at +/- 3 std,
         rescaled to [0.1, 0.9], written                        -> Zarr chunk

  Both are passes like every other (`streamae._passes.Pass`, over the
  patches as rows: `PatchRows`): tasks stream runs of batches, whatever the
  chunk count, and pass 1's sums add in the fixed tree.

  Memory is one image at a time while packing, then a few chunks in flight
  (the packed images are a memory-mapped file, paged in as patches are
  cut): independent of the number of patches and of images.

Streamed sampling is deterministic and independent of the chunking: patch
``k`` belongs to *sampling block* ``k // SAMPLING_BLOCK`` whose draws come
from ``numpy.random.default_rng([seed, block])``.

Layout of a patch row: channel blocks (R, G, B for colour), each the
``size x size`` patch flattened column-major (MATLAB order, like the
exercise's ``reshape(patch, [], 1)`` and its ``displayColorNetwork``), so
value ``c * size**2 + i + j * size`` is channel ``c``, row ``i``, column ``j``.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
from numba import njit

from ._cluster import make_runner
from ._data import rows_dataset
from ._errors import DataError, ParameterError
from ._images import (
    CHANNELS,
    WHITEN_F0,
    WHITEN_VARIANCE,
    builtin_images,
    iter_folder_images,
    whiten,
    whitened_builtin_images,
)
from ._options import with_legacy_options
from ._output import default_chunk_rows, set_attrs, staged_array
from ._passes import OutputChunks, Pass
from ._store import check_writable
from ._tree import add_vectors

SAMPLING_BLOCK = 4096
_CLIP_STDS = 3.0


# ---------------------------------------------------------------- in memory

def draw_corners(rng, heights, widths, size, count):
    """Image and top-left corner of ``count`` random ``size x size`` patches.

    Each patch picks its image uniformly, then its top row uniformly in
    ``0 .. H - size`` and its left column in ``0 .. W - size``.

    Parameters
    ----------
    rng : numpy.random.Generator
    heights, widths : ndarray of shape (n_images,), int64
        Image sizes in pixels.
    size : int
    count : int

    Returns
    -------
    which, rows, cols : ndarray of shape (count,), int64
    """
    which = rng.integers(len(heights), size=count)
    # Exclusive upper bounds per patch: H - size + 1 and W - size + 1.
    rows = rng.integers(0, heights[which] - size + 1)
    cols = rng.integers(0, widths[which] - size + 1)
    return which, rows, cols


def sample_patches(images, patch_size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Cut random square patches out of a list of grey images (`draw_corners`).

    Patches are flattened in column-major (Fortran) order,
    ``patch.reshape(-1, order="F")``, like MATLAB's ``reshape(patch, [], 1)``
    in the exercise, so element ``i + j * patch_size`` is row ``i``, column
    ``j``.

    Parameters
    ----------
    images : sequence of ndarray, each shape (H_i, W_i)
        Grayscale images.
    patch_size : int
        Side of the square patches, at least 2.
    count : int
        Number of patches.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    ndarray, shape (count, patch_size * patch_size)
        float64 patches, one per row.
    """
    p = int(patch_size)
    if p < 2:
        raise ValueError(f"patch_size must be at least 2, got {patch_size}")
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    images = [np.asarray(im, dtype=np.float64) for im in images]
    if not images:
        raise ValueError("sample_patches needs at least one image")
    for i, im in enumerate(images):
        if im.ndim != 2 or min(im.shape) < p:
            raise ValueError(f"image {i} of shape {im.shape} is smaller than a {p}x{p} patch")
    which, rows, cols = draw_corners(rng, np.array([im.shape[0] for im in images]),
                                     np.array([im.shape[1] for im in images]), p, count)
    out = np.empty((count, p * p), dtype=np.float64)
    offs = np.arange(p)
    for k, im in enumerate(images):
        sel = np.flatnonzero(which == k)
        # (n, p, p) block gathered by fancy indexing; swapping the last two
        # axes before a C-order reshape gives the column-major flattening.
        block = im[(rows[sel, None] + offs)[:, :, None], (cols[sel, None] + offs)[:, None, :]]
        out[sel] = block.transpose(0, 2, 1).reshape(len(sel), p * p)
    return out


def normalize_patches(patches: np.ndarray, return_scale: bool = False):
    """The exercise's ``normalizeData``: squash patches into ``[0.1, 0.9]``.

    The autoencoder's sigmoid output layer can only produce values in
    ``(0, 1)``, hence the rescaling::

        p    = patches - patches.mean(axis=1, keepdims=True)   # per patch
        pstd = 3 * np.std(p)                                    # whole array
        p    = np.clip(p, -pstd, pstd) / pstd
        p    = (p + 1) * 0.4 + 0.1

    ``np.std`` uses ``ddof=0``; MATLAB's ``std`` uses ``ddof=1``, a relative
    difference of ``1 / (2 * p.size)`` in ``pstd``. `write_patches` computes
    the same in two streamed passes (`patch_std`, `_cut_patches`).

    Parameters
    ----------
    patches : ndarray, shape (n_patches, n_pixels)
        One patch per row.
    return_scale : bool, default False
        Also return ``pstd``.

    Returns
    -------
    ndarray, shape (n_patches, n_pixels)
        float64 values in ``[0.1, 0.9]``.  All 0.5 if every patch is flat.
    pstd : float
        Only if ``return_scale``: the clipping threshold ``3 * std``.
    """
    p = np.asarray(patches, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"patches must be 2-D (n_patches, n_pixels), got shape {p.shape}")
    p = p - p.mean(axis=1, keepdims=True)
    pstd = _CLIP_STDS * float(np.std(p)) if p.size else 0.0
    # Flat input would divide 0 by 0; its centred value 0 maps to 0.5.
    p = np.clip(p, -pstd, pstd) / pstd if pstd > 0 else np.zeros_like(p)
    p = (p + 1.0) * 0.4 + 0.1
    return (p, pstd) if return_scale else p


def demo_patches(count: int = 10000, patch_size: int = 8, seed: int = 0) -> np.ndarray:
    """Training data equivalent to the exercise's ``sampleIMAGES``.

    Built-in photographs -> `streamae._images.whiten_image` ->
    `sample_patches` with ``np.random.default_rng(seed)`` ->
    `normalize_patches`. Deterministic for a given ``seed`` (and
    scikit-image's bundled images).

    Parameters
    ----------
    count : int, default 10000
        Number of patches.
    patch_size : int, default 8
        Patch side.
    seed : int, default 0
        Seed of the patch sampler.

    Returns
    -------
    ndarray, shape (count, patch_size * patch_size)
        float64 patches in ``[0.1, 0.9]``, column-major flattened.
    """
    rng = np.random.default_rng(seed)
    return normalize_patches(sample_patches(whitened_builtin_images(), patch_size, count, rng))


# ---------------------------------------------------------------- streamed

def _require_patch_fits(im, name, size, max_side):
    """DataError if image ``im`` is smaller than a ``size`` x ``size`` patch."""
    if min(im.shape[:2]) < size:
        shrunk = max_side and max(im.shape[:2]) == max_side
        raise DataError(
            f"image '{name}' is {im.shape[1]}x{im.shape[0]} pixels"
            f"{f' after downscaling to `max_side={max_side}`' if shrunk else ''}, "
            f"smaller than the {size}x{size} patches; remove it or use `size="
            f"{min(im.shape[:2])}` or less" + (", or raise `max_side`" if shrunk else ""))


@dataclass(frozen=True)
class PatchSource:
    """Images packed into one buffer, and how to cut patches from them.

    Attributes
    ----------
    buffer : ndarray of shape (total,), float32
        Every image, flattened in (H, W, C) order, one after the other.
    starts : ndarray of shape (n_images,), int64
        Offset of each image in ``buffer``.
    heights, widths : ndarray of shape (n_images,), int64
        Image sizes in pixels.
    channels : int
        1 (grey) or 3 (colour).
    size : int
        Patch side.
    seed : int
    """

    buffer: np.ndarray
    starts: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    channels: int
    size: int
    seed: int

    @classmethod
    def from_images(cls, images, size, seed, names=None, max_side=0):
        """Pack ``images`` (all grey or all colour); checks they hold a patch.

        ``max_side`` (the downscaling applied, 0 for none) only shapes the
        error message.
        """
        names = names or [f"image {i}" for i in range(len(images))]
        size = int(size)
        for im, name in zip(images, names, strict=True):
            _require_patch_fits(im, name, size, max_side)
        channels = 1 if images[0].ndim == 2 else images[0].shape[2]
        sizes = np.array([im.size for im in images], np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        buffer = np.concatenate([np.asarray(im, np.float32).ravel() for im in images])
        return cls(buffer, starts,
                   np.array([im.shape[0] for im in images], np.int64),
                   np.array([im.shape[1] for im in images], np.int64),
                   channels, size, int(seed))

    @classmethod
    def from_folder(cls, folder, size, seed, channels="gray", max_side=512, whiten_images=True):
        """Read, whiten and pack a folder's images one at a time into a scratch file.

        The file (in the temporary directory, ``TMPDIR``) is unlinked at once
        and memory-mapped read-only, so memory holds one image at a time and
        the file disappears with the source, however the process ends.

        Returns
        -------
        source : PatchSource
        names, skipped : list of str
            The images used and the files that are not readable images.
        """
        import mmap
        import tempfile

        size = int(size)
        names, skipped, starts, heights, widths = [], [], [], [], []
        nch, offset = None, 0
        scratch = tempfile.TemporaryFile(prefix="streamae-patches-")
        try:
            for name, im in iter_folder_images(folder, channels, max_side, skipped):
                _require_patch_fits(im, name, size, max_side)
                if whiten_images:
                    im = whiten(im)
                im = np.ascontiguousarray(im, np.float32)
                try:
                    scratch.write(im.tobytes())
                except OSError as exc:
                    raise DataError(
                        f"cannot keep the images' scratch copy in {tempfile.gettempdir()} "
                        f"({exc.strerror or exc}; {offset * 4 / 2**20:.0f} MiB written before "
                        f"image '{name}'): set TMPDIR to a folder with more space, or lower "
                        "`max_side`") from None
                names.append(name)
                starts.append(offset)
                heights.append(im.shape[0])
                widths.append(im.shape[1])
                nch = 1 if im.ndim == 2 else im.shape[2]
                offset += im.size
            scratch.flush()
            mapped = mmap.mmap(scratch.fileno(), 0, access=mmap.ACCESS_READ)
        finally:
            scratch.close()  # the mapping keeps the (unlinked) file's pages
        source = cls(np.frombuffer(mapped, np.float32), np.array(starts, np.int64),
                     np.array(heights, np.int64), np.array(widths, np.int64), nch, size,
                     int(seed))
        return source, names, skipped

    @property
    def width(self):
        """Values per patch: channels * size**2."""
        return self.channels * self.size * self.size

    def __dask_tokenize__(self):
        # Cheap and unique enough: never hash the image buffer per task.
        return ("PatchSource", id(self.buffer), self.size, self.seed)

    def draws(self, block):
        """Image, top row and left column of the patches of one sampling block."""
        rng = np.random.default_rng([self.seed, int(block)])
        return draw_corners(rng, self.heights, self.widths, self.size, SAMPLING_BLOCK)

    def positions(self, start, stop):
        """Draws of patches ``start .. stop-1`` (three int64 arrays)."""
        first, last = start // SAMPLING_BLOCK, (stop - 1) // SAMPLING_BLOCK
        parts = [self.draws(b) for b in range(first, last + 1)]
        lo = start - first * SAMPLING_BLOCK
        return tuple(np.concatenate([p[i] for p in parts])[lo:lo + stop - start]
                     for i in range(3))

    def patches(self, start, stop, pstd=-1.0, dtype=np.float64):
        """Patches ``start .. stop-1``, each minus its own mean, and statistics.

        Parameters
        ----------
        pstd : float
            If >= 0, also clip at +/- pstd and rescale into [0.1, 0.9] (all
            0.5 if pstd is 0); if negative, return the centred values.
        dtype : dtype or None
            dtype of the returned patches; None computes only the statistics
            (``out`` is then empty).

        Returns
        -------
        out : ndarray of shape (stop - start, width)
        row_sum, row_sq : ndarray of shape (stop - start,), float64
            Sum and sum of squares of each centred patch.
        """
        which, rows, cols = self.positions(start, stop)
        kept = 0 if dtype is None else stop - start
        out = np.empty((kept, self.width), np.float64 if dtype is None else dtype)
        row_sum = np.empty(stop - start)
        row_sq = np.empty(stop - start)
        _cut_patches(self.buffer, self.starts, self.widths, self.channels, which, rows, cols,
                     self.size, float(pstd), out, row_sum, row_sq)
        return out, row_sum, row_sq


@njit(nogil=True, cache=True, boundscheck=False)
def _cut_patches(buffer, starts, widths, nch, which, rows, cols, p, pstd, out, row_sum, row_sq):
    """Cut, centre and (if ``pstd >= 0``) normalise patches.

    For patch k at image ``which[k]``, top-left (rows[k], cols[k])::

        v[c*p*p + i + j*p] = image[rows[k] + i, cols[k] + j, c]
        v = v - mean(v)                       (over all channels)
        row_sum[k] = sum(v), row_sq[k] = sum(v**2)
        out[k] = (clip(v, -pstd, pstd) / pstd + 1) * 0.4 + 0.1   if pstd > 0
                 0.5                                              if pstd == 0
                 v                                                if pstd < 0
    An ``out`` with no rows is not written (statistics only).
    """
    npix = p * p
    width = nch * npix
    v = np.empty(width, np.float64)
    for k in range(which.shape[0]):
        im = which[k]
        base = starts[im]
        w_img = widths[im]
        r0 = rows[k]
        c0 = cols[k]
        total = 0.0
        for c in range(nch):
            for j in range(p):
                for i in range(p):
                    x = np.float64(buffer[base + ((r0 + i) * w_img + c0 + j) * nch + c])
                    v[c * npix + j * p + i] = x
                    total += x
        mean = total / width
        s1 = 0.0
        s2 = 0.0
        for t in range(width):
            x = v[t] - mean
            v[t] = x
            s1 += x
            s2 += x * x
        row_sum[k] = s1
        row_sq[k] = s2
        if out.shape[0] == 0:
            continue
        if pstd > 0:
            for t in range(width):
                x = min(max(v[t], -pstd), pstd) / pstd
                out[k, t] = (x + 1.0) * 0.4 + 0.1
        elif pstd == 0:
            for t in range(width):
                out[k, t] = 0.5
        else:
            for t in range(width):
                out[k, t] = v[t]


# ---------------------------------------------------------------- the two passes

class PatchRows:
    """The patches of a `PatchSource` as rows to stream (`streamae._data.rows_dataset`):
    ``rows[a:b, :]`` cuts patches a .. b-1, normalised with ``pstd`` (see
    `PatchSource.patches`), or, with ``pstd`` None, gives each one's (sum, sum
    of squares) of its centred values, shape (count, 2).
    """

    ndim = 2

    def __init__(self, source, count, pstd=None, dtype=np.float64):
        self.source, self.pstd = source, pstd
        self.dtype = np.dtype(np.float64 if pstd is None else dtype)
        self.shape = (int(count), 2 if pstd is None else source.width)

    def __dask_tokenize__(self):
        return ("PatchRows", self.source.__dask_tokenize__(), self.shape, self.pstd,
                self.dtype.name)

    def __getitem__(self, selection):
        rows, cols = selection
        start, stop, _ = rows.indices(self.shape[0])
        if self.pstd is None:
            _, row_sum, row_sq = self.source.patches(start, stop, dtype=None)
            return np.stack([row_sum, row_sq], axis=1)[:, cols]
        return self.source.patches(start, stop, pstd=self.pstd, dtype=self.dtype)[0][:, cols]


def _column_sums(block, row0):
    """Column sums of a batch (pass 1's kernel)."""
    return np.asarray(block, np.float64).sum(axis=0)


def _as_written(block, row0):
    """A batch of patches, as written (pass 2's kernel: they are made as read)."""
    return block


def _patch_pass(source, count, rows, runner, pstd=None, dtype=np.float64):
    rows_of = PatchRows(source, count, pstd, dtype)
    return Pass(rows_dataset(rows_of, rows, "the patches"), runner)


def patch_std(source, count, chunk_rows, runner):
    """Pass 1: standard deviation of all values of the centred patches.

    ``np.std`` of the whole (count, width) array of centred patches
    (ddof=0), from each patch's sum and sum of squares added in the fixed
    tree of a reduction pass (`streamae._passes.Pass.reduce`): the same bits
    whatever the scheduler.
    """
    total = _patch_pass(source, count, chunk_rows, runner).reduce(_column_sums,
                                                                  combine=add_vectors)
    n = count * source.width
    mean = total[0] / n
    var = total[1] / n - mean * mean
    return math.sqrt(max(var, 0.0))


def _open_source(images, size, seed, channels, max_side, whiten_images):
    """The `PatchSource` of a folder (``images``) or, if None, of the built-in photographs.

    Returns ``(source, names, skipped)`` as `PatchSource.from_folder` does.
    """
    if images is not None:
        return PatchSource.from_folder(images, size, seed, channels, max_side, whiten_images)
    imgs, names = builtin_images(channels, np.float32)
    if whiten_images:
        imgs = [whiten(im).astype(np.float32) for im in imgs]
    return PatchSource.from_images(imgs, size, seed, names), names, []


def _metadata(source, names, skipped, images, max_side, channels, count, whiten_images, std,
              dtype, rows):
    """The ``streamae`` attribute of a patch store: where the patches come from, and how."""
    pstd = _CLIP_STDS * std
    return {
        "kind": "patches",
        "source": ("builtin (scikit-image photographs)" if images is None
                   else os.path.abspath(os.fspath(images))),
        "images": names,
        "n_images": len(names),
        "skipped": skipped,
        "max_side": None if images is None else int(max_side),
        "channels": channels,
        "patch_size": source.size,
        "count": count,
        "width": source.width,
        "layout": ("channel blocks (R, G, B), each patch_size x patch_size column-major"
                   if channels == "rgb" else "patch_size x patch_size, column-major"),
        "whiten": bool(whiten_images),
        "whitening": ({"filter": "f * exp(-(f / f0)**4), f in cycles per pixel",
                       "f0": WHITEN_F0, "variance": WHITEN_VARIANCE}
                      if whiten_images else None),
        "seed": source.seed,
        "sampling": (f"patch k uses numpy.random.default_rng([seed, k // {SAMPLING_BLOCK}]): "
                     "image uniform, then corner uniform"),
        "normalization": {
            "method": "UFLDL normalizeData",
            "per_patch_mean_removed": True,
            "std": std, "clip_stds": _CLIP_STDS, "clip": pstd,
            "formula": "(clip(x - mean(x), -clip, clip) / clip + 1) * 0.4 + 0.1",
            "range": [0.1, 0.9],
        },
        "dtype": dtype,
        "chunk_rows": rows,
    }


def _write_pass(source, out, count, rows, pstd, dtype, meta, overwrite, runner,
                storage_options):
    """Pass 2, a written pass (`streamae._passes.Pass.write`): cut, normalise
    and write every chunk into a new array at ``out``."""
    width = source.width
    with staged_array(out, shape=(count, width), chunks=(rows, width), dtype=dtype,
                      overwrite=overwrite, storage_options=storage_options,
                      what="output store") as target:
        _patch_pass(source, count, rows, runner, pstd, dtype).write(
            OutputChunks(target, rows, dtype, storage_options), _as_written)
        size, channels = source.size, meta["channels"]
        set_attrs(target, {"streamae": meta,
                           "description": f"{count} {size}x{size} {channels} patches, "
                                          "normalised to [0.1, 0.9] (streamae patches)"},
                  storage_options)


def write_patches(out, *, images=None, builtin=False, size=8, count=10000, whiten_images=True,
                  channels="gray", seed=0, max_side=512, dtype="float32", overwrite=False,
                  run_options=None, echo=None, chunk_rows=None, scheduler=None,
                  storage_options=None):
    """Sample, normalise and write ``count`` patches to a Zarr array at ``out``.

    Parameters
    ----------
    out : str or os.PathLike
        Zarr array to create (local directory or fsspec URL).
    images : str or os.PathLike, optional
        Folder of images (any format Pillow reads, searched recursively).
    builtin : bool
        Use the built-in photographs instead (exactly one of ``images`` and
        ``builtin``).
    size : int
        Patch side, >= 2.
    count : int
        Number of patches, >= 1.
    whiten_images : bool
        1/f-whiten each image first (`whiten`), as the exercise's data is.
    channels : {"gray", "rgb"}
        Grey patches (size**2 values) or colour (3 * size**2).
    seed : int
        Seed of the sampler; the output depends only on it, the images and
        the parameters (not on ``chunk_rows`` or the scheduler).
    max_side : int
        Images whose longer side exceeds it are downscaled (Lanczos) to it
        first; 0 keeps full size. Camera photos at full size give nearly
        flat small patches, and cost memory.
    dtype : {"float32", "float64"}
    overwrite : bool
    run_options : RunOptions or dict, optional
        Where the tasks run (``scheduler``, ``workers``; a cluster's workers
        must see the images and TMPDIR), ``storage_options``, and
        ``chunk_rows``: rows per Zarr chunk, default about 16 MiB (see
        `default_chunk_rows`).
    echo : callable, optional
        Called with notes (files skipped).
    chunk_rows, scheduler, storage_options
        Deprecated: give them in ``run_options`` (a `FutureWarning`).

    Returns
    -------
    dict
        The metadata recorded in the store's ``streamae`` attribute.
    """
    options = with_legacy_options(run_options, "write_patches", chunk_rows=chunk_rows,
                                  scheduler=scheduler, storage_options=storage_options)
    size, count, seed = int(size), int(count), int(seed)
    _check_patch_options(size, count, seed, channels, dtype, max_side, images, builtin)
    check_writable(out, overwrite, options.storage_options, what="output store")
    source, names, skipped = _open_source(images, size, seed, channels, max_side,
                                          whiten_images)
    _note_skipped(echo, skipped)
    describe = functools.partial(_metadata, source, names, skipped, images, max_side,
                                 channels, count, whiten_images)
    return _normalise_and_write(source, out, count, dtype, describe, overwrite, options)


def _note_skipped(echo, skipped):
    """Tell ``echo`` (if given) which files were skipped as unreadable, if any."""
    if skipped and echo is not None:
        echo(f"note: skipped {len(skipped)} file(s) that are not readable images "
             f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''})")


def _normalise_and_write(source, out, count, dtype, describe, overwrite, options):
    """Pass 1: the patches' standard deviation; pass 2: clip, scale and write.

    ``describe(std, dtype, rows)`` gives the store's metadata, which is returned.
    """
    rows = min(count, int(options.chunk_rows or default_chunk_rows(
        count, source.width, np.dtype(dtype).itemsize)))
    runner = make_runner(options.scheduler, options.workers)
    with runner.session():
        std = patch_std(source, count, rows, runner)
        meta = describe(std, dtype, rows)
        _write_pass(source, out, count, rows, _CLIP_STDS * std, dtype, meta, overwrite, runner,
                    options.storage_options)
    return meta


def _check_patch_options(size, count, seed, channels, dtype, max_side, images, builtin):
    """ParameterError naming the first bad argument of `write_patches`."""
    if size < 2:
        raise ParameterError(f"patch size must be at least 2 (`size`), got {size}; "
                             "the exercise uses 8")
    if count < 1:
        raise ParameterError(f"the number of patches (`count`) must be >= 1, got {count}")
    if channels not in CHANNELS:
        raise ParameterError(f"channels must be 'gray' or 'rgb', got {channels!r}")
    if dtype not in ("float32", "float64"):
        raise ParameterError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if seed < 0:
        raise ParameterError(f"seed must be >= 0, got {seed}")
    if max_side < 0 or 0 < max_side < size:
        raise ParameterError(f"`max_side` must be 0 (no downscaling) or >= the patch size "
                             f"{size}, got {max_side}")
    if (images is None) == (not builtin):
        raise ParameterError("give exactly one image source: `images=DIR` or `builtin=True`")
