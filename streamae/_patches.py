"""``streamae patches``: random image patches, normalised as the UFLDL exercise
does, streamed into a chunked Zarr array.

Pipeline::

    images (a folder Pillow reads, or the built-in photographs)
      -> grey or RGB floats in [0, 1], longer side at most ``max_side``
      -> optional 1/f whitening, per image      (once; a folder's images go one
                                                 at a time to a memory-mapped
                                                 scratch file in TMPDIR)
      -> pass 1, per chunk: draw positions, cut, remove each patch's mean,
         sum of squares                                         -> global std
      -> pass 2, per chunk: the same patches again, clipped at +/- 3 std,
         rescaled to [0.1, 0.9], written                        -> Zarr chunk

Memory is one image at a time while packing, then a few chunks in flight
(the packed images are a memory-mapped file, paged in as patches are cut):
independent of the number of patches and of images.

Sampling is deterministic and independent of the chunking: patch ``k``
belongs to *sampling block* ``k // SAMPLING_BLOCK`` whose draws come from
``numpy.random.default_rng([seed, block])``. Within a block, as in
`streamae._images.sample_patches`, the image of each patch is drawn
uniformly, then its top-left corner uniformly among the positions where
it fits.

Layout of a patch row: channel blocks (R, G, B for colour), each the
``size x size`` patch flattened column-major (MATLAB order, like the
exercise's ``reshape(patch, [], 1)`` and its ``displayColorNetwork``), so
value ``c * size**2 + i + j * size`` is channel ``c``, row ``i``, column ``j``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
from numba import njit

from ._errors import DataError, ParameterError
from ._output import default_chunk_rows, open_for_writing, set_attrs, staged_array
from ._validation import check_int

SAMPLING_BLOCK = 4096
CHANNELS = ("gray", "rgb")
# Same luminance weights as skimage.color.rgb2gray (ITU-R 709), so folder
# images and the built-in ones are turned grey alike.
_GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], np.float32)
# Olshausen's filter: roll-off at 0.4 of the sampling rate, variance 0.1.
_F0_CYCLES_PER_PIXEL = 0.4
_TARGET_VARIANCE = 0.1
# The colour photographs among the built-in ones (see streamae._images).
_BUILTIN_COLOUR = ("astronaut", "coffee", "chelsea", "rocket")
_CLIP_STDS = 3.0


# ---------------------------------------------------------------- images

def whiten(img: np.ndarray) -> np.ndarray:
    """1/f whitening of a grey ``(H, W)`` or colour ``(H, W, C)`` image of any shape.

    The filter of `streamae._images.whiten_image` with frequencies in
    cycles per pixel, so it also applies to rectangular images: with
    ``f = hypot(fy, fx)`` (``fftfreq(H)``, ``fftfreq(W)``)::

        F   = fft2(channel - mean(channel))
        out = real(ifft2(F * f * exp(-(f / 0.4)**4)))

    and the whole image (all channels together, so colours keep their
    balance) is scaled to variance 0.1. For a square image this equals
    ``whiten_image`` up to rounding (the two filters differ by the constant
    factor N, which the variance scaling removes).

    Returns
    -------
    ndarray, same shape as ``img``, float64
        Zero mean per channel, variance 0.1 (all zeros if ``img`` is flat).
    """
    img = np.asarray(img, np.float64)
    if img.ndim not in (2, 3):
        raise ValueError(f"whiten needs an (H, W) or (H, W, C) image, got shape {img.shape}")
    planes = img[..., None] if img.ndim == 2 else img
    fy = np.fft.fftfreq(planes.shape[0])
    fx = np.fft.fftfreq(planes.shape[1])
    f = np.hypot(fy[:, None], fx[None, :])
    filt = f * np.exp(-((f / _F0_CYCLES_PER_PIXEL) ** 4))
    out = np.empty_like(planes)
    for c in range(planes.shape[2]):
        plane = planes[..., c]
        out[..., c] = np.fft.ifft2(np.fft.fft2(plane - plane.mean()) * filt).real
    std = out.std()
    if std > 0:
        out *= math.sqrt(_TARGET_VARIANCE) / std
    return out.reshape(img.shape)


def _to_channels(rgb: np.ndarray, channels: str) -> np.ndarray:
    return rgb @ _GREY_WEIGHTS if channels == "gray" else rgb


def builtin_images(channels: str = "gray") -> tuple[list[np.ndarray], list[str]]:
    """The built-in photographs (from scikit-image) as float32 in [0, 1].

    Grey: the seven images of `streamae._images.builtin_images` (centred
    squares). Colour: the four colour ones among them (astronaut, coffee,
    chelsea, rocket), centred squares too.

    Returns
    -------
    images : list of ndarray, shapes (N, N) or (N, N, 3)
    names : list of str
    """
    from . import _images

    if channels == "gray":
        return ([im.astype(np.float32) for im in _images.builtin_images()],
                list(_images._BUILTIN_NAMES))
    import skimage.data

    out = []
    for name in _BUILTIN_COLOUR:
        img = getattr(skimage.data, name)()
        out.append(_images._center_square(img).astype(np.float32) / 255)
    return out, list(_BUILTIN_COLOUR)


def _read_image(path: Path, channels: str, max_side: int) -> np.ndarray:
    """One image file as float32 in [0, 1]: (H, W) grey or (H, W, 3) colour."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if max_side:
            # JPEG decoders can shrink by 1/2, 1/4, 1/8 while decoding: much
            # faster for camera photos, and the result is still >= max_side.
            im.draft("RGB", (max_side, max_side))
        im = ImageOps.exif_transpose(im)
        if max_side and max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        if im.mode.startswith("I;16"):  # 16-bit grey PNG/TIFF
            grey = np.asarray(im, np.float32) / 65535
            return grey if channels == "gray" else np.repeat(grey[..., None], 3, axis=2)
        rgb = np.asarray(im.convert("RGB"), np.float32) / 255
    return _to_channels(rgb, channels)


