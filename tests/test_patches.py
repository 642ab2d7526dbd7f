"""streamae patches: sampling, normalisation, streaming statistics, errors."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image

from streamae import DataError, OutputExistsError, ParameterError
from streamae._cluster import Runner
from streamae._images import builtin_images, folder_images, whiten, whiten_image
from streamae._patches import (
    SAMPLING_BLOCK,
    PatchSource,
    normalize_patches,
    patch_std,
    write_patches,
)
from streamae.cli import main


@pytest.fixture
def photo_dir(tmp_path):
    """Three small 'photos' (smooth random fields, two formats, one rectangular)
    in a folder with a subfolder, a non-image file and a hidden file."""
    rng = np.random.default_rng(7)
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for name, (h, w) in (("a.png", (40, 56)), ("sub/b.jpg", (48, 48)), ("c.tif", (33, 60))):
        noise = rng.normal(size=(h, w, 3)).cumsum(axis=0).cumsum(axis=1)
        noise = (noise - noise.min()) / np.ptp(noise) * 255
        Image.fromarray(noise.astype(np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"junk")
    return root


def _read(path):
    z = zarr.open_array(str(path), mode="r")
    return z[...], dict(z.attrs)["streamae"], z


def _reference(images, size, seed, count):
    """The same patches cut by NumPy slicing and normalised by normalize_patches."""
    source = PatchSource.from_images(images, size, seed)
    which, rows, cols = source.positions(0, count)
    raw = []
    for k, r, c in zip(which, rows, cols, strict=True):
        im = images[k] if images[k].ndim == 3 else images[k][..., None]
        tile = im[r:r + size, c:c + size, :].astype(np.float64)
        raw.append(np.concatenate([tile[..., ch].reshape(-1, order="F")
                                   for ch in range(tile.shape[2])]))
    return normalize_patches(np.array(raw), return_scale=True)


def test_builtin_patches_match_exercise_normalisation(tmp_path):
    count = 3000
    meta = write_patches(tmp_path / "p.zarr", builtin=True, count=count, seed=3,
                         dtype="float64",
                         run_options={"chunk_rows": 700, "scheduler": "synchronous"})
    data, attrs, z = _read(tmp_path / "p.zarr")
    assert data.shape == (count, 64) and z.chunks == (700, 64) and data.dtype == np.float64
    assert data.min() >= 0.1 and data.max() <= 0.9
    # +/- 3 std clips some values at both ends.
    assert data.min() == pytest.approx(0.1) and data.max() == pytest.approx(0.9)
    images = [whiten(im).astype(np.float32) for im in builtin_images("gray", np.float32)[0]]
    expected, pstd = _reference(images, 8, 3, count)
    assert_allclose(data, expected, rtol=0, atol=1e-12)
    norm = attrs["normalization"]
    assert norm["clip"] == pytest.approx(pstd, rel=1e-12)
    assert norm["std"] == pytest.approx(pstd / 3, rel=1e-12)
    assert norm["range"] == [0.1, 0.9] and norm["clip_stds"] == 3.0
    assert attrs == meta
    for key, value in (("patch_size", 8), ("count", count), ("seed", 3), ("whiten", True),
                       ("channels", "gray"), ("n_images", 7), ("width", 64)):
        assert attrs[key] == value


def test_deterministic_and_independent_of_chunking(tmp_path):
    kw = dict(builtin=True, size=6, count=2 * SAMPLING_BLOCK + 123, seed=11)
    write_patches(tmp_path / "a.zarr", run_options={"chunk_rows": 1000}, **kw)
    write_patches(tmp_path / "b.zarr", run_options={"chunk_rows": 1000,
                                                    "scheduler": "synchronous"}, **kw)
    write_patches(tmp_path / "c.zarr", run_options={"chunk_rows": SAMPLING_BLOCK + 1}, **kw)
    write_patches(tmp_path / "d.zarr", **{**kw, "seed": 12})
    a, b, c, d = (_read(tmp_path / f"{n}.zarr")[0] for n in "abcd")
    assert_array_equal(a, b)
    # Same patches; only the summation order of the std differs.
    assert_allclose(a, c, rtol=1e-6)
    assert not np.allclose(a, d)


def test_streaming_std_is_numpy_std_over_all_values():
    images = [whiten(im).astype(np.float32) for im in builtin_images("gray", np.float32)[0]]
    source = PatchSource.from_images(images, 8, 0)
    count = 5000
    centred, _, _ = source.patches(0, count)
    with Runner("synchronous").session() as runner:
        for rows in (count, 999, 64):
            assert patch_std(source, count, rows, runner) == pytest.approx(
                np.std(centred), rel=1e-12)


def test_whiten_matches_square_exercise_filter_and_handles_rectangles():
    img = builtin_images()[0][0]
    assert_allclose(whiten(img), whiten_image(img), atol=1e-12)
    rect = img[:200, :300]
    w = whiten(rect)
    assert w.shape == rect.shape
    assert abs(w.mean()) < 1e-12 and w.var() == pytest.approx(0.1)
    colour = np.stack([rect, rect[::-1], rect[:, ::-1]], axis=2)
    wc = whiten(colour)
    assert wc.shape == colour.shape and wc.var() == pytest.approx(0.1)
    assert_allclose(wc.mean(axis=(0, 1)), 0, atol=1e-12)


def test_colour_layout_channel_blocks_column_major():
    # Every value unique: channel c at (i, j) holds 1000 c + 10 i + j.
    i, j = np.meshgrid(np.arange(9), np.arange(10), indexing="ij")
    img = np.stack([1000 * c + 10 * i + j for c in range(3)], axis=2).astype(np.float32)
    source = PatchSource.from_images([img], 3, 0)
    centred, row_sum, _ = source.patches(0, 50)
    which, rows, cols = source.positions(0, 50)
    for k in range(50):
        tile = img[rows[k]:rows[k] + 3, cols[k]:cols[k] + 3].astype(np.float64)
        v = np.concatenate([tile[..., c].reshape(-1, order="F") for c in range(3)])
        assert_allclose(centred[k], v - v.mean())
    assert_allclose(row_sum, 0, atol=1e-9)


def test_folder_grey_and_colour(tmp_path, photo_dir):
    images, names, skipped = folder_images(photo_dir, "rgb", max_side=50)
    assert names == ["a.png", "c.tif", "sub/b.jpg"]
    assert skipped == ["notes.txt"]
    assert images[0].shape == (36, 50, 3)  # 40x56 downscaled to a longer side of 50
    meta = write_patches(tmp_path / "rgb.zarr", images=photo_dir, channels="rgb", size=5,
                         count=500, seed=1, max_side=50)
    data, attrs, _ = _read(tmp_path / "rgb.zarr")
    assert data.shape == (500, 75) and attrs["width"] == 75 and attrs["channels"] == "rgb"
    assert attrs["images"] == names and attrs["skipped"] == ["notes.txt"]
    assert data.min() >= 0.1 and data.max() <= 0.9 and data.dtype == np.float32
    expected, _ = _reference([whiten(im).astype(np.float32) for im in images], 5, 1, 500)
    assert_allclose(data, expected, atol=1e-6)
    assert meta["max_side"] == 50

    write_patches(tmp_path / "g.zarr", images=photo_dir, size=4, count=300, whiten_images=False)
    data, attrs, _ = _read(tmp_path / "g.zarr")
    assert data.shape == (300, 16) and attrs["whiten"] is False and attrs["whitening"] is None


def test_errors(tmp_path, photo_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no readable images in .*empty"):
        write_patches(tmp_path / "x.zarr", images=tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("not really a JPEG")
    with pytest.raises(DataError, match=r"none an image Pillow can read \(a.jpg\)"):
        write_patches(tmp_path / "x.zarr", images=junk)
    with pytest.raises(DataError, match="smaller than the 40x40 patches"):
        write_patches(tmp_path / "x.zarr", images=photo_dir, size=40)
    with pytest.raises(ParameterError, match="at least 2"):
        write_patches(tmp_path / "x.zarr", builtin=True, size=1)
    with pytest.raises(ParameterError, match="exactly one image source"):
        write_patches(tmp_path / "x.zarr")
    write_patches(tmp_path / "x.zarr", builtin=True, count=10)
    with pytest.raises(OutputExistsError, match="already exists"):
        write_patches(tmp_path / "x.zarr", builtin=True, count=10)
    write_patches(tmp_path / "x.zarr", builtin=True, count=20, overwrite=True)
    assert _read(tmp_path / "x.zarr")[0].shape == (20, 64)
    assert not list(tmp_path.glob(".x.zarr*"))  # no temporary left behind


@pytest.mark.parametrize("argv, message", [
    (["--images", "{empty}"], "no readable images"),
    (["--images", "{photos}", "--size", "40"], "smaller than the 40x40 patches"),
    (["--builtin", "--size", "1"], "patch size must be at least 2"),
    (["--builtin", "--count", "5"], "already exists"),
])
def test_cli_errors_are_one_line(tmp_path, photo_dir, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "taken.zarr" if "already exists" in message else tmp_path / "new.zarr"
    if "already exists" in message:
        write_patches(out, builtin=True, count=5)
    argv = [a.format(empty=tmp_path / "empty", photos=photo_dir) for a in argv]
    assert main(["patches", str(out), *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamae: error:") and message in err


def test_cli_writes_store(tmp_path, capsys):
    out = tmp_path / "p.zarr"
    assert main(["patches", str(out), "--builtin", "--count", "1000", "--size", "5",
                 "--no-whiten", "--seed", "4", "--chunk-rows", "300", "--quiet"]) == 0
    assert "wrote 1000 5x5 gray patches" in capsys.readouterr().out
    data, attrs, z = _read(out)
    assert data.shape == (1000, 25) and z.chunks == (300, 25)
    assert attrs["whiten"] is False and attrs["seed"] == 4 and attrs["chunk_rows"] == 300


@pytest.mark.slow
def test_memory_does_not_grow_with_count(tmp_path):
    """Peak memory of `streamae patches` is the same for 0.2 and 3 million patches."""
    import resource
    import subprocess
    import sys

    def peak(count):
        subprocess.run([sys.executable, "-m", "streamae.cli", "patches",
                        str(tmp_path / f"{count}.zarr"), "--builtin", "--count", str(count),
                        "--quiet"], check=True, capture_output=True)
        # Largest resident set of any child so far, in KiB on Linux.
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    small = peak(200_000)
    big = peak(3_000_000)  # 768 MB of float32 patches
    assert big < small + 100, (small, big)


@pytest.mark.parametrize("channels", ["gray", "rgb"])
@pytest.mark.parametrize("whitened", [True, False])
def test_folder_source_is_the_in_memory_one(photo_dir, channels, whitened):
    """from_folder (one image at a time, memory-mapped scratch file) packs
    exactly what from_images packs from the whole list."""
    images, names, skipped = folder_images(photo_dir, channels, max_side=50)
    if whitened:
        images = [whiten(im).astype(np.float32) for im in images]
    ref = PatchSource.from_images(images, 5, 3, names)
    got, got_names, got_skipped = PatchSource.from_folder(photo_dir, 5, 3, channels, 50,
                                                          whitened)
    assert (got_names, got_skipped) == (names, skipped)
    assert_array_equal(got.buffer, ref.buffer)
    for field in ("starts", "heights", "widths"):
        assert_array_equal(getattr(got, field), getattr(ref, field))
    assert got.channels == ref.channels and not got.buffer.flags.writeable
    assert_array_equal(got.patches(0, 300)[0], ref.patches(0, 300)[0])


def test_folder_images_are_packed_one_at_a_time(tmp_path):
    """Python-level peak memory while packing does not grow with the number of
    images (the packed buffer is a memory-mapped file, not heap memory)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    peaks = {}
    for count in (6, 24):
        root = tmp_path / f"n{count}"
        root.mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (200, 200), np.uint8)).save(root / f"{i}.png")
        tracemalloc.start()
        source, names, _ = PatchSource.from_folder(root, 8, 0, "gray", 0, True)
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(names) == count and source.buffer.size == count * 200 * 200
    # Holding the images, 24 would need 18 more images' 160 KB (float32) each.
    assert peaks[24] < peaks[6] + 3 * 200 * 200 * 4, peaks
