"""Hints: each interface in its own words (keywords in Python, flags on the command
line), the right advice for the data at hand, and no folders left by a failed command."""

import os

import numpy as np
import pytest

from streamae import OutputExistsError, SparseAutoencoder, write_patches
from streamae._store import write_array
from streamae.cli import build_parser, in_cli_words, main


def _parser(command):
    return build_parser()._subparsers._group_actions[0].choices[command]


@pytest.mark.parametrize("message, command, expected", [
    ("pass `overwrite=True` to replace it", "train", "pass --overwrite to replace it"),
    ("start over with `overwrite=True` and `resume=False`", "train",
     "start over with --overwrite and without --resume"),
    ("use `size=5` or less, or raise `max_side`", "patches",
     "use --size 5 or less, or raise --max-side"),
    ("use `channels='gray'`", "show", "use --channels gray"),
    ("give `images=DIR` or `builtin=True`", "patches", "give --images DIR or --builtin"),
    ("smaller tasks (`chunk_rows`)", "train", "smaller tasks (--chunk-rows)"),
    ("`storage_options` key=...", "train", "--storage-option key=..."),
    # not an option of the command, or not a keyword: unchanged
    ("give `out` (a local directory)", "patches", "give `out` (a local directory)"),
    ("run `streamae import x.npy x.zarr`", "train", "run `streamae import x.npy x.zarr`"),
])
def test_the_cli_shows_keywords_as_its_flags(message, command, expected):
    assert in_cli_words(message, _parser(command)) == expected


def test_each_interface_in_its_own_words(tmp_path, capsys):
    model = SparseAutoencoder.from_weights(np.zeros((2, 4)), np.zeros(2), np.zeros((4, 2)),
                                           np.zeros(4))
    model.save(tmp_path / "m.zarr")
    with pytest.raises(OutputExistsError) as info:
        model.save(tmp_path / "m.zarr")
    assert "`overwrite=True`" in str(info.value) and "--" not in str(info.value)

    write_array(tmp_path / "x.zarr", np.full((20, 4), 0.5), chunk_rows=10)
    assert main(["train", str(tmp_path / "x.zarr"), "--out", str(tmp_path / "m.zarr"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite to replace it" in err and "overwrite=True" not in err


def test_patches_from_an_empty_folder_says_builtin_in_each_interface(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    with pytest.raises(Exception, match="use `builtin=True`"):
        write_patches(tmp_path / "p.zarr", images=tmp_path / "photos", count=10)
    assert main(["patches", str(tmp_path / "p.zarr"), "--images", str(tmp_path / "photos"),
                 "--count", "10", "--quiet"]) == 2
    assert "or use --builtin for the built-in photographs" in capsys.readouterr().err


def _import(tmp_path, values, *extra, name="src.npy"):
    np.save(tmp_path / name, values)
    out = tmp_path / (name + ".zarr")
    assert main(["import", str(tmp_path / name), str(out), "--quiet", *extra]) == 0
    return out


def test_import_of_floats_out_of_range_suggests_minmax(tmp_path, capsys):
    _import(tmp_path, np.linspace(-1, 3, 40).reshape(10, 4))
    err = capsys.readouterr().err
    assert "--scale minmax (per column) or --scale minmax-all" in err


def test_import_of_integers_suggests_one_scale_for_all(tmp_path, capsys):
    _import(tmp_path, np.arange(40, dtype=np.uint8).reshape(10, 4))
    err = capsys.readouterr().err
    assert "these are integers: import again with --scale minmax-all" in err
    assert "--scale minmax " not in err and "per column" not in err


def test_import_with_scale_from_does_not_suggest_another_scale(tmp_path, capsys):
    train = _import(tmp_path, np.linspace(0, 1, 40).reshape(10, 4), "--scale", "minmax",
                    name="train.npy")
    capsys.readouterr()
    _import(tmp_path, np.linspace(-1, 3, 40).reshape(10, 4), "--scale-from", str(train),
            name="test.npy")
    err = capsys.readouterr().err
    assert f"with the scale recorded in {train}" in err
    assert "--scale minmax" not in err


def _entries(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with a data store and a 64-input model, as the current directory."""
    monkeypatch.chdir(tmp_path)
    write_array("x.zarr", np.random.default_rng(0).uniform(0.1, 0.9, (40, 64)), chunk_rows=10)
    assert main(["train", "x.zarr", "--out", "m.zarr", "--hidden", "2", "--max-iter", "1",
                 "--quiet"]) == 0
    np.save("wide.npy", np.full((10, 65), 0.5))
    return tmp_path


@pytest.mark.parametrize("argv", [
    ["show", "m.zarr", "--patch-shape", "5x5"],
    ["show", "m.zarr", "--patch-shape", "5x5", "--out", "new/deeper/pics"],
    ["show", "m.zarr", "--patch-shape", "8x8", "--channels", "rgb"],
    ["show", "m.zarr", "--patch-shape", "eight", "--out", "pics"],
    ["show", "nope.zarr", "--out", "pics"],
    ["train", "nope.zarr", "--out", "new/model.zarr", "--quiet"],
    ["train", "x.zarr", "--out", "new/model.zarr", "--rho", "2", "--quiet"],
    ["encode", "m.zarr", "x.zarr", "new/h.zarr", "--chunk-rows", "7", "--scheduler", "nope"],
    ["import", "wide.npy", "new/w.zarr", "--scale-from", "nope.zarr", "--quiet"],
    ["import", "nope.npy", "new/w.zarr", "--quiet"],
    ["patches", "new/p.zarr", "--images", "nope", "--quiet"],
    ["patches", "new/p.zarr", "--builtin", "--size", "1", "--quiet"],
])
def test_a_failed_command_leaves_no_new_folder(workdir, argv, capsys):
    before = _entries(workdir)
    assert main(argv) == 2
    assert "streamae: error: " in capsys.readouterr().err
    assert _entries(workdir) == before
    assert not os.path.exists(workdir / "m-pictures")