def folder_images(folder, channels: str = "gray", max_side: int = 512):
    """Every image Pillow can read under ``folder`` (recursively, sorted by path).

    Hidden files and folders are ignored; files Pillow cannot read are
    skipped and listed. Holds every image in memory: `write_patches` uses
    `iter_folder_images` instead.

    Returns
    -------
    images : list of ndarray, float32, (H, W) or (H, W, 3)
    names : list of str
        Paths relative to ``folder``.
    skipped : list of str
        Files that are not readable images.

    Raises
    ------
    DataError
        If ``folder`` is not a directory or holds no readable image.
    """
    skipped = []
    pairs = list(iter_folder_images(folder, channels, max_side, skipped))
    return [im for _, im in pairs], [name for name, _ in pairs], skipped


def iter_folder_images(folder, channels: str = "gray", max_side: int = 512, skipped=None):
    """(name, image) for every image Pillow can read under ``folder``, one at a time.

    As `folder_images`, without holding more than one image; the names of
    files that are not readable images are appended to ``skipped``.
    """
    from PIL import UnidentifiedImageError

    skipped = [] if skipped is None else skipped
    root = Path(os.fspath(folder))
    if not root.is_dir():
        raise DataError(f"image folder '{folder}' does not exist or is not a directory; "
                        "give a folder of images (JPEG, PNG, TIFF, ...) or use --builtin")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".")
                                              for part in p.relative_to(root).parts))
    found = 0
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            image = _read_image(path, channels, max_side)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            skipped.append(rel)
            continue
        found += 1
        yield rel, image
    if not found:
        listed = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        what = f"{len(files)} file(s), none an image Pillow can read ({listed})" if files \
            else "it is empty"
        raise DataError(f"no readable images in '{folder}': {what}; put JPEG, PNG, TIFF, ... "
                        "files there, or use --builtin for the built-in photographs")


def _require_patch_fits(im, name, size, max_side):
    """DataError if image ``im`` is smaller than a ``size`` x ``size`` patch."""
    if min(im.shape[:2]) < size:
        shrunk = max_side and max(im.shape[:2]) == max_side
        raise DataError(
            f"image '{name}' is {im.shape[1]}x{im.shape[0]} pixels"
            f"{' after downscaling to --max-side ' + str(max_side) if shrunk else ''}, "
            f"smaller than the {size}x{size} patches; remove it or use --size "
            f"{min(im.shape[:2])} or less" + (", or raise --max-side" if shrunk else ""))


# ---------------------------------------------------------------- sampling

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
                        "--max-side") from None
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
        which = rng.integers(len(self.starts), size=SAMPLING_BLOCK)
        rows = rng.integers(0, self.heights[which] - self.size + 1)
        cols = rng.integers(0, self.widths[which] - self.size + 1)
        return which, rows, cols

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

def _chunk_stats(source, start, stop):
    _, row_sum, row_sq = source.patches(start, stop, dtype=None)
    return float(np.sum(row_sum)), float(np.sum(row_sq))


def _chunk_write(source, start, stop, pstd, target, dtype, storage_options):
    out, _, _ = source.patches(start, stop, pstd=pstd, dtype=dtype)
    open_for_writing(target, storage_options)[start:stop] = out
    return stop - start


def _chunk_bounds(count, chunk_rows):
    return [(s, min(s + chunk_rows, count)) for s in range(0, count, chunk_rows)]


