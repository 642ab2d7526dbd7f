import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from streamae._images import builtin_images, whiten_image
from streamae._patches import demo_patches, normalize_patches, sample_patches


def _reference_normalize(x):
    # Straight transcription of the exercise's normalizeData.m (rows = patches).
    x = x - x.mean(axis=1)[:, None]
    pstd = 3 * x.std()
    x = np.maximum(np.minimum(x, pstd), -pstd) / pstd
    return (x + 1) * 0.4 + 0.1


def _radial_power(img):
    n = img.shape[0]
    power = np.abs(np.fft.fft2(img - img.mean())) ** 2
    k = np.fft.fftfreq(n) * n
    r = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
    return np.bincount(r.ravel(), power.ravel()) / np.bincount(r.ravel())


def test_builtin_images_are_square_grey_unit_range():
    imgs = builtin_images()[0]
    assert len(imgs) >= 5
    for im in imgs:
        assert im.dtype == np.float64 and im.ndim == 2
        assert im.shape[0] == im.shape[1] and im.shape[0] % 2 == 0
        assert 0.0 <= im.min() and im.max() <= 1.0 and im.std() > 0.05


def test_normalize_matches_reference_and_range():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(50, 16))
    x[0, 0] = 100.0  # force clipping on both sides
    x[1, 0] = -100.0
    out, pstd = normalize_patches(x, return_scale=True)
    assert out.dtype == np.float64 and out.shape == x.shape
    assert_allclose(out, _reference_normalize(x), rtol=0, atol=1e-15)
    assert out.min() >= 0.1 and out.max() <= 0.9
    assert out.min() == pytest.approx(0.1) and out.max() == pytest.approx(0.9)
    centred = x - x.mean(axis=1, keepdims=True)
    assert pstd == pytest.approx(3 * centred.std())


def test_normalize_removes_each_patch_mean():
    x = np.random.default_rng(2).normal(size=(20, 9)) * 0.01
    x += np.arange(20)[:, None]  # very different per-patch offsets
    out = normalize_patches(x)
    # Small values are never clipped, so every row mean maps exactly to 0.5.
    assert_allclose(out.mean(axis=1), 0.5, atol=1e-12)


def test_normalize_flat_input_is_grey_without_warning():
    assert_array_equal(normalize_patches(np.full((3, 4), 7.0)), 0.5)


def test_sample_patches_column_major_slice():
    img = np.arange(6 * 7, dtype=float).reshape(6, 7)  # every pixel unique
    patches = sample_patches([img], 3, 40, np.random.default_rng(0))
    assert patches.shape == (40, 9)
    for p in patches:
        r, c = divmod(int(p[0]), 7)  # top-left value locates the patch
        assert_array_equal(p, img[r : r + 3, c : c + 3].reshape(-1, order="F"))
    # Column-major: the second element is one row down, not one column right.
    assert_array_equal(patches[:, 1] - patches[:, 0], 7.0)


def test_sample_patches_uses_all_images_and_positions():
    imgs = [np.zeros((4, 4)), np.ones((5, 3))]
    p = sample_patches(imgs, 2, 2000, np.random.default_rng(3))
    frac_second = (p[:, 0] == 1).mean()
    assert 0.4 < frac_second < 0.6
    pos = np.arange(16.0).reshape(4, 4)
    tl = sample_patches([pos], 2, 2000, np.random.default_rng(4))[:, 0]
    assert set(np.unique(tl)) == {0, 1, 2, 4, 5, 6, 8, 9, 10}


@pytest.mark.parametrize(
    ("images", "size"),
    [([np.zeros((10, 10)), np.zeros((10, 7))], 8), ([np.zeros((10, 10))], 1)],
)
def test_sample_patches_errors(images, size):
    with pytest.raises(ValueError):
        sample_patches(images, size, 5, np.random.default_rng(0))


def test_whiten_zero_mean_fixed_variance():
    img = builtin_images()[0][0]
    w = whiten_image(img)
    assert w.shape == img.shape and w.dtype == np.float64
    assert abs(w.mean()) < 1e-12
    assert w.var() == pytest.approx(0.1)
    with pytest.raises(ValueError):
        whiten_image(np.zeros((8, 6)))


def test_whitening_flattens_spectrum():
    img = builtin_images()[0][0]
    n = img.shape[0]
    band = slice(n // 32, n // 4)  # mid frequencies, below the f0 = 0.4 N roll-off
    logf = np.log10(np.arange(n // 2 + 1)[band])
    raw = np.log10(_radial_power(img)[band])
    white = np.log10(_radial_power(whiten_image(img))[band])
    # Raw power falls roughly like f^-2..f^-3; the f ramp lifts the slope by 2.
    raw_slope, white_slope = np.polyfit(logf, raw, 1)[0], np.polyfit(logf, white, 1)[0]
    assert raw_slope < -2 and abs(white_slope) < 1
    assert white.std() < raw.std() / 2


def test_demo_patches_shape_range_determinism():
    a = demo_patches(count=500, seed=0)
    assert a.shape == (500, 64) and a.dtype == np.float64
    assert a.min() >= 0.1 and a.max() <= 0.9
    assert_array_equal(a, demo_patches(count=500, seed=0))
    assert not np.array_equal(a, demo_patches(count=500, seed=1))
    assert demo_patches(count=10, patch_size=5).shape == (10, 25)
