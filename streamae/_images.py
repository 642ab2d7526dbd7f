"""Images in: the built-in photographs, a folder of image files, 1/f whitening.

The UFLDL exercise trains on patches of ``IMAGES.mat``: ten natural images
that Olshausen & Field whitened with a 1/f filter. That file is not
redistributable, so streamae uses photographs bundled with scikit-image (no
network access needed) or any folder of images Pillow reads, whitened with
the same filter. Cutting and normalising patches is `streamae._patches`.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np

from ._errors import DataError

# Photographs shipped inside the scikit-image wheel (``skimage/data/*.png|jpg``),
# so loading them never triggers a pooch download.  Text, logos, binary
# masks, synthetic test patterns, microscopy and astronomy images are left
# out: the exercise wants natural-scene statistics.
BUILTIN_NAMES = ("camera", "astronaut", "coffee", "chelsea", "rocket", "grass", "gravel")
# The colour photographs among them.
BUILTIN_COLOUR = ("astronaut", "coffee", "chelsea", "rocket")
CHANNELS = ("gray", "rgb")

# Olshausen's make-IMAGES script: roll-off f0 = 0.4 of the sampling rate
# (0.4 * N cycles per image of side N), target variance 0.1.
WHITEN_F0 = 0.4
WHITEN_VARIANCE = 0.1
# Same luminance weights as skimage.color.rgb2gray (ITU-R 709), so folder
# images and the built-in ones are turned grey alike.
_GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], np.float32)


# ---------------------------------------------------------------- built-in photographs

def _center_square(img: np.ndarray) -> np.ndarray:
    """Largest centred square crop of ``img`` with an even side."""
    side = min(img.shape[:2]) // 2 * 2
    top = (img.shape[0] - side) // 2
    left = (img.shape[1] - side) // 2
    return img[top : top + side, left : left + side]


def builtin_images(channels: str = "gray", dtype=np.float64):
    """The natural photographs bundled with scikit-image, values in [0, 1].

    Grey: seven images (camera, astronaut, coffee, chelsea, rocket, grass,
    gravel), turned grey by ``skimage.color.rgb2gray`` in float64, then cast
    to ``dtype``. Colour: the four colour ones (astronaut, coffee, chelsea,
    rocket), the 8-bit values cast to ``dtype`` and divided by 255. Each is
    the largest centred square with an even side.

    Parameters
    ----------
    channels : {"gray", "rgb"}
    dtype : dtype, default float64

    Returns
    -------
    images : list of ndarray, shapes (N_i, N_i) or (N_i, N_i, 3)
    names : list of str
    """
    import skimage.color
    import skimage.data
    import skimage.util

    names = BUILTIN_NAMES if channels == "gray" else BUILTIN_COLOUR
    out = []
    for name in names:
        img = getattr(skimage.data, name)()
        if channels == "rgb":
            out.append(_center_square(img).astype(dtype) / 255)
            continue
        # rgb2gray already returns float64 in [0, 1]; img_as_float does the
        # same for the uint8 grey images.
        img = skimage.color.rgb2gray(img) if img.ndim == 3 else skimage.util.img_as_float(img)
        grey = np.ascontiguousarray(_center_square(img), dtype=np.float64)
        out.append(grey.astype(dtype, copy=False))
    return out, list(names)


@functools.lru_cache(maxsize=1)
def whitened_builtin_images() -> tuple[np.ndarray, ...]:
    """The grey built-in photographs, each whitened by `whiten_image` (read-only).

    Whitening ~3 MPixel of FFTs costs a fraction of a second, so the result
    is cached; the arrays are frozen so no caller can corrupt the shared copy.
    """
    out = tuple(whiten_image(im) for im in builtin_images()[0])
    for im in out:
        im.flags.writeable = False
    return out


# ---------------------------------------------------------------- whitening

def _whiten(img: np.ndarray, unit) -> np.ndarray:
    """1/f whitening with frequencies in cycles per ``1 / unit`` of a pixel.

    ``unit`` is 1 (cycles per pixel) or the side N of a square image (cycles
    per image); the filter differs only by that constant factor, which the
    variance scaling removes, but the rounding follows it.
    """
    img = np.asarray(img, np.float64)
    planes = img[..., None] if img.ndim == 2 else img
    fy = np.fft.fftfreq(planes.shape[0]) * unit
    fx = np.fft.fftfreq(planes.shape[1]) * unit
    f = np.hypot(fy[:, None], fx[None, :])
    filt = f * np.exp(-((f / (WHITEN_F0 * unit)) ** 4))
    out = np.empty_like(planes)
    for c in range(planes.shape[2]):
        plane = planes[..., c]
        out[..., c] = np.fft.ifft2(np.fft.fft2(plane - plane.mean()) * filt).real
    std = out.std()
    if std > 0:
        out *= math.sqrt(WHITEN_VARIANCE) / std
    return out.reshape(img.shape)


def whiten(img: np.ndarray) -> np.ndarray:
    """1/f whitening of a grey ``(H, W)`` or colour ``(H, W, C)`` image of any shape.

    Olshausen & Field's filter with ``f = hypot(fy, fx)`` the radial
    frequency in cycles per pixel (``fftfreq(H)``, ``fftfreq(W)``)::

        F   = fft2(channel - mean(channel))
        out = real(ifft2(F * f * exp(-(f / 0.4)**4)))

    The ramp ``f`` flattens the ~1/f amplitude spectrum of natural images;
    the ``exp(-(f/f0)**4)`` term rolls off the corner frequencies, where
    aliasing and noise live. The whole image (all channels together, so
    colours keep their balance) is then scaled to variance 0.1. Olshausen
    scaled his whole image set; here each image is scaled on its own, so
    images of different contrast contribute comparable patches.

    Returns
    -------
    ndarray, same shape as ``img``, float64
        Zero mean per channel, variance 0.1 (all zeros if ``img`` is flat).
    """
    if np.ndim(img) not in (2, 3):
        raise ValueError(f"whiten needs an (H, W) or (H, W, C) image, got shape "
                         f"{np.shape(img)}")
    return _whiten(img, 1)


def whiten_image(img: np.ndarray) -> np.ndarray:
    """`whiten` of a square grey image, as the exercise's make-IMAGES script does it.

    Frequencies in cycles per image (``fftfreq(N) * N``, roll-off
    ``f0 = 0.4 * N``): the same filter as `whiten` up to the factor N, so
    the result equals ``whiten(img)`` up to rounding. The demo's patches
    are cut from images whitened this way.

    Parameters
    ----------
    img : ndarray, shape (N, N)

    Returns
    -------
    ndarray, shape (N, N)
        float64 with zero mean and variance 0.1 (all zeros if ``img`` is
        constant).
    """
    shape = np.shape(img)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"whiten_image needs a square 2-D image, got shape {shape}")
    return _whiten(img, shape[0])


# ---------------------------------------------------------------- image files

def _to_channels(rgb: np.ndarray, channels: str) -> np.ndarray:
    return rgb @ _GREY_WEIGHTS if channels == "gray" else rgb


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
                        "give a folder of images (JPEG, PNG, TIFF, ...) or use `builtin=True`")
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
                        "files there, or use `builtin=True` for the built-in photographs")