def patch_std(source, count, chunk_rows, scheduler="threads"):
    """Pass 1: standard deviation of all values of the centred patches.

    ``np.std`` of the whole (count, width) array of centred patches
    (ddof=0), from per-chunk sums pooled exactly with ``math.fsum``.
    """
    src = dask.delayed(source, name=f"patch-source-{id(source)}")
    parts = dask.compute(*[dask.delayed(_chunk_stats, pure=False)(src, s, e)
                           for s, e in _chunk_bounds(count, chunk_rows)],
                         scheduler=scheduler)
    n = count * source.width
    mean = math.fsum(p[0] for p in parts) / n
    var = math.fsum(p[1] for p in parts) / n - mean * mean
    return math.sqrt(max(var, 0.0))


def write_patches(out, *, images=None, builtin=False, size=8, count=10000, whiten_images=True,
                  channels="gray", seed=0, chunk_rows=None, max_side=512, dtype="float32",
                  overwrite=False, scheduler="threads", storage_options=None, echo=None):
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
    chunk_rows : int, optional
        Rows per Zarr chunk; default about 16 MiB (see `default_chunk_rows`).
    max_side : int
        Images whose longer side exceeds it are downscaled (Lanczos) to it
        first; 0 keeps full size. Camera photos at full size give nearly
        flat small patches, and cost memory.
    dtype : {"float32", "float64"}
    overwrite : bool
    scheduler : str
        Dask scheduler of the passes ("threads" or "synchronous").

    Returns
    -------
    dict
        The metadata recorded in the store's ``streamae`` attribute.
    """
    echo = echo or (lambda *a, **k: None)
    size, count, seed = int(size), int(count), int(seed)
    if size < 2:
        raise ParameterError(f"patch size must be at least 2 (--size), got {size}; "
                             "the exercise uses 8")
    if count < 1:
        raise ParameterError(f"the number of patches (--count) must be >= 1, got {count}")
    if channels not in CHANNELS:
        raise ParameterError(f"channels must be 'gray' or 'rgb', got {channels!r}")
    if dtype not in ("float32", "float64"):
        raise ParameterError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if seed < 0:
        raise ParameterError(f"seed must be >= 0, got {seed}")
    if max_side < 0 or 0 < max_side < size:
        raise ParameterError(f"--max-side must be 0 (no downscaling) or >= the patch size "
                             f"{size}, got {max_side}")
    check_int("chunk_rows", chunk_rows, 1, allow_none=True)
    if (images is None) == (not builtin):
        raise ParameterError("give exactly one image source: --images DIR or --builtin")

    from ._store import check_writable
    check_writable(out, overwrite, storage_options, what="output store")

    if builtin:
        imgs, names = builtin_images(channels)
        skipped, source_name = [], "builtin (scikit-image photographs)"
        if whiten_images:
            imgs = [whiten(im).astype(np.float32) for im in imgs]
        source = PatchSource.from_images(imgs, size, seed, names)
        del imgs
    else:
        source, names, skipped = PatchSource.from_folder(images, size, seed, channels,
                                                         max_side, whiten_images)
        source_name = os.path.abspath(os.fspath(images))
    if skipped:
        echo(f"note: skipped {len(skipped)} file(s) that are not readable images "
             f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''})")
    width = source.width
    itemsize = np.dtype(dtype).itemsize
    rows = int(chunk_rows or default_chunk_rows(count, width, itemsize))
    rows = min(rows, count)

    std = patch_std(source, count, rows, scheduler)
    pstd = _CLIP_STDS * std
    meta = {
        "kind": "patches",
        "source": source_name,
        "images": names,
        "n_images": len(names),
        "skipped": skipped,
        "max_side": int(max_side) if not builtin else None,
        "channels": channels,
        "patch_size": size,
        "count": count,
        "width": width,
        "layout": ("channel blocks (R, G, B), each patch_size x patch_size column-major"
                   if channels == "rgb" else "patch_size x patch_size, column-major"),
        "whiten": bool(whiten_images),
        "whitening": ({"filter": "f * exp(-(f / f0)**4), f in cycles per pixel",
                       "f0": _F0_CYCLES_PER_PIXEL, "variance": _TARGET_VARIANCE}
                      if whiten_images else None),
        "seed": seed,
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
    src = dask.delayed(source, name=f"patch-source-{id(source)}")
    with staged_array(out, shape=(count, width), chunks=(rows, width), dtype=dtype,
                      overwrite=overwrite, storage_options=storage_options,
                      what="output store") as target:
        tasks = [dask.delayed(_chunk_write, pure=False)(src, s, e, pstd, target,
                                                        np.dtype(dtype), storage_options)
                 for s, e in _chunk_bounds(count, rows)]
        dask.compute(*tasks, scheduler=scheduler)
        set_attrs(target, {"streamae": meta,
                           "description": f"{count} {size}x{size} {channels} patches, "
                                          "normalised to [0.1, 0.9] (streamae patches)"},
                  storage_options)
    return meta
