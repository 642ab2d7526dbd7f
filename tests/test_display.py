import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image

from streamae._plots import filter_grid, save_filters


def _tiles(grid, k, h, w):
    cols = int(np.ceil(np.sqrt(k)))
    for i in range(k):
        r, c = divmod(i, cols)
        yield grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w]


def test_grid_shape_and_tile_scaling():
    W = np.random.default_rng(0).normal(size=(25, 64)) * np.arange(1, 26)[:, None]
    grid = filter_grid(W)
    assert grid.shape == (46, 46)
    assert grid.min() >= -1 and grid.max() <= 1
    for tile in _tiles(grid, 25, 8, 8):
        assert np.abs(tile).max() == pytest.approx(1.0)
    # Borders between and around tiles are black.
    assert_array_equal(grid[::9, :], -1)
    assert_array_equal(grid[:, ::9], -1)


def test_grid_column_major_and_unused_cells():
    W = np.arange(1.0, 1 + 3 * 4).reshape(3, 4)  # 3 filters of 2x2
    grid = filter_grid(W, center=False)
    assert grid.shape == (1 + 2 * 3, 1 + 2 * 3)  # cols = 2, rows = 2
    first = next(_tiles(grid, 3, 2, 2))
    assert_allclose(first, np.array([[1.0, 3.0], [2.0, 4.0]]) / 4)
    assert_array_equal(grid[4:6, 4:6], -1)  # 4th cell is empty


def test_grid_non_square_fallbacks():
    W = np.random.default_rng(1).normal(size=(4, 12))
    assert filter_grid(W).shape == (1 + 2 * 4, 1 + 2 * 5)  # 3x4 tiles
    assert filter_grid(W, patch_shape=(2, 6)).shape == (1 + 2 * 3, 1 + 2 * 7)
    prime = filter_grid(np.random.default_rng(2).normal(size=(4, 7)))
    assert prime.shape == (1 + 2 * 2, 1 + 2 * 8)  # 1x7 strips
    with pytest.raises(ValueError):
        filter_grid(W, patch_shape=(5, 5))


def test_zero_filter_is_grey():
    grid = filter_grid(np.zeros((1, 4)))
    assert_array_equal(grid[1:3, 1:3], 0)


def test_save_filters_png(tmp_path):
    W = np.random.default_rng(3).normal(size=(25, 64))
    out = save_filters(W, tmp_path / "f.png", scale=3)
    assert out == tmp_path / "f.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert im.size == (46 * 3, 46 * 3)  # PIL size is (width, height)
        pix = np.asarray(im)
    assert_array_equal(pix[:3, :3], 0)  # border pixel, enlarged
    grid = filter_grid(W)
    assert_array_equal(pix[::3, ::3], np.round((grid + 1) * 127.5).astype(np.uint8))
