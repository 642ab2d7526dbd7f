"""Natural-image patch pipeline of the UFLDL sparse-autoencoder exercise.

The exercise trains on 8x8 patches cut from ``IMAGES.mat``: ten natural
images that Olshausen & Field whitened with a 1/f filter.  That file is not
redistributable here, so :func:`demo_patches` rebuilds an equivalent data set
from photographs bundled with scikit-image (no network access needed):

    builtin_images -> whiten_image -> sample_patches -> normalize_patches
"""

from __future__ import annotations

import functools

import numpy as np

# Photographs shipped inside the scikit-image wheel (``skimage/data/*.png|jpg``),
# so loading them never triggers a pooch download.  Text, logos, binary
# masks, synthetic test patterns, microscopy and astronomy images are left
# out: the exercise wants natural-scene statistics.
_BUILTIN_NAMES = ("camera", "astronaut", "coffee", "chelsea", "rocket", "grass", "gravel")

# Olshausen's make-IMAGES script: roll-off f0 = 0.4 * N, target variance 0.1.
_F0_FRACTION = 0.4
_TARGET_VARIANCE = 0.1


def _center_square(img: np.ndarray) -> np.ndarray:
    """Largest centred square crop of ``img`` with an even side."""
    side = min(img.shape[:2]) // 2 * 2
    top = (img.shape[0] - side) // 2
    left = (img.shape[1] - side) // 2
    return img[top : top + side, left : left + side]


def builtin_images() -> list[np.ndarray]:
    """Grayscale natural photographs bundled with scikit-image.

    Returns
    -------
    list of ndarray
        Seven float64 arrays of shape ``(N_i, N_i)`` with values in ``[0, 1]``
        (camera, astronaut, coffee, chelsea, rocket, grass, gravel), each the
        largest centred square with an even side ``N_i``.
    """
    import skimage.color
    import skimage.data
    import skimage.util

    out = []
    for name in _BUILTIN_NAMES:
        img = getattr(skimage.data, name)()
        # rgb2gray already returns float64 in [0, 1]; img_as_float does the
        # same for the uint8 grey images.
        img = skimage.color.rgb2gray(img) if img.ndim == 3 else skimage.util.img_as_float(img)
        out.append(np.ascontiguousarray(_center_square(img), dtype=np.float64))
    return out


def whiten_image(img: np.ndarray) -> np.ndarray:
    """Whiten a square image with Olshausen & Field's 1/f filter.

    With ``N`` the side, ``f = sqrt(fx**2 + fy**2)`` the radial frequency in
    cycles/image (``fx, fy`` in ``-N/2 .. N/2-1``) and ``f0 = 0.4 * N``::

        F   = fft2(img - mean(img))
        out = real(ifft2(F * f * exp(-(f / f0)**4)))
        out = out * sqrt(0.1) / std(out)

    The ramp ``f`` flattens the ~1/f amplitude spectrum of natural images;
    the ``exp(-(f/f0)**4)`` term rolls off the corner frequencies, where
    aliasing and noise live.  Olshausen scaled his whole image set to
    variance 0.1; here each image is scaled to variance 0.1 on its own, so
    images of different contrast contribute comparable patches.

    Parameters
    ----------
    img : ndarray, shape (N, N)
        Square grayscale image.

    Returns
    -------
    ndarray, shape (N, N)
        Whitened float64 image with zero mean and variance 0.1 (all zeros if
        ``img`` is constant).
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2 or img.shape[0] != img.shape[1]:
        raise ValueError(f"whiten_image needs a square 2-D image, got shape {img.shape}")
    n = img.shape[0]
    # fftfreq * n lists -N/2..N/2-1 in FFT order, i.e. fftshift(meshgrid(...))
    # of the MATLAB script, so no shifting is needed.
    k = np.fft.fftfreq(n) * n
    f = np.hypot(k[:, None], k[None, :])
    filt = f * np.exp(-((f / (_F0_FRACTION * n)) ** 4))
    out = np.fft.ifft2(np.fft.fft2(img - img.mean()) * filt).real
    std = out.std()
    return out * (np.sqrt(_TARGET_VARIANCE) / std) if std > 0 else out


def sample_patches(
    images, patch_size: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Cut random square patches out of a list of images.

    Each patch picks its image uniformly, then its top-left corner uniformly
    among all positions where the patch fits.  Patches are flattened in
    column-major (Fortran) order, ``patch.reshape(-1, order="F")``, like
    MATLAB's ``reshape(patch, [], 1)`` in the exercise, so element
    ``i + j * patch_size`` is row ``i``, column ``j``.

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

    which = rng.integers(len(images), size=count)
    # Exclusive upper bounds per patch: H - p + 1 and W - p + 1.
    heights = np.array([im.shape[0] - p + 1 for im in images])
    widths = np.array([im.shape[1] - p + 1 for im in images])
    rows = rng.integers(0, heights[which])
    cols = rng.integers(0, widths[which])

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
    difference of ``1 / (2 * p.size)`` in ``pstd``.

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
    pstd = 3.0 * float(np.std(p)) if p.size else 0.0
    # Flat input would divide 0 by 0; its centred value 0 maps to 0.5.
    p = np.clip(p, -pstd, pstd) / pstd if pstd > 0 else np.zeros_like(p)
    p = (p + 1.0) * 0.4 + 0.1
    return (p, pstd) if return_scale else p


@functools.lru_cache(maxsize=1)
def _whitened_builtin_images() -> tuple[np.ndarray, ...]:
    # Whitening ~3 MPixel of FFTs costs a fraction of a second; cache it and
    # freeze the arrays so no caller can corrupt the shared copy.
    out = tuple(whiten_image(im) for im in builtin_images())
    for im in out:
        im.flags.writeable = False
    return out


def demo_patches(count: int = 10000, patch_size: int = 8, seed: int = 0) -> np.ndarray:
    """Training data equivalent to the exercise's ``sampleIMAGES``.

    Bundled photographs -> :func:`whiten_image` -> :func:`sample_patches`
    with ``np.random.default_rng(seed)`` -> :func:`normalize_patches`.
    Deterministic for a given ``seed`` (and scikit-image's bundled images).

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
    return normalize_patches(sample_patches(_whitened_builtin_images(), patch_size, count, rng))
