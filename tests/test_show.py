"""streamae show: valid PNG pictures of the expected sizes."""

import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image

from streamae import OutputExistsError, SparseAutoencoder
from streamae._plots import (
    CHART_SIZE,
    auto_scale,
    default_out,
    filter_grid,
    filter_image,
    infer_channels,
    show,
)
from streamae.cli import main


def _png(path):
    with Image.open(path) as im:
        im.verify()  # raises on a damaged file
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.copy()


@pytest.fixture
def trained(rng, tmp_path):
    X = rng.uniform(0.1, 0.9, size=(400, 64))
    model = SparseAutoencoder(n_hidden=10, rho=0.05, dtype="float64", random_state=1,
                              max_iter=5)
    model.fit(X)
    model.save(tmp_path / "m.zarr")
    return model


def test_show_writes_three_pngs(trained, tmp_path):
    written = show(str(tmp_path / "m.zarr"))
    out = tmp_path / "m-pictures"
    assert set(written) == {"filters.png", "cost.png", "rho_hat.png"}
    assert all(p.parent == out for p in written.values())
    # 10 filters of 8x8: a 4 x 3 grid of 9-pixel cells plus a border, 8 px per weight.
    filters = _png(out / "filters.png")
    assert filters.mode == "L" and filters.size == ((1 + 4 * 9) * 8, (1 + 3 * 9) * 8)
    for name in ("cost.png", "rho_hat.png"):
        chart = _png(out / name)
        assert chart.size == CHART_SIZE
        assert np.asarray(chart.convert("L")).std() > 10  # not blank
    with pytest.raises(OutputExistsError, match="already exists"):
        show(str(tmp_path / "m.zarr"))
    show(str(tmp_path / "m.zarr"), overwrite=True)


def test_filter_picture_grey_pixels(trained):
    img = filter_image(trained.W1_, scale=1)
    assert img.dtype == np.uint8 and img.shape == (1 + 3 * 9, 1 + 4 * 9)
    assert_array_equal(img[0], 0) and img.max() == 255  # black border, full range


def test_colour_filters(tmp_path, rng):
    p = 4
    W = rng.normal(size=(5, 3 * p * p))
    assert infer_channels(3 * p * p) == "rgb" and infer_channels(64) == "gray"
    assert infer_channels(784) == "gray" and infer_channels(12 * 12 * 3) == "rgb"
    grid = filter_grid(W, channels="rgb")
    assert grid.shape == (1 + 2 * (p + 1), 1 + 3 * (p + 1), 3)
    A = W - W.mean()
    first = A[0] / np.abs(A[0]).max()
    # Channel c, row i, column j of tile 0 is value c*p*p + i + j*p (column-major blocks).
    for c in range(3):
        assert_allclose(grid[1:1 + p, 1:1 + p, c], first[c * p * p:(c + 1) * p * p]
                        .reshape(p, p, order="F"))
    model = SparseAutoencoder.from_weights(W, np.zeros(5), W.T.copy(), np.zeros(3 * p * p))
    written = show(model, tmp_path / "pics")
    assert set(written) == {"filters.png"}  # no history, no rho_hat
    im = _png(written["filters.png"])
    scale = auto_scale(grid.shape)
    assert im.mode == "RGB" and im.size == (grid.shape[1] * scale, grid.shape[0] * scale)


def test_non_square_width_falls_back(tmp_path, rng):
    W = rng.normal(size=(6, 10))  # 10 inputs: 2x5 tiles
    img = filter_image(W, scale=2)
    assert img.shape == ((1 + 2 * 3) * 2, (1 + 3 * 6) * 2)
    img = filter_image(W, patch_shape=(5, 2), scale=1)
    assert img.shape == (1 + 2 * 6, 1 + 3 * 3)
    prime = filter_image(rng.normal(size=(4, 7)), scale=1)
    assert prime.shape == (1 + 2 * 2, 1 + 2 * 8)  # 1x7 strips


def test_cli(trained, tmp_path, capsys):
    model = str(tmp_path / "m.zarr")
    assert main(["show", model, "--out", str(tmp_path / "p"), "--scale", "3"]) == 0
    assert "filters.png" in capsys.readouterr().out
    assert _png(tmp_path / "p" / "filters.png").size == ((1 + 4 * 9) * 3, (1 + 3 * 9) * 3)
    assert main(["show", model, "--out", str(tmp_path / "p")]) == 2
    assert main(["show", model, "--out", str(tmp_path / "q"), "--patch-shape", "8by8"]) == 2
    assert main(["show", str(tmp_path / "none.zarr")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("streamae: error:") for line in err)
    assert default_out("a/model.zarr") == "a/model-pictures"


@pytest.mark.parametrize("shape", ["0x8", "8x8x1", "8by8"])
def test_bad_patch_shape_is_one_line_under_python_O(trained, tmp_path, shape):
    """The check holds with assertions stripped (``python -O``): one line, exit 2."""
    run = subprocess.run([sys.executable, "-O", "-m", "streamae.cli", "show",
                          str(tmp_path / "m.zarr"), "--out", str(tmp_path / "p"),
                          "--patch-shape", shape], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        f"streamae: error: --patch-shape must look like 8x8 (height x width), got {shape!r}"]
    assert not (tmp_path / "p").exists()
